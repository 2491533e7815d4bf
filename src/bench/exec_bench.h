#pragma once
// forkd bench exec: the exec and eval round trips of children forked from a warm tag, the way an
// agent uses a sandbox. A throw-away tag (the python image with numpy imported, or minimal) in a
// throw-away FORKD_HOME; each child's first exec and first eval (its first wake-up after the
// restore pays for cold guest code and translation) and then `runs` later ones of each.
// Everything is torn down on every exit path, Ctrl-C (check_interrupted) included.
#include <nlohmann/json.hpp>
#include <string>

#include "base/error.h"
#include "engine/config.h"
#include "engine/image_store.h"

namespace forkd::bench {

struct ExecBenchOptions {
  std::string image = "python";  // eval is measured only on an image with Python
  int children = 3;              // forked one after another, each measured alone
  int runs = 50;                 // later calls of each kind per child
  int memory_mib = 512;
  engine::ProgressFn progress;  // the tag's creation
};

// JSON: bench, image, children, runs, memory_mib, attach_ms, exec_first_ms, exec_ms and (python)
// eval_first_ms, eval_ms summaries; targets (exec_ms, eval_ms p50 targets); host facts.
Result<nlohmann::json> run_exec_bench(engine::EngineConfig cfg, const ExecBenchOptions& o);

// The result as a table on stdout.
void print_exec_bench(const nlohmann::json& r);

}  // namespace forkd::bench

#pragma once
// forkd bench pack: forkd pack/unpack of a tag beside `tar --sparse | zstd -T0` of the same
// files, in one run, with sizes and throughput of the tag's logical size. Runs in a throw-away
// FORKD_HOME, Ctrl-C (check_interrupted) included.
#include <nlohmann/json.hpp>
#include <string>

#include "base/error.h"
#include "engine/config.h"
#include "engine/image_store.h"

namespace forkd::bench {

struct PackBenchOptions {
  std::string tag;  // a tag of the real home; empty: make an idle tag in the bench home
  std::string image = "python";  // of that fresh tag (python: numpy imported)
  int memory_mib = 512;
  int runs = 3;                 // medians are reported
  engine::ProgressFn progress;  // the fresh tag's creation
};

// JSON: tag, runs, logical_bytes, memory_mib, files (bytes by role), and forkd,
// forkd_without_image, tar_zstd (pack_bytes, ratio, pack/unpack ms and MB/s).
Result<nlohmann::json> run_pack_bench(const engine::EngineConfig& real, const PackBenchOptions& o);

// The result as a table on stdout.
void print_pack_bench(const nlohmann::json& j);

}  // namespace forkd::bench

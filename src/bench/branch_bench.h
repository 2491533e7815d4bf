#pragma once
// forkd bench branch: how long BRANCH pauses a running sandbox, per mode, against QEMU's plain
// stop + full save of the same VM, and what each chain link adds to a spawn. Everything runs in a
// throw-away FORKD_HOME (images and the build cache are the real home's, through symlinks) and is
// torn down on every exit path, Ctrl-C (check_interrupted) included.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/config.h"
#include "engine/image_store.h"

namespace forkd::bench {

struct BranchBenchOptions {
  std::string image = "minimal";
  int memory_mib = 256;
  double dirty_mibps = 0;  // a guest writer dirtying this many MiB/s (0: none)
  int runs = 10;           // branches per mode
  std::vector<std::string> modes = {"live", "full"};
  int baseline_runs = 0;        // 0: runs up to 512 MiB, 3 above (each writes the whole RAM)
  int chain_spawns = 10;        // later spawns per chain depth
  engine::ProgressFn progress;  // image builds and the tag's creation
};

// JSON: modes (pause, switchover, resume, copy, total summaries and the series per mode, with
// their ratio to the plain save), plain_save, writer (when asked), chain (spawn by depth),
// fill_mib, host_loadavg, accel.
Result<nlohmann::json> run_branch_bench(engine::EngineConfig cfg, const BranchBenchOptions& o);

// The result as tables on stdout.
void print_branch_bench(const nlohmann::json& r);

}  // namespace forkd::bench

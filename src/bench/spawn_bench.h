#pragma once
// forkd bench spawn: fork N children from a tag of the caller's FORKD_HOME and put the figures
// beside the baselines (cold boot + warm-up of the same image, QEMU's plain restore with RAM in
// the stream) and beside one child forked alone. Every child is removed again.
#include <nlohmann/json.hpp>
#include <string>

#include "base/error.h"
#include "engine/config.h"

namespace forkd::bench {

struct SpawnBenchOptions {
  std::string tag;
  int n = 100;
  int pool = 0;  // pre-start this many QEMUs before timing (0: no pool)
  bool warm = false;
  int parallel = 3;   // children restored at once
  double idle_s = 2;  // children idle this long before their memory is read
  bool baselines = true;
  // The tag of the bare side of the side-by-side single forks (empty: tag): made without a
  // network, it measures the jail, the limits and the NIC together against a plain child.
  std::string compare_tag;
  // Also alternate single children on slirp with children in a namespace of their own.
  bool netns = false;
  // Children's QEMUs mergeable by KSM (as FORKD_KSM=1 makes them); ksmd is started for the run
  // when it is off, and stopped again after.
  bool ksm = false;
  int ksm_pages = 0;  // > 0: ksmd's pages_to_scan for the run (set back after)
};

// JSON: the batch (wall_ms, child_latency_ms, breakdown_ms, uss_mib, pss_mib, ...), the single
// forks (single_child_ms, ...), the baselines and speed-ups when asked, and accel.
Result<nlohmann::json> run_spawn_bench(const engine::EngineConfig& cfg, const SpawnBenchOptions& o);

// The result as a table on stdout.
void print_spawn_bench(const nlohmann::json& r);

}  // namespace forkd::bench

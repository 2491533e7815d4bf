#pragma once
// forkd bench boot: cold boot to the agent's first answer, and the exec round trip, per machine
// type, in the caller's FORKD_HOME (each VM is destroyed after its run).
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/config.h"
#include "engine/image_store.h"

namespace forkd::bench {

struct BootBenchOptions {
  std::string image = "minimal";
  int runs = 5;    // boots per machine type
  int execs = 10;  // `true` round trips per boot
  int memory_mib = 256;
  std::vector<std::string> machines;  // "microvm", "pc"; empty: cfg's machine
  engine::ProgressFn progress;        // image builds
};

// Builds the image if needed (untimed), then boots. JSON: bench, image, runs, execs_per_run,
// memory_mib, accel, and per machine launch_ms, boot_to_ping_ms, exec_rtt_ms summaries.
Result<nlohmann::json> run_boot_bench(const engine::EngineConfig& cfg, const BootBenchOptions& o);

// The result as a table on stdout.
void print_boot_bench(const nlohmann::json& r);

}  // namespace forkd::bench

#include "bench/boot_bench.h"

#include <chrono>
#include <cstdio>

#include "bench/stats.h"
#include "engine/sandbox.h"
#include "vmm/accel.h"

namespace forkd::bench {

namespace {

using Clock = std::chrono::steady_clock;

Result<nlohmann::json> bench_machine(engine::EngineConfig cfg, const BootBenchOptions& o,
                                     vmm::MachineType machine) {
  cfg.machine = machine;
  std::vector<double> launch, to_ping, rtt;
  for (int i = 0; i < o.runs; ++i) {
    engine::BootOptions bo;
    bo.image = o.image;
    bo.memory_mib = o.memory_mib;
    bo.progress = o.progress;
    auto sb = engine::Sandbox::boot(cfg, bo);
    if (!sb) return tl::unexpected(sb.error());
    launch.push_back((*sb)->timings().launch_ms);
    to_ping.push_back((*sb)->timings().agent_ms);
    engine::ExecOptions eo;
    eo.argv = {"true"};
    for (int j = 0; j < o.execs; ++j) {
      auto t = Clock::now();
      auto r = (*sb)->exec(eo);
      if (!r) return tl::unexpected(r.error());
      rtt.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t).count());
    }
    (*sb)->destroy();
    std::fprintf(stderr, "forkd: bench %s run %d/%d: boot to ping %.0f ms\n",
                 std::string(vmm::machine_name(machine)).c_str(), i + 1, o.runs, to_ping.back());
  }
  return nlohmann::json{{"machine", vmm::machine_name(machine)},
                        {"launch_ms", summarize(launch).to_json()},
                        {"boot_to_ping_ms", summarize(to_ping).to_json()},
                        {"exec_rtt_ms", summarize(rtt).to_json()}};
}

}  // namespace

Result<nlohmann::json> run_boot_bench(const engine::EngineConfig& cfg, const BootBenchOptions& o) {
  auto accel = vmm::choose_accel(cfg.accel);
  if (!accel) return tl::unexpected(accel.error());
  // Build the image (if needed) before anything is timed.
  engine::ImageStore store(cfg.home, cfg.assets, cfg.agent);
  if (auto img = store.get(o.image, o.progress); !img) return tl::unexpected(img.error());
  std::vector<vmm::MachineType> machines;
  for (const auto& m : o.machines) {
    machines.push_back(m == "pc" ? vmm::MachineType::kPc : vmm::MachineType::kMicrovm);
  }
  if (machines.empty()) machines.push_back(cfg.machine);
  nlohmann::json results = nlohmann::json::array();
  for (auto m : machines) {
    auto r = bench_machine(cfg, o, m);
    if (!r) return tl::unexpected(r.error());
    results.push_back(*r);
  }
  return nlohmann::json{{"bench", "boot"},
                        {"image", o.image},
                        {"runs", o.runs},
                        {"execs_per_run", o.execs},
                        {"memory_mib", o.memory_mib},
                        {"accel", vmm::accel_name(accel->accel)},
                        {"results", results}};
}

void print_boot_bench(const nlohmann::json& r) {
  std::printf("cold boot of image %s (%d runs, %s), times in ms\n",
              r["image"].get<std::string>().c_str(), r["runs"].get<int>(),
              r["accel"].get<std::string>().c_str());
  std::printf("%-8s %-16s %8s %8s %8s\n", "machine", "what", "min", "median", "max");
  for (const auto& m : r["results"]) {
    for (const char* k : {"launch_ms", "boot_to_ping_ms", "exec_rtt_ms"}) {
      const auto& s = m[k];
      std::printf("%-8s %-16s %8.1f %8.1f %8.1f\n", m["machine"].get<std::string>().c_str(), k,
                  s["min"].get<double>(), s["median"].get<double>(), s["max"].get<double>());
    }
  }
}

}  // namespace forkd::bench

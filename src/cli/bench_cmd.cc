// forkd bench boot: cold boot to first ping, and the exec round trip, per machine type.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/output.h"
#include "cli/stats.h"
#include "engine/sandbox.h"
#include "vmm/accel.h"

namespace forkd::cli {

namespace {

using Clock = std::chrono::steady_clock;

struct BenchArgs {
  std::string image = "minimal";
  int runs = 5;
  int execs = 10;
  int memory_mib = 256;
  std::vector<std::string> machines;
  bool json = false;
};

Result<nlohmann::json> bench_machine(engine::EngineConfig cfg, const BenchArgs& a,
                                     vmm::MachineType machine) {
  cfg.machine = machine;
  std::vector<double> launch, to_ping, rtt;
  for (int i = 0; i < a.runs; ++i) {
    engine::BootOptions bo;
    bo.image = a.image;
    bo.memory_mib = a.memory_mib;
    bo.progress = stderr_progress();
    auto sb = engine::Sandbox::boot(cfg, bo);
    if (!sb) return tl::unexpected(sb.error());
    launch.push_back((*sb)->timings().launch_ms);
    to_ping.push_back((*sb)->timings().agent_ms);
    engine::ExecOptions eo;
    eo.argv = {"true"};
    for (int j = 0; j < a.execs; ++j) {
      auto t = Clock::now();
      auto r = (*sb)->exec(eo);
      if (!r) return tl::unexpected(r.error());
      rtt.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t).count());
    }
    (*sb)->destroy();
    std::fprintf(stderr, "forkd: bench %s run %d/%d: boot to ping %.0f ms\n",
                 std::string(vmm::machine_name(machine)).c_str(), i + 1, a.runs, to_ping.back());
  }
  return nlohmann::json{{"machine", vmm::machine_name(machine)},
                        {"launch_ms", summarize(launch).to_json()},
                        {"boot_to_ping_ms", summarize(to_ping).to_json()},
                        {"exec_rtt_ms", summarize(rtt).to_json()}};
}

int do_bench_boot(const GlobalOptions& g, const BenchArgs& a) {
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  auto accel = vmm::choose_accel(cfg->accel);
  if (!accel) return report_error(accel.error());
  // Build the image (if needed) before anything is timed.
  engine::ImageStore store(cfg->home, cfg->assets, cfg->agent);
  if (auto img = store.get(a.image, stderr_progress()); !img) return report_error(img.error());
  std::vector<vmm::MachineType> machines;
  for (const auto& m : a.machines) {
    machines.push_back(m == "pc" ? vmm::MachineType::kPc : vmm::MachineType::kMicrovm);
  }
  if (machines.empty()) machines.push_back(cfg->machine);
  nlohmann::json results = nlohmann::json::array();
  for (auto m : machines) {
    auto r = bench_machine(*cfg, a, m);
    if (!r) return report_error(r.error());
    results.push_back(*r);
  }
  nlohmann::json out = {{"bench", "boot"},
                        {"image", a.image},
                        {"runs", a.runs},
                        {"execs_per_run", a.execs},
                        {"memory_mib", a.memory_mib},
                        {"accel", vmm::accel_name(accel->accel)},
                        {"results", results}};
  if (a.json) {
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("cold boot of image %s (%d runs, %s), times in ms\n", a.image.c_str(), a.runs,
              std::string(vmm::accel_name(accel->accel)).c_str());
  std::printf("%-8s %-16s %8s %8s %8s\n", "machine", "what", "min", "median", "max");
  for (const auto& r : results) {
    for (const char* k : {"launch_ms", "boot_to_ping_ms", "exec_rtt_ms"}) {
      const auto& s = r[k];
      std::printf("%-8s %-16s %8.1f %8.1f %8.1f\n", r["machine"].get<std::string>().c_str(), k,
                  s["min"].get<double>(), s["median"].get<double>(), s["max"].get<double>());
    }
  }
  return 0;
}

}  // namespace

void register_bench(CLI::App& app, GlobalOptions& g, Action& action) {
  auto* bench = app.add_subcommand("bench", "Benchmarks that print figures");
  bench->require_subcommand(1);
  auto a = std::make_shared<BenchArgs>();
  auto* boot = bench->add_subcommand("boot", "Cold boot to first ping, and exec round trip");
  boot->add_option("--image", a->image, "minimal or python")->capture_default_str();
  boot->add_option("--runs", a->runs, "Boots per machine type")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  boot->add_option("--execs", a->execs, "Exec round trips per boot")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  boot->add_option("--memory", a->memory_mib, "Guest memory in MiB")->check(CLI::Range(64, 65536));
  boot->add_option("--machines", a->machines, "Machine types to compare (microvm, pc)")
      ->check(CLI::IsMember({"microvm", "pc"}))
      ->delimiter(',');
  boot->add_flag("--json", a->json, "Machine-readable output");
  boot->callback([&action, &g, a] { action = [&g, a] { return do_bench_boot(g, *a); }; });
  add_bench_spawn(*bench, g, action);
  add_bench_api(*bench, g, action);
  add_bench_branch(*bench, g, action);
  add_bench_pack(*bench, g, action);
}

}  // namespace forkd::cli

#include "cli/bench_common.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "vmm/accel.h"

namespace forkd::cli {

namespace {

// Set by Ctrl-C/SIGTERM (on main's signal thread).
std::atomic<bool> g_interrupted{false};
void on_signal(int) { g_interrupted = true; }

Status make_link(const std::string& target, const std::string& at) {
  if (::symlink(target.c_str(), at.c_str()) != 0) return errno_error(errno, "symlink " + at);
  return {};
}

}  // namespace

Result<TempDir> make_bench_home(const engine::EngineConfig& real, const std::string& prefix) {
  auto home = TempDir::create(prefix);
  if (!home) return tl::unexpected(home.error());
  FORKD_TRY(make_dirs(real.home + "/images"));
  FORKD_TRY(make_dirs(real.home + "/cache"));
  FORKD_TRY(make_dirs(home->path() + "/cache"));
  FORKD_TRY(make_link(real.home + "/images", home->path() + "/images"));
  for (const auto& name : list_dir_names(real.home + "/cache")) {
    if (name == "assembled") continue;
    FORKD_TRY(make_link(real.home + "/cache/" + name, home->path() + "/cache/" + name));
  }
  return home;
}

void add_host_facts(nlohmann::json& out, const engine::EngineConfig& cfg) {
  if (auto load = read_file("/proc/loadavg", 256); load) {
    out["host_loadavg"] = load->substr(0, load->find(' ', load->find(' ') + 1));
  }
  auto accel = vmm::choose_accel(cfg.accel);
  out["accel"] = accel ? std::string(vmm::accel_name(accel->accel)) : "unknown";
}

Status check_interrupted() {
  if (g_interrupted) return make_error(ErrorCode::kCancelled, "interrupted");
  return {};
}

int run_bench_verb(const GlobalOptions& g, const std::string& name, bool json,
                   const std::function<Result<nlohmann::json>(const engine::EngineConfig&)>& run,
                   const std::function<void(const nlohmann::json&)>& print_human) {
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  g_interrupted = false;
  set_signal_hook(&on_signal);
  auto r = run(*cfg);
  set_signal_hook(nullptr);
  if (!r) {
    if (g_interrupted) {
      std::fprintf(stderr, "forkd: bench %s: interrupted, cleaned up\n", name.c_str());
      return kExitInterrupted;
    }
    return report_error(r.error());
  }
  if (json) {
    print_json(*r);
  } else {
    print_human(*r);
  }
  return 0;
}

}  // namespace forkd::cli

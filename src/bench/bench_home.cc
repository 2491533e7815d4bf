#include "bench/bench_home.h"

#include <unistd.h>

#include <atomic>

#include "vmm/accel.h"

namespace forkd::bench {

namespace {

std::atomic<bool> g_interrupted{false};

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

Result<engine::ForkChild> fork_one(const engine::EngineConfig& cfg, const std::string& tag) {
  engine::ForkOptions fo;
  fo.tag = tag;
  fo.use_pool = false;
  auto forked = engine::fork_children(cfg, fo);
  if (!forked) return tl::unexpected(forked.error());
  if (forked->children.size() != 1) {
    return make_error(ErrorCode::kInternal, "fork of 1 from " + tag + " returned no child");
  }
  return std::move(forked->children.front());
}

std::string accel_label(const engine::EngineConfig& cfg) {
  auto accel = vmm::choose_accel(cfg.accel);
  return accel ? std::string(vmm::accel_name(accel->accel)) : "unknown";
}

void add_host_facts(nlohmann::json& out, const engine::EngineConfig& cfg) {
  if (auto load = read_file("/proc/loadavg", 256); load) {
    out["host_loadavg"] = load->substr(0, load->find(' ', load->find(' ') + 1));
  }
  out["accel"] = accel_label(cfg);
}

void interrupt() { g_interrupted = true; }
void clear_interrupt() { g_interrupted = false; }
bool interrupted() { return g_interrupted; }

Status check_interrupted() {
  if (g_interrupted) return make_error(ErrorCode::kCancelled, "interrupted");
  return {};
}

}  // namespace forkd::bench

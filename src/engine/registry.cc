#include "engine/registry.h"

#include <dirent.h>
#include <signal.h>

#include <algorithm>
#include <sstream>
#include <thread>

#include "base/files.h"
#include "base/json_get.h"
#include "base/paths.h"
#include "engine/sandbox_jail.h"
#include "vmm/qmp_client.h"
#include "vmm/vm_process.h"

namespace forkd::engine {

using Json = nlohmann::json;

namespace {
constexpr const char* kUnresponsiveFile = "/unresponsive";
}  // namespace

void mark_unresponsive(const std::string& run_dir, const std::string& why) {
  (void)write_file_atomic(run_dir + kUnresponsiveFile, why.substr(0, 1024) + "\n", 0600);
}

void clear_unresponsive(const std::string& run_dir) {
  ::unlink((run_dir + kUnresponsiveFile).c_str());
}

bool marked_unresponsive(const std::string& run_dir) {
  return path_exists(run_dir + kUnresponsiveFile);
}

bool cmdline_names_dir(std::string_view cmdline, const std::string& dir) {
  const std::string needle = dir + "/";
  for (size_t at = cmdline.find(needle); at != std::string_view::npos;
       at = cmdline.find(needle, at + 1)) {
    // Where an argument or an option's value starts (path=..., a,b lists), not the tail of some
    // longer path such as /other/root<dir>/.
    char before = at == 0 ? '\0' : cmdline[at - 1];
    if (before == '\0' || before == '=' || before == ',' || before == ':') return true;
  }
  return false;
}

bool qemu_owns_dir(int pid, const std::string& run_dir) {
  if (pid <= 1) return false;
  auto cmd = read_file("/proc/" + std::to_string(pid) + "/cmdline", 1 << 20);
  return cmd && cmdline_names_dir(*cmd, run_dir);
}

Result<ProcMemory> process_memory(int pid) {
  auto text = read_file("/proc/" + std::to_string(pid) + "/smaps_rollup", 1 << 16);
  if (!text) return tl::unexpected(text.error());
  ProcMemory m;
  std::istringstream in(*text);
  std::string line;
  uint64_t priv_clean = 0, priv_dirty = 0;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string key;
    uint64_t kib = 0;
    ls >> key >> kib;
    if (key == "Rss:") m.rss_kib = kib;
    if (key == "Pss:") m.pss_kib = kib;
    if (key == "Private_Clean:") priv_clean = kib;
    if (key == "Private_Dirty:") priv_dirty = kib;
  }
  m.uss_kib = priv_clean + priv_dirty;
  return m;
}

std::vector<SandboxInfo> list_sandboxes(const EngineConfig& cfg) {
  std::vector<SandboxInfo> out;
  DIR* d = ::opendir(cfg.sandboxes_dir().c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    std::string id = e->d_name;
    if (!is_safe_name(id)) continue;
    std::string dir = cfg.sandboxes_dir() + "/" + id;
    auto text = read_file(dir + "/sandbox.json", 1 << 20);
    if (!text) continue;  // a pool member or a sandbox still starting
    Json rec = json::parse_untrusted(*text);
    if (rec.is_discarded() || !rec.is_object()) continue;
    SandboxInfo info;
    info.id = id;
    info.record = rec;
    info.pid = json::int_or(rec, "pid", 0);
    info.state = qemu_owns_dir(info.pid, dir) ? "running" : "exited";
    if (info.state == "exited" && oom_kills(dir) > 0) {
      // The kernel killed its QEMU for going over the sandbox's memory limit.
      info.state = "failed";
      info.failure_reason = "oom";
    }
    if (info.state == "running") {
      if (auto why = read_file(dir + kUnresponsiveFile, 4096)) {
        info.state = "unresponsive";
        info.unresponsive_reason = *why;
        while (!info.unresponsive_reason.empty() && info.unresponsive_reason.back() == '\n') {
          info.unresponsive_reason.pop_back();
        }
      }
      if (auto mem = process_memory(info.pid)) {
        info.uss_kib = mem->uss_kib;
        info.pss_kib = mem->pss_kib;
        info.rss_kib = mem->rss_kib;
      }
    }
    out.push_back(std::move(info));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(), [](const SandboxInfo& a, const SandboxInfo& b) {
    int64_t ta = json::int_or(a.record, "created_at", int64_t{0});
    int64_t tb = json::int_or(b.record, "created_at", int64_t{0});
    return ta != tb ? ta < tb : a.id < b.id;
  });
  return out;
}

Status remove_sandbox(const EngineConfig& cfg, const std::string& id) {
  if (!is_safe_name(id)) {
    return make_error(ErrorCode::kInvalidArgument, "invalid sandbox id '" + id + "'");
  }
  std::string dir = cfg.sandboxes_dir() + "/" + id;
  if (!path_exists(dir + "/sandbox.json")) {
    return make_error(ErrorCode::kNotFound, "no sandbox " + id + " (see forkd ps)");
  }
  auto text = read_file(dir + "/sandbox.json", 1 << 20);
  Json rec = text ? json::parse_untrusted(*text) : Json();
  int pid = json::int_or(rec, "pid", 0);
  if (qemu_owns_dir(pid, dir)) {
    auto vm = vmm::VmProcess::adopt(pid);
    if (vm) {
      auto qmp = vmm::QmpClient::connect(dir + "/qmp.sock", std::chrono::milliseconds(300));
      if (qmp) (void)qmp->execute("quit", vmm::Json::object(), std::chrono::milliseconds(1000));
      if (!vm->wait_exit(std::chrono::milliseconds(1500))) {
        vm->terminate(std::chrono::milliseconds(1000));
      }
    }
  }
  return remove_run_dir(dir);
}

std::vector<std::string> resume_stopped_sandboxes(const EngineConfig& cfg) {
  std::vector<std::string> resumed;
  for (const auto& s : list_sandboxes(cfg)) {
    if (!s.alive()) continue;
    auto qmp = vmm::QmpClient::connect(cfg.sandboxes_dir() + "/" + s.id + "/qmp.sock",
                                       std::chrono::seconds(2));
    if (!qmp) continue;
    auto st = qmp->execute("query-status");
    if (!st || json::bool_or(*st, "running", true)) continue;
    auto mig = qmp->execute("query-migrate");
    if (mig && json::string_or(*mig, "status", "") == "active") {
      (void)qmp->execute("migrate_cancel");
    }
    // `cont` is refused while a cancelled migration winds down: retry briefly.
    for (int i = 0; i < 100; ++i) {
      if (qmp->execute("cont")) {
        resumed.push_back(s.id);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  return resumed;
}

}  // namespace forkd::engine

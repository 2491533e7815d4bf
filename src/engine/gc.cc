#include "engine/gc.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "base/dir_lock.h"
#include "base/files.h"
#include "base/log.h"
#include "base/paths.h"
#include "base/proc_stat.h"
#include "engine/code_window.h"
#include "engine/image_store.h"
#include "engine/overlay_template.h"
#include "engine/pool.h"
#include "engine/registry.h"
#include "engine/sandbox_jail.h"
#include "store/snapshot_store.h"
#include "vmm/cpu_lift.h"
#include "vmm/jail.h"
#include "vmm/netns.h"
#include "vmm/qmp_client.h"
#include "vmm/vm_process.h"

namespace forkd::engine {

std::vector<int> qemu_pids_in(const std::string& dir) {
  std::vector<int> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    int pid = std::atoi(e->d_name);
    if (pid <= 1) continue;
    auto cmd = read_file("/proc/" + std::string(e->d_name) + "/cmdline", 1 << 20);
    if (!cmd || cmd->empty()) continue;
    // argv[0] is the QEMU binary; the run dir appears in its socket and pid file options.
    std::string argv0 = cmd->substr(0, cmd->find('\0'));
    if (argv0.find("qemu-system") == std::string::npos) continue;
    if (cmdline_names_dir(*cmd, dir)) out.push_back(pid);
  }
  ::closedir(d);
  return out;
}

void kill_and_wait(const std::vector<int>& pids) {
  std::vector<vmm::VmProcess> procs;
  for (int pid : pids) {
    if (auto p = vmm::VmProcess::adopt(pid)) {
      procs.push_back(std::move(*p));
    }
  }
  // All at once, then wait for all: N sandboxes cost one exit time, not N.
  for (auto& p : procs) p.signal(SIGKILL);
  for (auto& p : procs) (void)p.wait_exit(std::chrono::seconds(5));
}

int kill_qemus_in(const std::string& dir) {
  auto pids = qemu_pids_in(dir);
  kill_and_wait(pids);
  return static_cast<int>(pids.size());
}

namespace {

// A run dir that neither a record nor a pool member owns: its launcher died, or has not
// recorded it yet. Members are read afresh on every call: a filler may have just recorded one.
bool unowned_run_dir(const EngineConfig& cfg, const std::string& id) {
  return is_safe_name(id) && !path_exists(cfg.sandboxes_dir() + "/" + id + "/sandbox.json") &&
         !Pool(cfg).member_ids().count(id);
}

}  // namespace

int kill_unrecorded_children(const EngineConfig& cfg) {
  std::vector<int> doomed;
  const pid_t me = ::getpid();
  for (const auto& name : list_dir_names(cfg.sandboxes_dir())) {
    if (!unowned_run_dir(cfg, name)) continue;
    for (int pid : qemu_pids_in(cfg.sandboxes_dir() + "/" + name)) {
      // Only our own children: another process may be launching this one.
      auto stat = read_proc_stat(pid);
      if (stat && stat->ppid == me) doomed.push_back(pid);
    }
  }
  kill_and_wait(doomed);
  return static_cast<int>(doomed.size());
}

RemoveAllReport remove_all_sandboxes(const EngineConfig& cfg) {
  RemoveAllReport r;
  auto list = list_sandboxes(cfg);
  // Quit every live one first, then wait for all: the exits overlap.
  std::vector<std::pair<std::string, vmm::VmProcess>> live;
  for (const auto& s : list) {
    std::string dir = cfg.sandboxes_dir() + "/" + s.id;
    if (!s.alive()) continue;
    auto vm = vmm::VmProcess::adopt(s.pid);
    if (!vm) continue;
    auto qmp = vmm::QmpClient::connect(dir + "/qmp.sock", std::chrono::milliseconds(300));
    if (qmp) (void)qmp->execute("quit", vmm::Json::object(), std::chrono::milliseconds(500));
    live.emplace_back(s.id, std::move(*vm));
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  for (auto& [id, vm] : live) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (!vm.wait_exit(std::max(left, std::chrono::milliseconds(0)))) vm.signal(SIGKILL);
  }
  for (auto& [id, vm] : live) (void)vm.wait_exit(std::chrono::seconds(5));
  for (const auto& s : list) {
    if (auto st = remove_sandbox(cfg, s.id); st) {
      r.removed.push_back(s.id);
    } else if (st.error().code() != ErrorCode::kNotFound) {
      r.failed.emplace_back(s.id, st.error());
    }
  }
  r.pool_members = Pool(cfg).drain("");
  // Whatever still runs under this home's run dirs: being started right now, or an orphan.
  auto rest = qemu_pids_in(cfg.sandboxes_dir());
  kill_and_wait(rest);
  r.other_qemus = static_cast<int>(rest.size());
  (void)gc(cfg);  // their run dirs, once their launchers let go
  return r;
}

namespace {

// Blobs a cut pull left for its resume (hub/oci_tag.h), untouched for max_age: removed, unless
// a pull holds one (its flock).
int sweep_pull_blobs(const std::string& dir, std::chrono::hours max_age) {
  int n = 0;
  auto now = std::chrono::system_clock::now();
  for (const auto& name : list_dir_names(dir)) {
    std::string path = dir + "/" + name;
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (now - std::chrono::system_clock::from_time_t(st.st_mtime) < max_age) continue;
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd || ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;
    if (::unlink(path.c_str()) == 0) n++;
  }
  return n;
}

}  // namespace

namespace {

// Threads of sandboxes' QEMUs that a branch lifted into the pause's CPU cgroup and never put
// back (its forkd died mid-copy): they would stay outside the sandbox's CPU limit. Only for a
// sandbox with no branch in flight (its branch lock is free).
int return_lifted_threads(const EngineConfig& cfg) {
  vmm::CpuLift lift(vmm::host_jail().cgroups, kPauseCgroup);
  std::vector<SandboxInfo> sandboxes;
  bool listed = false;
  return lift.return_leftovers([&](pid_t process) {
    if (!listed) {
      sandboxes = list_sandboxes(cfg);
      listed = true;
    }
    for (const auto& s : sandboxes) {
      if (!s.alive() || s.pid != process) continue;
      const std::string dir = cfg.sandboxes_dir() + "/" + s.id;
      return qemu_owns_dir(process, dir) && !FileLock::held(dir + "/.branch.lock");
    }
    return false;
  });
}

}  // namespace

GcReport gc(const EngineConfig& cfg) {
  GcReport r;
  // Records whose QEMU is gone.
  for (const auto& s : list_sandboxes(cfg)) {
    // A sandbox the kernel killed (oom) stays listed `failed` until it is deleted.
    if (s.alive() || s.state == "failed") continue;
    if (remove_sandbox(cfg, s.id)) r.dead_sandboxes.push_back(s.id);
  }
  // Pool members whose QEMU died: their member files go (and their run dirs below).
  r.pool_members = Pool(cfg).prune();
  // Run dirs nobody holds and nothing records: a launcher died between starting QEMU and
  // writing the record (or the record's QEMU was removed by hand).
  // Asked again once the dir is locked (the owner may have recorded it and let go in between).
  auto unowned = [&](const std::string& id) { return unowned_run_dir(cfg, id); };
  auto killed = [&r](const std::string& dir) { r.orphan_qemus += kill_qemus_in(dir); };
  for (auto& name : reap_dirs(cfg.sandboxes_dir(), unowned, killed)) {
    r.orphan_dirs.push_back("sandboxes/" + name);
  }
  // Branch destinations of branches that died.
  for (auto& name : reap_dirs(
           cfg.home + "/branching", [](const std::string&) { return true; }, killed)) {
    r.orphan_dirs.push_back("branching/" + name);
  }
  // Work dirs of image imports and recipe builds that died (image_cmd.cc: layers, trees).
  auto image_work = [](const std::string& name) {
    return name.rfind("import-", 0) == 0 || name.rfind("build-", 0) == 0;
  };
  for (auto& name : reap_dirs(cfg.home + "/cache", image_work)) {
    r.orphan_dirs.push_back("cache/" + name);
  }
  for (auto& name : ImageStore(cfg.home, cfg.assets, cfg.agent).sweep_leftovers()) {
    r.orphan_dirs.push_back(std::move(name));
  }
  // Disk overlay templates of tags that are gone or were replaced.
  for (auto& name : sweep_overlay_templates(cfg)) r.orphan_dirs.push_back(std::move(name));
  for (auto& name : sweep_code_windows(cfg)) r.orphan_dirs.push_back(std::move(name));
  r.snapshot_leftovers = store::SnapshotStore(cfg.home).cleanup_stale();
  // cgroups of run dirs removed above, or of a forkd killed mid-launch.
  r.cgroups =
      vmm::sweep_stale_leaves(vmm::host_jail().cgroups, kCgroupParent, std::chrono::seconds(120));
  r.lifted_threads = return_lifted_threads(cfg);
  // Namespaces of children whose launcher died mid-launch, or whose run dir went above.
  if (::geteuid() == 0) r.netns = vmm::sweep_stale_netns(std::chrono::seconds(120));
  r.pull_blobs = sweep_pull_blobs(cfg.home + "/cache/oci/blobs", std::chrono::hours(24));
  if (!r.dead_sandboxes.empty() || !r.orphan_dirs.empty() || r.orphan_qemus > 0 ||
      r.snapshot_leftovers > 0 || r.pool_members > 0 || r.cgroups > 0 || r.netns > 0 ||
      r.lifted_threads > 0) {
    logger("gc")->info(
        "event=gc dead_sandboxes={} orphan_dirs={} orphan_qemus={} snapshot_leftovers={} "
        "pool_members={} cgroups={} netns={} lifted_threads={}",
        r.dead_sandboxes.size(), r.orphan_dirs.size(), r.orphan_qemus, r.snapshot_leftovers,
        r.pool_members, r.cgroups, r.netns, r.lifted_threads);
  }
  return r;
}

}  // namespace forkd::engine

#include "engine/branch_migrate.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <future>
#include <optional>
#include <system_error>
#include <thread>

#include "base/clock.h"
#include "base/dir_lock.h"
#include "base/files.h"
#include "base/json_get.h"
#include "base/log.h"
#include "base/prefault.h"
#include "base/subprocess.h"
#include "engine/branch_receive.h"
#include "engine/branch_source.h"
#include "engine/gc.h"
#include "engine/migration.h"
#include "engine/sandbox_jail.h"
#include "engine/vm_setup.h"
#include "vmm/accel.h"
#include "vmm/jail.h"
#include "vmm/qmp_client.h"
#include "vmm/vm_process.h"

namespace forkd::engine {

namespace {

using Clock = std::chrono::steady_clock;
using vmm::Json;
using vmm::QmpClient;

// Runs fn on a thread of its own (inline when none can start).
std::future<Status> start_task(const std::function<Status()>& fn) {
  auto guarded = [fn]() -> Status {
    try {
      return fn();
    } catch (const std::exception& e) {
      return make_error(ErrorCode::kInternal, std::string("branch memory step: ") + e.what());
    }
  };
  try {
    return std::async(std::launch::async, guarded);
  } catch (const std::system_error&) {
    std::promise<Status> done;
    done.set_value(guarded());
    return done.get_future();
  }
}

// A full branch (source stopped) of QEMU 9.0+ copies over multifd channels: its pages go out on
// two threads (one per core here) instead of one, which halves the pause (1 GiB: 0.41-0.50 s
// against 0.75-1.0 s; 256 MiB: 0.14-0.16 s against 0.21-0.32 s, side by side). A live branch
// stays on one channel: there multifd gained nothing (1 GiB with a 20 MiB/s writer: ready in
// 3.95 s against 3.9-4.2 s) or lost (256 MiB idle: 1.04 s against 0.86-0.94 s), measured side by
// side; nor did it when forkd read the channels itself (bench/results/README.md, "Three more
// tries"): the two send threads together took as long as one, cores to spare.
// FORKD_BRANCH_MULTIFD=0 turns it off.
bool use_multifd(BranchMode mode) {
  const char* env = std::getenv("FORKD_BRANCH_MULTIFD");
  if (env != nullptr && std::string(env) == "0") return false;
  return mode == BranchMode::kFull && vmm::version_at_least(vmm::host_jail().qemu_version, 9, 0);
}
constexpr int kPreallocThreads = 2;  // one per core here

// The destination listens for the multifd copy on a unix socket that only the source may
// connect to. A jailed destination cannot create files in its root-owned run dir: it binds in
// a directory of its own, and the socket is then moved into the run dir (which every jailed
// QEMU may traverse) and handed to the source's uid, mode 0600. Returns the socket's path.
Result<std::string> listen_for_source(QmpClient& dst, const std::string& dest_dir,
                                      const std::optional<vmm::JailIdentity>& dest_id,
                                      const std::string& source_dir) {
  const std::string own_dir = dest_dir + "/in";
  FORKD_TRY(make_dirs(own_dir, 0700));
  if (dest_id && ::chown(own_dir.c_str(), dest_id->uid, dest_id->gid) != 0) {
    return errno_error(errno, "chown " + own_dir);
  }
  const std::string bound = own_dir + "/s";
  if (auto r = dst.execute("migrate-incoming", Json{{"uri", "unix:" + bound}}); !r) {
    return tl::unexpected(r.error().wrap("destination migrate-incoming"));
  }
  const std::string sock = dest_dir + "/migrate.sock";
  if (::rename(bound.c_str(), sock.c_str()) != 0) return errno_error(errno, "move " + bound);
  struct stat st {};
  if (::lstat(sock.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) {
    return make_error(ErrorCode::kQemuFailed, "the destination's migration socket is not one");
  }
  // The source QEMU's identity: its pid file is handed to it at launch (vmm::give_file).
  struct stat src {};
  const std::string pid_file = source_dir + "/qemu.pid";
  if (::lstat(pid_file.c_str(), &src) != 0) return errno_error(errno, "stat " + pid_file);
  if (::lchown(sock.c_str(), src.st_uid, src.st_gid) != 0 ||
      ::fchmodat(AT_FDCWD, sock.c_str(), 0600, 0) != 0) {
    return errno_error(errno, "hand " + sock + " to the source");
  }
  return sock;
}

// The destination's run dir: $FORKD_HOME/branching/<hex>, short enough for its sockets, locked
// while this branch runs. Dirs whose branch died (kill -9 mid-branch) are unlocked, and the next
// branch (or gc) removes them, killing a destination QEMU still running there.
Result<LockedDir> make_dest_dir(const EngineConfig& cfg) {
  std::string root = cfg.home + "/branching";
  (void)reap_dirs(
      root, [](const std::string&) { return true; }, kill_qemus_in);
  return LockedDir::create(root, random_hex(6));
}

}  // namespace

Result<MigrateResult> migrate_to_template(const EngineConfig& cfg, const MigrateRequest& req) {
  auto conn = connect_source(req);
  if (!conn) return tl::unexpected(conn.error());
  QmpClient* src = &conn->qmp;
  const uint64_t ram_bytes = conn->ram_bytes;  // the destination must match it byte for byte
  auto accel = vmm::choose_accel(cfg.accel);
  if (!accel) return tl::unexpected(accel.error());
  const BranchMode mode = usable_mode(req.mode, accel->accel == vmm::Accel::kTcg, ram_bytes);
  if (mode == BranchMode::kLive && !req.link_parent_memory.empty()) {
    return receive_link(req, conn->qmp, ram_bytes);
  }
  auto t_start = Clock::now();
  // Before anything stops: a full disk fails here, with the source untouched.
  FORKD_TRY(preallocate_file(req.memory_file, ram_bytes));
  auto disk = query_disk(*src, req.source_dir);
  if (!disk) return tl::unexpected(disk.error());

  auto dest_lock = make_dest_dir(cfg);
  if (!dest_lock) return tl::unexpected(dest_lock.error());
  const std::string* dest_dir = &dest_lock->path();  // removed with dest_lock
  auto vc = base_vm_config(cfg, "branch", *dest_dir);
  if (!vc) return tl::unexpected(vc.error());
  vc->machine = req.machine == "pc" ? vmm::MachineType::kPc : vmm::MachineType::kMicrovm;
  vc->bios = vmm::default_bios(vc->machine);
  vc->cpus = req.cpus;
  vc->memory_mib = req.memory_mib;
  vc->ram_bytes = ram_bytes;
  vc->memory_file = req.memory_file;
  vc->memory_share = true;  // the destination writes the tag's memory file
  // Its whole memory file is not flushed by QEMU when the copy ends (the caller flushes what must
  // be durable). Measured, 1 GiB with a 20 MiB/s writer, 10 live branches twice each way,
  // alternating: the destination's last steps 99 and 129 ms p50 against 872 and 787 ms; the link
  // step 1.06-1.13 s against 1.31-1.32 s (its diff no longer shares the disk with that sync); the
  // source's resume (QEMU's `completed` to RESUME) at most 1.2 ms against up to 4.4 ms, so the
  // series' max / median 1.44 and 1.32 against 2.39 and 2.61.
  vc->skip_ram_sync = vmm::host_jail().lean.pmem_stub &&
                      vmm::qemu_syncs_volatile_ram(vmm::host_jail().qemu_version);
  vc->incoming_defer = true;
  vc->nic = req.nic;
  vc->pit = req.pit;
  vc->ioapic2 = req.ioapic2;
  vc->start_paused = true;  // stays paused after the migration: it is a template, never runs
  vc->die_with_parent = true;
  // A full branch stops the source for the whole copy: its destination brings the memory file in
  // at start (QEMU's prealloc, in the destination's own address space) while the source still
  // runs, so that the paused copy takes no page faults. 1 GiB, five full branches each way: pause
  // 912-976 ms against 1438-1722 ms with forkd's prefault (which fills the page cache but not
  // QEMU's page tables: the destination still faulted on every page), the whole call 3.4-3.7 s
  // against 3.2-3.5 s. A live copy runs beside the guest; there the same prealloc delayed the
  // copy's start by 1.4-2.4 s and cost the call more than the copy's 0.75 s it saved (whole call
  // 4.2-5.5 s against 3.9-4.2 s), so a live branch keeps the prefault below.
  if (mode == BranchMode::kFull) vc->prealloc_threads = kPreallocThreads;
  if (*disk) {
    // The destination needs a disk device of the same size; it never reads or writes it.
    std::string dummy = *dest_dir + "/dest.qcow2";
    auto r = run_capture(
        {"qemu-img", "create", "-q", "-f", "qcow2", dummy, std::to_string((*disk)->virtual_size)},
        std::chrono::seconds(30));
    if (!r || r->exit_code != 0) {
      return make_error(ErrorCode::kQemuFailed, "qemu-img create: " + (r ? r->output : ""));
    }
    vc->disk = dummy;
  }
  auto jail = jail_vm(cfg, *dest_dir, {}, &*vc);
  if (!jail) return tl::unexpected(jail.error().wrap("branch destination"));
  auto t_launch = Clock::now();
  // Bringing the memory in takes ~1.5 s per GiB here.
  const int64_t gib = static_cast<int64_t>(ram_bytes >> 30) + 1;
  const std::chrono::seconds launch_timeout(30 + (vc->prealloc_threads > 0 ? 10 * gib : 0));
  auto launched = vmm::VmProcess::launch_with_qmp(*vc, *dest_dir + "/qemu.log", launch_timeout);
  const double launch_ms = ms_since(t_launch);
  if (!launched) {
    (void)remove_run_dir(*dest_dir);
    return tl::unexpected(launched.error().wrap("start the branch destination"));
  }
  struct DestGuard {
    vmm::VmProcess& vm;
    const std::string& dir;
    ~DestGuard() {
      vm.terminate(std::chrono::seconds(2));
      (void)remove_run_dir(dir);  // its cgroup; dest_lock removes the (then empty) path again
    }
  } dest_guard{launched->first, *dest_dir};
  QmpClient& dst = launched->second;
  const bool multifd = use_multifd(mode);
  FORKD_TRY(set_migration_caps(
      dst, {{"events", true}, {"x-ignore-shared", false}, {"multifd", multifd}}));
  std::string uri;
  if (multifd) {
    if (auto r = dst.execute("migrate-set-parameters",
                             Json{{"multifd-channels", kBranchMultifdChannels}});
        !r) {
      return tl::unexpected(r.error().wrap("destination migrate-set-parameters"));
    }
    auto sock = listen_for_source(dst, *dest_dir, vc->jail, req.source_dir);
    if (!sock) return tl::unexpected(sock.error());
    uri = "unix:" + *sock;
  } else {
    // The two QEMUs (two jailed uids) talk over a socket pair this process hands to both: no
    // socket file either of them could reach.
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
      return errno_error(errno, "migration socketpair");
    }
    UniqueFd dst_end(pair[0]), src_end(pair[1]);
    if (auto r = dst.execute_with_fd("getfd", Json{{"fdname", "branch-in"}}, dst_end.get()); !r) {
      return tl::unexpected(r.error().wrap("destination getfd"));
    }
    dst_end.reset();
    if (auto r = dst.execute("migrate-incoming", Json{{"uri", "fd:branch-in"}}); !r) {
      return tl::unexpected(r.error().wrap("destination migrate-incoming"));
    }
    if (auto r = src->execute_with_fd("getfd", Json{{"fdname", "branch-out"}}, src_end.get()); !r) {
      return tl::unexpected(r.error().wrap("source getfd"));
    }
    uri = "fd:branch-out";
  }

  // The destination's first touches of the new memory file, shared with this thread, unless the
  // destination brought the whole file in at start (prealloc_threads, a full branch).
  std::optional<FilePrefaulter> prefault;
  if (vc->prealloc_threads == 0) prefault.emplace(req.memory_file, ram_bytes);
  const double setup_ms = ms_since(t_start);
  MigrateResult res;
  res.ram_bytes = ram_bytes;
  res.mode = mode;
  auto copied = copy_from_source(SourceCopy{*src, req, mode, *disk, multifd, false}, uri, res);
  if (prefault) prefault->stop();
  if (!copied) return tl::unexpected(copied.error());

  // The destination finishes loading and stays paused: it is now a template.
  auto t_tail = Clock::now();
  for (;;) {
    auto ev = dst.wait_event("MIGRATION", std::chrono::seconds(60));
    if (!ev) return tl::unexpected(ev.error().wrap("destination"));
    const Json* data = json::member(*ev, "data");
    std::string status = data ? json::string_or(*data, "status", "") : "";
    if (status == "completed") break;
    if (status == "failed" || status == "cancelled") {
      return make_error(ErrorCode::kQemuFailed, "destination migration " + status + ": " +
                                                    vmm::log_tail(*dest_dir + "/qemu.log", 400));
    }
  }
  // The memory is whole. The caller's work on it runs beside the destination's last steps (its
  // incoming cleanup, without the sync of the whole file when skip_ram_sync is set; with it,
  // QEMU answered nothing for 0.5-1 s at 1 GiB), then the device state.
  auto t_finish = Clock::now();
  const double tail_ms = ms_since(t_tail);
  std::future<Status> memory_work;
  if (req.on_memory_complete) memory_work = start_task(req.on_memory_complete);
  // Synced with the tag's other files (branch_sandbox). One channel: save_device_state turns
  // multifd off.
  auto saved = save_device_state(dst, req.vmstate_file, /*ignore_shared=*/true, /*sync=*/false);
  if (saved) {
    (void)dst.execute("quit");
    launched->first.wait_exit(std::chrono::seconds(5));
  }
  const double dest_ms = ms_since(t_finish);
  Status memory = memory_work.valid() ? memory_work.get() : Status{};
  if (!saved) return tl::unexpected(saved.error().wrap("destination device state"));
  if (!memory) return tl::unexpected(memory.error());
  logger("branch")->info(
      "event=migrate_steps multifd={} setup_ms={:.0f} launch_ms={:.0f} copy_ms={:.0f} "
      "prefaulted_mib={} tail_ms={:.0f} destination_done_ms={:.0f} memory_done_ms={:.0f}",
      multifd, setup_ms, launch_ms, res.copy_ms, prefault ? prefault->done_bytes() >> 20 : 0,
      tail_ms, dest_ms, ms_since(t_finish));

  FORKD_TRY(find_disk_base(res));
  return res;
}

}  // namespace forkd::engine

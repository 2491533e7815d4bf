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
#include "engine/gc.h"
#include "engine/migration.h"
#include "engine/sandbox_jail.h"
#include "engine/vm_setup.h"
#include "vmm/jail.h"
#include "vmm/qmp_client.h"
#include "vmm/vm_process.h"

namespace forkd::engine {

namespace {

using Clock = std::chrono::steady_clock;
using vmm::Json;
using vmm::QmpClient;

constexpr auto kMigrationDeadline = std::chrono::seconds(180);
// Live mode: after this long without converging, allow a long final pause so it finishes.
constexpr auto kConvergeAfter = std::chrono::seconds(8);
// QEMU switches over once what is left can be sent in this long at the measured bandwidth. At
// 1 ms the last round is small: measured at 1 GiB with a 20 MiB/s guest writer, pause p50
// 4.9 ms at 1 ms against 6.9 ms at 20 ms, the whole call as long (each page left for the pause
// also costs TCG a TLB walk in QEMU's per-page dirty sync, see vmm::guest_ram_bytes).
constexpr int kLiveDowntimeMs = 1;

Status set_caps(QmpClient& qmp, const std::vector<std::pair<std::string, bool>>& caps) {
  Json list = Json::array();
  for (const auto& [name, on] : caps) list.push_back({{"capability", name}, {"state", on}});
  auto r = qmp.execute("migrate-set-capabilities", Json{{"capabilities", list}});
  if (!r) return tl::unexpected(r.error());
  return {};
}

double event_time_us(const Json& ev) {
  auto ts = ev.find("timestamp");
  if (ts == ev.end() || !ts->is_object()) return 0;
  return json::number_or(*ts, "seconds", 0.0) * 1e6 + json::number_or(*ts, "microseconds", 0.0);
}

// The source's disk as QEMU has it now: active image file and virtual size.
struct SourceDisk {
  std::string active;
  int64_t virtual_size = 0;
};

Result<std::optional<SourceDisk>> query_disk(QmpClient& qmp) {
  auto r = qmp.execute("query-block");
  if (!r) return tl::unexpected(r.error());
  for (const auto& dev : *r) {
    if (json::string_or(dev, "device", "") != "root") continue;
    auto ins = dev.find("inserted");
    if (ins == dev.end()) continue;
    SourceDisk d;
    d.active = json::string_or(*ins, "file", "");
    if (auto img = ins->find("image"); img != ins->end()) {
      d.virtual_size = json::int_or(*img, "virtual-size", int64_t{0});
    }
    if (d.active.empty() || d.virtual_size <= 0) {
      return make_error(ErrorCode::kQemuFailed, "query-block: no file or size for the disk");
    }
    return std::optional<SourceDisk>(d);
  }
  return std::optional<SourceDisk>();
}

// The bottom (raw base) of a qcow2 chain.
Result<std::string> chain_base(const std::string& image) {
  auto r = run_capture({"qemu-img", "info", "-U", "--backing-chain", "--output=json", image},
                       std::chrono::seconds(30));
  if (!r || r->exit_code != 0) {
    return make_error(ErrorCode::kQemuFailed,
                      "qemu-img info " + image + ": " + (r ? r->output : r.error().message()));
  }
  Json j = json::parse_untrusted(r->output);
  if (!j.is_array() || j.empty() || !j.back().is_object()) {
    return make_error(ErrorCode::kQemuFailed, "qemu-img info: unexpected output");
  }
  const Json& last = j.back();
  if (json::string_or(last, "format", "") != "raw") {
    return make_error(ErrorCode::kQemuFailed, "disk chain of " + image + " does not end in raw");
  }
  return json::string_or(last, "filename", "");
}

// Runs the source's side; the source is running again when this returns (on success or not).
class SourceSide {
 public:
  explicit SourceSide(QmpClient& qmp) : qmp_(qmp) {}

  // Resumes the source if it is not running (cancelling a migration still in progress).
  void ensure_running() {
    auto st = qmp_.execute("query-status");
    if (st && json::bool_or(*st, "running", true)) return;
    auto mig = qmp_.execute("query-migrate");
    if (mig && mig->is_object()) {
      std::string s = json::string_or(*mig, "status", "");
      if (s == "active" || s == "pre-switchover" || s == "device" || s == "setup") {
        (void)qmp_.execute("migrate_cancel");
        for (int i = 0; i < 200; ++i) {
          auto m = qmp_.execute("query-migrate");
          if (!m || json::string_or(*m, "status", "") != "cancelling") break;
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
      }
    }
    (void)qmp_.execute("cont");
  }

 private:
  QmpClient& qmp_;
};

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
// side, cause not traced. FORKD_BRANCH_MULTIFD=0 turns it off.
bool use_multifd(BranchMode mode) {
  const char* env = std::getenv("FORKD_BRANCH_MULTIFD");
  if (env != nullptr && std::string(env) == "0") return false;
  return mode == BranchMode::kFull && vmm::version_at_least(vmm::host_jail().qemu_version, 9, 0);
}
constexpr int kMultifdChannels = 2;
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
  auto src = QmpClient::connect(req.source_dir + "/qmp.sock", std::chrono::seconds(5));
  if (!src) return tl::unexpected(src.error().wrap("source QMP"));
  // The source's exact RAM size (with or without the TCG pad, see vmm::guest_ram_bytes): the
  // destination must match it byte for byte.
  auto mem = src->execute("query-memory-size-summary");
  if (!mem) return tl::unexpected(mem.error().wrap("source memory size"));
  uint64_t ram_bytes = json::int_or(*mem, "base-memory", uint64_t{0});
  if (ram_bytes < (static_cast<uint64_t>(req.memory_mib) << 20)) {
    return make_error(ErrorCode::kInternal, "source reports " + std::to_string(ram_bytes) +
                                                " bytes of RAM for " +
                                                std::to_string(req.memory_mib) + " MiB");
  }
  auto t_start = Clock::now();
  // Before anything stops: a full disk fails here, with the source untouched.
  FORKD_TRY(preallocate_file(req.memory_file, ram_bytes));
  auto disk = query_disk(*src);
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
  // Under a QEMU before 9.0 with TCG, a source whose RAM is whole 256 KiB units (a VM of a tag
  // saved before the RAM pad, or by a newer QEMU that needs none) would lose pages in a live copy
  // (see vmm::guest_ram_bytes): it is copied stopped instead.
  BranchMode mode = req.mode;
  if (mode == BranchMode::kLive && vc->accel == vmm::Accel::kTcg && vmm::host_jail().tcg_ram_pad &&
      ram_bytes % (256u << 10) == 0) {
    mode = BranchMode::kFull;
    logger("branch")->warn(
        "event=live_unsafe ram_bytes={} detail=\"this QEMU (before 9.0) needs the TCG RAM pad, "
        "which this sandbox's tag lacks; branching it in full mode (re-create the tag for live "
        "branches)\"",
        ram_bytes);
  }
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
  FORKD_TRY(set_caps(dst, {{"events", true}, {"x-ignore-shared", false}, {"multifd", multifd}}));
  std::string uri;
  if (multifd) {
    if (auto r =
            dst.execute("migrate-set-parameters", Json{{"multifd-channels", kMultifdChannels}});
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

  FORKD_TRY(set_caps(*src, {{"events", true},
                            {"x-ignore-shared", false},
                            {"multifd", multifd},
                            {"pause-before-switchover", disk->has_value()}}));
  Json params = {{"max-bandwidth", int64_t{1} << 40}, {"downtime-limit", kLiveDowntimeMs}};
  if (multifd) {
    params["multifd-channels"] = kMultifdChannels;
    params["zero-page-detection"] = "multifd";
  }
  if (auto r = src->execute("migrate-set-parameters", params); !r) {
    return tl::unexpected(r.error().wrap("migrate-set-parameters"));
  }
  (void)src->take_events();  // only this migration's STOP/RESUME count

  SourceSide source(*src);
  MigrateResult res;
  res.ram_bytes = ram_bytes;
  res.mode = mode;
  auto give_up = [&](const Error& e) -> Result<MigrateResult> {
    source.ensure_running();
    return tl::unexpected(e);
  };
  // The destination's first touches of the new memory file, shared with this thread, unless the
  // destination brought the whole file in at start (prealloc_threads, a full branch).
  std::optional<FilePrefaulter> prefault;
  if (vc->prealloc_threads == 0) prefault.emplace(req.memory_file, ram_bytes);
  if (mode == BranchMode::kFull) {
    if (auto r = src->execute("stop"); !r) return give_up(r.error().wrap("stop"));
  }
  auto t_copy = Clock::now();
  const double setup_ms = ms_since(t_start);
  if (auto r = src->execute("migrate", Json{{"uri", uri}}); !r) {
    return give_up(r.error().wrap("migrate"));
  }
  bool raised = false;
  double completed_us = 0;
  for (;;) {
    auto remaining = kMigrationDeadline - (Clock::now() - t_copy);
    if (remaining <= Clock::duration::zero()) {
      return give_up(Error(ErrorCode::kTimeout, "migration did not finish in 180 s"));
    }
    auto ev = src->wait_event("MIGRATION", std::chrono::milliseconds(250));
    if (!ev) {
      if (ev.error().code() != ErrorCode::kTimeout) return give_up(ev.error());
      if (!raised && Clock::now() - t_copy > kConvergeAfter) {
        // A guest dirtying memory faster than it can be copied: finish with a longer pause.
        raised = true;
        (void)src->execute("migrate-set-parameters", Json{{"downtime-limit", 10000}});
        logger("branch")->info("event=converge_forced after_ms={:.0f}", ms_since(t_copy));
      }
      continue;
    }
    const Json* data = json::member(*ev, "data");
    std::string status = data ? json::string_or(*data, "status", "") : "";
    if (status == "pre-switchover") {
      // Source stopped, device state not yet sent: freeze its disk at this instant; it goes on
      // writing to a new overlay above the frozen layer.
      std::string next = req.source_dir + "/overlay-" + random_hex(4) + ".qcow2";
      // A jailed source cannot create files in its run dir: the new layer is handed to the
      // owner of its current one (its uid) first, and QEMU writes into that.
      struct stat active {};
      if (::stat((*disk)->active.c_str(), &active) == 0 && active.st_uid != ::geteuid()) {
        if (auto g = vmm::give_file(next, {active.st_uid, active.st_gid}); !g) {
          return give_up(g.error().wrap("disk snapshot"));
        }
      }
      auto snap = src->execute("blockdev-snapshot-sync", Json{{"device", "root"},
                                                              {"snapshot-file", next},
                                                              {"format", "qcow2"},
                                                              {"mode", "absolute-paths"}});
      if (!snap) return give_up(snap.error().wrap("disk snapshot"));
      res.frozen_disk = (*disk)->active;
      if (auto r = src->execute("migrate-continue", Json{{"state", "pre-switchover"}}); !r) {
        return give_up(r.error().wrap("migrate-continue"));
      }
    } else if (status == "completed") {
      completed_us = event_time_us(*ev);
      break;
    } else if (status == "failed" || status == "cancelled") {
      auto q = src->execute("query-migrate");
      std::string why = q ? json::string_or(*q, "error-desc", "no reason given") : "";
      return give_up(Error(ErrorCode::kQemuFailed, "migration " + status + ": " + why));
    }
  }
  // The completed event can arrive a moment before QEMU's migration cleanup leaves the
  // finish-migrate state, and `cont` is refused until then: retry briefly.
  for (auto t_cont = Clock::now();;) {
    auto r = src->execute("cont");
    if (r) break;
    bool not_final = r.error().message().find("not finalized") != std::string::npos;
    if (!not_final || Clock::now() - t_cont > std::chrono::seconds(5)) {
      return give_up(r.error().wrap("cont"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  res.copy_ms = ms_since(t_copy);
  if (prefault) prefault->stop();
  auto stop_ev = src->wait_event("STOP", std::chrono::seconds(2));
  auto resume_ev = src->wait_event("RESUME", std::chrono::seconds(5));
  if (!stop_ev || !resume_ev) {
    return make_error(ErrorCode::kQemuFailed, "no STOP/RESUME event from the source");
  }
  res.pause_ms = (event_time_us(*resume_ev) - event_time_us(*stop_ev)) / 1000.0;
  if (completed_us > 0) {
    res.switchover_ms = (completed_us - event_time_us(*stop_ev)) / 1000.0;
    res.resume_ms = (event_time_us(*resume_ev) - completed_us) / 1000.0;
  }
  if (req.on_resumed) req.on_resumed(res.pause_ms, res.mode);

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

  if (!res.frozen_disk.empty()) {
    auto base = chain_base(res.frozen_disk);
    if (!base) return tl::unexpected(base.error());
    res.disk_base = *base;
  }
  return res;
}

}  // namespace forkd::engine

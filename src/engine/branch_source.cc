#include "engine/branch_source.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "base/json_get.h"
#include "base/log.h"
#include "base/random.h"
#include "base/subprocess.h"
#include "base/thread_boost.h"
#include "engine/disk_checks.h"
#include "engine/sandbox_jail.h"
#include "engine/vm_setup.h"
#include "vmm/cpu_lift.h"
#include "vmm/jail.h"

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
// The migration capability of forkd's static QEMU that starts the source again when the copy
// completes, and how long after `completed` its RESUME may take before `cont` is sent instead.
constexpr const char* kResumeOnCompletion = "x-resume-on-completion";
constexpr auto kSelfResumeWait = std::chrono::seconds(1);

double event_time_us(const Json& ev) {
  auto ts = ev.find("timestamp");
  if (ts == ev.end() || !ts->is_object()) return 0;
  return json::number_or(*ts, "seconds", 0.0) * 1e6 + json::number_or(*ts, "microseconds", 0.0);
}

// The threads a branch's pause passes through, raised for the copy and put back after it: the
// source QEMU's migration thread (stops the guest, sends the last pages and the device state),
// its monitor thread (reads `cont`), its main thread (runs it), and this thread (waits for
// `completed`, sends `cont`): the last three only where QEMU does not start the source again
// itself (has_resume_on_completion). Never a vCPU. Each wake-up of that relay could otherwise wait
// a scheduler slice behind the copy's other work (the stream's reader and writer, the guest).
// The migration thread is also the one a pause window (base/rt_window.h) runs at a real-time
// priority: armed here once every thread is lifted (the gate waits for that before it lets the
// source switch over), opened by the gate, closed here before the thread is put back.
class PauseThreads {
 public:
  // window: only where the gate opens it, and so holds the migration until this is done.
  PauseThreads(pid_t qemu, RtWindow* window)
      : lift_(vmm::host_jail().cgroups, kPauseCgroup), window_(window) {
    if (qemu <= 1) {
      if (window_) window_->close();
      return;
    }
    const BoostLevel wake{-10, kWakeSlice};
    auto both = [&](pid_t pid, pid_t tid, BoostLevel level) {
      (void)lift_.lift(pid, tid);
      (void)nice_.raise(pid, tid, level);
    };
    both(qemu, qemu, wake);
    for (pid_t tid : threads_named(qemu, {kMonitorThread})) both(qemu, tid, wake);
    // Busy throughout the copy: a larger share, its own slice.
    auto migration = migration_threads(qemu);
    for (pid_t tid : migration) both(qemu, tid, BoostLevel{-10, 0});
    both(0, static_cast<pid_t>(::gettid()), wake);
    if (window_) {
      if (migration.empty() || !window_->arm(qemu, migration.front())) window_->close();
    }
    logger("branch")->debug("event=pause_threads lifted={} raised={} migration_threads={}",
                            lift_.lifted(), nice_.raised(), migration.size());
  }
  // A thread at a real-time priority may not go back to a group without a real-time budget.
  ~PauseThreads() {
    if (window_) window_->close();
  }
  PauseThreads(const PauseThreads&) = delete;
  PauseThreads& operator=(const PauseThreads&) = delete;

 private:
  // QEMU's names for its threads with -name debug-threads=on (vmm/qemu_cmdline.cc).
  static constexpr std::string_view kMonitorThread = "IO mon_iothread";
  static constexpr std::string_view kMigrationThread10 = "mig/src/main";
  static constexpr std::string_view kMigrationThread72 = "live_migration";
  static constexpr uint64_t kWakeSlice = 100'000;  // ns
  static constexpr auto kNameWait = std::chrono::milliseconds(50);

  // A thread takes its name once it runs, which may be after `migrate` returned. Looked for
  // again meanwhile only where the gate holds the migration (with a window): without it, a
  // small guest's migration may have ended, its thread gone, by the time this looks.
  std::vector<pid_t> migration_threads(pid_t qemu) const {
    const auto until = Clock::now() + kNameWait;
    for (;;) {
      auto found = threads_named(qemu, {kMigrationThread10, kMigrationThread72});
      if (!found.empty() || !window_ || Clock::now() >= until) return found;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  vmm::CpuLift lift_;
  ThreadBoost nice_;
  RtWindow* window_;
};

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

// The bottom (raw base) of a qcow2 chain.
Result<std::string> chain_base(const std::string& image,
                               const std::optional<SpawnOptions::Credentials>& owner) {
  auto r = run_capture({"qemu-img", "info", "-U", "--backing-chain", "--output=json", image},
                       std::chrono::seconds(30), {}, owner);
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

// forkd's static QEMU starts a source again itself when its migration completes, if asked
// (src/vmm/lean/qemu-static/patches/migration-resume-on-completion.patch): no `cont` relay
// in the pause. Whether this QEMU has it, from its own list.
bool has_resume_on_completion(QmpClient& qmp) {
  auto r = qmp.execute("query-migrate-capabilities");
  if (!r || !r->is_array()) return false;
  for (const Json& c : *r) {
    if (c.is_object() && json::string_or(c, "capability", "") == kResumeOnCompletion) return true;
  }
  return false;
}

// Whether the source runs now (a live branch of a paused source stays on the `cont` path).
bool source_running(QmpClient& qmp) {
  auto st = qmp.execute("query-status");
  return st && json::bool_or(*st, "running", false);
}

}  // namespace

Result<std::optional<SourceDisk>> query_disk(QmpClient& qmp, const std::string& source_dir) {
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
    auto owner = check_active_image(source_dir, d.active);
    if (!owner) return tl::unexpected(owner.error().wrap("query-block"));
    d.owner = *owner;
    return std::optional<SourceDisk>(d);
  }
  return std::optional<SourceDisk>();
}

Status find_disk_base(MigrateResult& res) {
  if (res.frozen_disk.empty()) return {};
  auto base = chain_base(res.frozen_disk, res.disk_owner);
  if (!base) return tl::unexpected(base.error());
  res.disk_base = *base;
  return {};
}

Result<SourceConn> connect_source(const MigrateRequest& req) {
  auto src = QmpClient::connect(req.source_dir + "/qmp.sock", std::chrono::seconds(5));
  if (!src) return tl::unexpected(src.error().wrap("source QMP"));
  auto mem = src->execute("query-memory-size-summary");
  if (!mem) return tl::unexpected(mem.error().wrap("source memory size"));
  uint64_t ram_bytes = json::int_or(*mem, "base-memory", uint64_t{0});
  if (ram_bytes < (static_cast<uint64_t>(req.memory_mib) << 20)) {
    return make_error(ErrorCode::kInternal, "source reports " + std::to_string(ram_bytes) +
                                                " bytes of RAM for " +
                                                std::to_string(req.memory_mib) + " MiB");
  }
  return SourceConn{std::move(*src), ram_bytes};
}

BranchMode usable_mode(BranchMode asked, bool tcg, uint64_t ram_bytes) {
  if (asked == BranchMode::kLive && tcg && vmm::host_jail().tcg_ram_pad &&
      ram_bytes % (256u << 10) == 0) {
    logger("branch")->warn(
        "event=live_unsafe ram_bytes={} detail=\"this QEMU (before 9.0) needs the TCG RAM pad, "
        "which this sandbox's tag lacks; branching it in full mode (re-create the tag for live "
        "branches)\"",
        ram_bytes);
    return BranchMode::kFull;
  }
  return asked;
}

Status copy_from_source(const SourceCopy& c, const std::string& uri, MigrateResult& res) {
  QmpClient* src = &c.qmp;
  const MigrateRequest& req = c.req;
  std::vector<std::pair<std::string, bool>> caps = {
      {"events", true},
      {"x-ignore-shared", c.ignore_shared},
      {"multifd", c.multifd},
      {"pause-before-switchover", c.disk.has_value() && !c.snapshot_after}};
  // QEMU resumes the source itself only when nothing is left to do in the pause after the copy:
  // a live copy (a full one stopped the source before) of a source without a disk to snapshot.
  // Set either way where QEMU has it: a capability stays as the last migration left it.
  bool qemu_resumes = false;
  if (has_resume_on_completion(*src)) {
    qemu_resumes = c.mode == BranchMode::kLive && !c.disk && source_running(*src);
    caps.emplace_back(kResumeOnCompletion, qemu_resumes);
  }
  auto gate = switchover_gate_caps(c.switchover_gate);
  if (!gate) return tl::unexpected(gate.error());
  caps.insert(caps.end(), gate->begin(), gate->end());
  FORKD_TRY(set_migration_caps(*src, caps));
  Json params = {{"max-bandwidth", int64_t{1} << 40}, {"downtime-limit", kLiveDowntimeMs}};
  if (c.multifd) {
    params["multifd-channels"] = kBranchMultifdChannels;
    params["zero-page-detection"] = "multifd";
  }
  if (auto r = src->execute("migrate-set-parameters", params); !r) {
    return tl::unexpected(r.error().wrap("migrate-set-parameters"));
  }
  (void)src->take_events();  // only this migration's STOP/RESUME count

  SourceSide source(*src);
  // The disk's next layer, made before the copy: at the paused instant only the snapshot's
  // command is left to send. Removed again if that command was never sent (an armed one that
  // is not fired never runs: QmpClient::disarm).
  std::string next_layer;
  bool snapshot_sent = false;
  struct LayerCleanup {
    const std::string& path;
    const bool& sent;
    ~LayerCleanup() {
      if (!path.empty() && !sent) ::unlink(path.c_str());
    }
  } layer_cleanup{next_layer, snapshot_sent};
  Json snapshot_args;
  if (c.disk) {
    // The source goes on writing to a new overlay above the frozen layer, made here (over the
    // active image, by the name QEMU has for it) so that QEMU only opens it in the pause:
    // created by QEMU it cost the pause five fdatasyncs. A jailed source's layer is handed to
    // the owner of its current one (its uid).
    next_layer = req.source_dir + "/overlay-" + random_hex(4) + ".qcow2";
    if (auto made = create_overlay(c.disk->active, "qcow2", next_layer, c.disk->virtual_size);
        !made) {
      return tl::unexpected(made.error().wrap("disk snapshot"));
    }
    if (c.disk->owner) {
      if (auto g = vmm::give_file(next_layer, {c.disk->owner->uid, c.disk->owner->gid}); !g) {
        ::unlink(next_layer.c_str());
        return tl::unexpected(g.error().wrap("disk snapshot"));
      }
    }
    snapshot_args = Json{{"device", "root"},
                         {"snapshot-file", next_layer},
                         {"format", "qcow2"},
                         {"mode", "existing"}};
  }
  auto give_up = [&](const Error& e) -> Status {
    source.ensure_running();
    return tl::unexpected(e);
  };
  // The first command the paused instant needs, armed ahead (QmpClient::arm: QEMU reads QMP a
  // byte at a time, ~10 us each here): the disk's snapshot, or `cont`. Without it, sent whole.
  // The snapshot, whether in the pause before the switch-over or after `completed`, freezes the
  // disk as it was at the stop: QEMU drained and flushed it then, and the guest ran no more.
  auto snapshot = [&]() -> Status {
    snapshot_sent = true;
    auto snap = src->armed() ? src->fire() : src->execute("blockdev-snapshot-sync", snapshot_args);
    if (!snap) return tl::unexpected(snap.error().wrap("disk snapshot"));
    res.frozen_disk = c.disk->active;
    res.disk_owner = c.disk->owner;
    return {};
  };
  auto arm_first = [&] {
    if (c.disk && !snapshot_sent) {
      (void)src->arm("blockdev-snapshot-sync", snapshot_args);
    } else if (!qemu_resumes) {
      (void)src->arm("cont");
    }
  };
  if (c.mode == BranchMode::kFull) {
    if (auto r = src->execute("stop"); !r) return give_up(r.error().wrap("stop"));
  }
  auto t_copy = Clock::now();
  if (auto r = src->execute("migrate", Json{{"uri", uri}}); !r) {
    return give_up(r.error().wrap("migrate"));
  }
  arm_first();
  PauseThreads pause_threads(req.source_pid, c.switchover_gate ? c.pause_window : nullptr);
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
        arm_first();
      }
      continue;
    }
    const Json* data = json::member(*ev, "data");
    std::string status = data ? json::string_or(*data, "status", "") : "";
    if (status == "pre-switchover") {
      // Source stopped, device state not yet sent: freeze its disk at this instant.
      if (Status st = snapshot(); !st) return give_up(st.error());
      if (auto r = src->execute("migrate-continue", Json{{"state", "pre-switchover"}}); !r) {
        return give_up(r.error().wrap("migrate-continue"));
      }
      arm_first();
    } else if (status == "completed") {
      completed_us = event_time_us(*ev);
      if (c.snapshot_after && c.disk && !snapshot_sent) {
        // QEMU's pause before the switch-over costs 1 ms on its own (it drains a semaphore
        // with a 1 ms timed wait, migration_switchover_prepare in QEMU 10), beside a round trip
        // through forkd and a 60-byte `migrate-continue`: without it the snapshot comes here.
        if (Status st = snapshot(); !st) return give_up(st.error());
        arm_first();
      }
      break;
    } else if (status == "failed" || status == "cancelled") {
      auto q = src->execute("query-migrate");
      std::string why = q ? json::string_or(*q, "error-desc", "no reason given") : "";
      return give_up(Error(ErrorCode::kQemuFailed, "migration " + status + ": " + why));
    }
  }
  // QEMU started the source itself, or (its block devices could not be activated again) left it
  // stopped: then `cont` says why.
  std::optional<Json> resume_ev;
  if (qemu_resumes) {
    if (auto ev = src->wait_event("RESUME", kSelfResumeWait)) {
      resume_ev = std::move(*ev);
      res.resumed_by_qemu = true;
    } else if (ev.error().code() != ErrorCode::kTimeout) {
      return give_up(ev.error());
    }
  }
  // The completed event can arrive a moment before QEMU's migration cleanup leaves the
  // finish-migrate state, and `cont` is refused until then: retry briefly.
  for (auto t_cont = Clock::now(); !resume_ev;) {
    auto r = src->armed() ? src->fire() : src->execute("cont");
    if (r) break;
    bool not_final = r.error().message().find("not finalized") != std::string::npos;
    if (!not_final || Clock::now() - t_cont > std::chrono::seconds(5)) {
      return give_up(r.error().wrap("cont"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  res.copy_ms = ms_since(t_copy);
  auto stop_ev = src->wait_event("STOP", std::chrono::seconds(2));
  if (!resume_ev) {
    auto ev = src->wait_event("RESUME", std::chrono::seconds(5));
    if (ev) resume_ev = std::move(*ev);
  }
  if (!stop_ev || !resume_ev) {
    return make_error(ErrorCode::kQemuFailed, "no STOP/RESUME event from the source");
  }
  res.pause_ms = (event_time_us(*resume_ev) - event_time_us(*stop_ev)) / 1000.0;
  if (completed_us > 0) {
    res.switchover_ms = (completed_us - event_time_us(*stop_ev)) / 1000.0;
    res.resume_ms = (event_time_us(*resume_ev) - completed_us) / 1000.0;
  }
  if (req.on_resumed) req.on_resumed(res.pause_ms, res.mode);
  return {};
}

}  // namespace forkd::engine

#include "engine/branch_receive.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <optional>
#include <system_error>
#include <thread>

#include "base/clock.h"
#include "base/files.h"
#include "base/log.h"
#include "engine/branch_source.h"
#include "engine/migration_stream.h"
#include "engine/sandbox_jail.h"
#include "engine/switchover_gate.h"
#include "store/link_receiver.h"
#include "vmm/cpu_lift.h"
#include "vmm/jail.h"

namespace forkd::engine {

namespace {

using Clock = std::chrono::steady_clock;

// The RAM block of the guest's memory backend (`-object memory-backend-file,id=mem`,
// vmm/qemu_cmdline.cc): QEMU names a backend's block after its id.
constexpr const char* kMainRamBlock = "mem";
// After the source's `completed`, its side closes the stream at once; the reader has only the
// last bytes left to take.
constexpr auto kStreamEndWait = std::chrono::seconds(30);
constexpr int kSocketBuffer = 8 << 20;
// How long the source's migration thread may run at a real-time priority from the gate's opening
// (base/rt_window.h). The pause follows the gate within about a millisecond and lasts under one;
// a source that keeps copying instead (its guest dirties memory too fast) goes on at the normal
// priority after this.
constexpr auto kPauseWindowMax = std::chrono::milliseconds(20);
// How long the gate holds the switch-over for the source's side to find the migration thread and
// lift the pause's threads (copy_from_source, right after `migrate`). A small guest's first pass
// can arrive before that: under load the gate opened 15 ms before the threads were lifted, and
// the whole pause then ran with none of them raised. The source goes on copying meanwhile.
constexpr auto kLiftWait = std::chrono::seconds(1);

}  // namespace

Result<MigrateResult> receive_link(const MigrateRequest& req, vmm::QmpClient& src,
                                   uint64_t ram_bytes) {
  auto t_start = Clock::now();
  auto disk = query_disk(src, req.source_dir);
  if (!disk) return tl::unexpected(disk.error());
  auto link = store::LinkReceiver::open(req.link_parent_memory, req.link_dir, ram_bytes);
  if (!link) return tl::unexpected(link.error());
  auto vmstate = open_file(req.vmstate_file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (!vmstate) return tl::unexpected(vmstate.error());
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    return errno_error(errno, "migration socketpair");
  }
  UniqueFd rd(pair[0]), wr(pair[1]);
  // Room in the socket for the last round's pages and the device state: the source's pause
  // then does not wait for the reader (root may exceed the default limit; without it, as is).
  int sndbuf = kSocketBuffer;
  if (::setsockopt(wr.get(), SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) != 0) {
    (void)::setsockopt(wr.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  }
  if (auto r = src.execute_with_fd("getfd", vmm::Json{{"fdname", "branch-out"}}, wr.get()); !r) {
    return tl::unexpected(r.error().wrap("source getfd"));
  }
  wr.reset();

  // The source switches over only once the reader has caught up (engine/switchover_gate.h).
  const bool gated = vmm::host_jail().switchover_ack;
  SwitchoverGate gate(rd.get());
  std::optional<double> gate_ms;  // when the gate opened, from the call's start
  // From the gate's opening until the source runs again, its migration thread runs before any
  // normal thread of the host: traced, a kernel thread, the host's own agent and this reader
  // each took that thread's core in a pause for 0.3-3.8 ms at times (bench/results/README.md).
  RtWindow pause_window(kPauseWindowMax);
  gate.before_open([&] { (void)pause_window.open(kLiftWait); });

  // The reader: a thread of its own, so that the source's events are served meanwhile. On an
  // error it shuts the socket, so the source's migration fails instead of waiting for a reader.
  std::promise<Status> read_done;
  auto read_result = read_done.get_future();
  StreamStats stats;
  auto read_stream = [&]() {
    Status st;
    try {
      // While the socket is full (the source sends faster than this reads), the pause's last
      // pages wait for this thread to make room: it is lifted with the pause's threads.
      vmm::CpuLift lift(vmm::host_jail().cgroups, kPauseCgroup);
      (void)lift.lift(0, static_cast<pid_t>(::gettid()));
      // A batch thread keeps its share of the CPU but does not preempt the running one when
      // it wakes. Woken by every write of the source's migration thread, the reader otherwise
      // took that thread's core in the pause, up to 0.28 ms at a time, and once a kernel thread
      // got the core after it for 3.8 ms (bench/results/README.md, "What the rare slow pauses
      // are now"). Side by side, 12 series of 10 branches each way, the pause's p50 and p90 were
      // the same (0.38 / 0.62 ms against 0.37 / 0.62), the whole call within the noise (851
      // against 823 ms p50); the rare tail it is for needs more branches than that to show.
      const sched_param batch{};
      (void)::sched_setscheduler(0, SCHED_BATCH, &batch);
      MigrationStreamSplitter split(
          rd.get(), vmstate->get(), kMainRamBlock, ram_bytes,
          [&](uint64_t off, const uint8_t* data) { return (*link)->page(off, data); });
      if (gated) {
        split.expect_return_path();
        split.set_before_read([&](const StreamStats& s) -> Status {
          FORKD_TRY(gate.poll(s.return_path, (*link)->all_seen()));
          if (gate.opened() && !gate_ms) gate_ms = ms_since(t_start);
          return {};
        });
      }
      st = split.run();
      stats = split.stats();
    } catch (const std::exception& e) {
      st = make_error(ErrorCode::kInternal, std::string("migration stream reader: ") + e.what());
    }
    if (!st) ::shutdown(rd.get(), SHUT_RDWR);
    read_done.set_value(st);
  };
  std::thread reader;
  try {
    reader = std::thread(read_stream);
  } catch (const std::system_error& e) {
    return make_error(ErrorCode::kInternal, std::string("start the stream reader: ") + e.what());
  }
  struct Joiner {
    std::thread& t;
    int fd;
    ~Joiner() {
      if (!t.joinable()) return;
      ::shutdown(fd, SHUT_RDWR);
      t.join();
    }
  } joiner{reader, rd.get()};

  MigrateResult res;
  res.ram_bytes = ram_bytes;
  res.mode = BranchMode::kLive;
  const double setup_ms = ms_since(t_start);
  auto copied = copy_from_source(SourceCopy{src, req, BranchMode::kLive, *disk, /*multifd=*/false,
                                            /*ignore_shared=*/true, gated,
                                            /*snapshot_after=*/true, &pause_window},
                                 "fd:branch-out", res);
  if (!copied) {
    // The reader's error, when it has one, says more than the migration's "failed".
    if (read_result.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
      if (Status st = read_result.get(); !st) return tl::unexpected(st.error());
    }
    return tl::unexpected(copied.error());
  }
  auto t_tail = Clock::now();
  if (read_result.wait_for(kStreamEndWait) != std::future_status::ready) {
    return make_error(ErrorCode::kTimeout, "the source's migration stream did not end");
  }
  reader.join();
  if (Status st = read_result.get(); !st) return tl::unexpected(st.error());
  const double tail_ms = ms_since(t_tail);
  if (gate_ms) res.gate_ms = *gate_ms;
  res.rt_window_ms = pause_window.open_ms();
  auto t_link = Clock::now();
  // The content hash is left to the link's first assembly, which reads and hashes the same
  // bytes anyway (SnapshotMeta::content_pending): the tag is ready without it.
  auto written = (*link)->finish(/*content_hash=*/false);
  if (!written) return tl::unexpected(written.error());
  res.link = std::move(*written);
  res.link_ms = ms_since(t_link);
  logger("branch")->info(
      "event=receive_steps setup_ms={:.0f} copy_ms={:.0f} gate_ms={:.0f} gate_wait_ms={:.1f} "
      "gate_backlog_kib={} rt_window_ms={:.2f} rt_expired={} tail_ms={:.0f} link_ms={:.0f} "
      "drain_ms={:.0f} hash_ms={:.0f} sync_ms={:.0f} buffer_wait_ms={:.0f} buffer_waits={} "
      "stream_mib={} main_pages={} other_pages={} device_kib={} changed_pages={}",
      setup_ms, res.copy_ms, res.gate_ms, gate.waited_ms(), gate.backlog() >> 10, res.rt_window_ms,
      pause_window.expired(), tail_ms, res.link_ms, (*link)->timing().drain_ms,
      (*link)->timing().hash_ms, (*link)->timing().sync_ms, (*link)->timing().buffer_wait_ms,
      (*link)->timing().buffer_waits, stats.bytes_in >> 20, stats.main_pages, stats.other_pages,
      stats.device_bytes >> 10, res.link->pages_changed);
  FORKD_TRY(find_disk_base(res));
  return res;
}

}  // namespace forkd::engine

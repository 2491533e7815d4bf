#pragma once
// One thread run at a real-time priority for a short window, and put back as it was when the
// window closes or a deadline passes, whichever comes first. A live branch's pause: QEMU's
// migration thread stops the guest, sends the last pages and the device state and starts the
// guest again, all on one core, and any normal thread of the host that wakes on that core (the
// branch's own stream reader, a kernel thread, another service's thread at a high priority) can
// take it for milliseconds while the guest waits (bench/results/README.md, "What the rare slow
// pauses are now"). At the lowest real-time priority the migration thread runs before every
// normal thread, and a deadline bounds how long that can last.
//
// The thread may be another process's, untrusted (a jailed QEMU): it runs with
// SCHED_RESET_ON_FORK, so no thread it makes in the window inherits the priority, and the
// watchdog (at the next real-time priority, where this process may have one) ends the window
// after max_open whatever the thread does. A cgroup v1 hierarchy with
// real-time group scheduling also needs the thread in a group with a real-time budget
// (vmm/cpu_lift.h gives its group one), which bounds it in the kernel too.
//
// Best effort: a thread that cannot be changed (not permitted, no budget, gone) is left as it is.
#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "base/sched_attr.h"

namespace forkd {

class RtWindow {
 public:
  using Clock = std::chrono::steady_clock;

  explicit RtWindow(std::chrono::microseconds max_open) : max_open_(max_open) {}
  RtWindow(const RtWindow&) = delete;
  RtWindow& operator=(const RtWindow&) = delete;
  ~RtWindow();

  // The thread the window is for: thread tid of process pid (pid 0: of this process). Starts the
  // watchdog (a thread of this process, so outside any critical section). Once; false when it was
  // set before, the window is closed, or the watchdog cannot start.
  bool arm(pid_t pid, pid_t tid);
  // Runs the thread at SCHED_FIFO priority 1 until close() or max_open. From any thread; once.
  // Not armed yet, it first waits up to wait_for_arm for arm() (close() ends that wait). False
  // when nothing changed: not armed in time, closed, opened before, or the thread could not be
  // changed.
  bool open(std::chrono::microseconds wait_for_arm = std::chrono::microseconds::zero());
  // Puts the thread back as it was (if it is still its process's) and ends the window for good.
  void close();

  bool opened() const;
  // How long the thread ran at the real-time priority (ms): so far, when still open.
  double open_ms() const;
  // Whether the deadline, not close(), ended the window.
  bool expired() const;

 private:
  void watch();
  void put_back_locked();

  static constexpr uint32_t kPriority = 1;  // the lowest SCHED_FIFO priority
  const std::chrono::microseconds max_open_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::thread watchdog_;
  pid_t pid_ = 0;
  pid_t tid_ = 0;  // set by arm()
  bool closed_ = false;
  bool expired_ = false;
  std::optional<sched::Attr> saved_;  // set while the thread runs at the real-time priority
  std::optional<Clock::time_point> opened_at_;
  std::optional<Clock::time_point> ended_at_;
};

}  // namespace forkd

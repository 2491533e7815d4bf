#include "base/rt_window.h"

#include <system_error>

#include "base/proc_stat.h"

namespace forkd {

namespace {

sched::Attr fifo(uint32_t priority, uint64_t flags) {
  sched::Attr a{};
  a.size = sizeof a;
  a.sched_policy = sched::kFifo;
  a.sched_flags = flags;
  a.sched_priority = priority;
  return a;
}

}  // namespace

RtWindow::~RtWindow() {
  close();
  if (watchdog_.joinable()) watchdog_.join();
}

bool RtWindow::arm(pid_t pid, pid_t tid) {
  std::lock_guard<std::mutex> lock(mu_);
  if (tid_ > 0 || closed_ || tid <= 0 || pid < 0) return false;
  try {
    watchdog_ = std::thread([this] { watch(); });
  } catch (const std::system_error&) {
    return false;
  }
  pid_ = pid;
  tid_ = tid;
  cv_.notify_all();  // an open() waiting for the thread
  return true;
}

bool RtWindow::open(std::chrono::microseconds wait_for_arm) {
  std::unique_lock<std::mutex> lock(mu_);
  if (tid_ <= 0 && !closed_ && wait_for_arm > std::chrono::microseconds::zero()) {
    (void)cv_.wait_for(lock, wait_for_arm, [this] { return tid_ > 0 || closed_; });
  }
  if (tid_ <= 0 || closed_ || opened_at_) return false;
  opened_at_ = Clock::now();  // once, changed or not
  if (!thread_of(pid_, tid_)) return false;
  sched::Attr old{};
  if (sched::get_attr(tid_, old) != 0 || old.sched_policy != sched::kNormal) return false;
  if (sched::set_attr(tid_, fifo(kPriority, sched::kResetOnFork)) != 0) return false;
  saved_ = old;
  cv_.notify_all();
  return true;
}

void RtWindow::close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) return;
  closed_ = true;
  put_back_locked();
  cv_.notify_all();
}

void RtWindow::put_back_locked() {
  if (!saved_) return;
  ended_at_ = Clock::now();
  sched::Attr back = *saved_;
  saved_.reset();
  // A thread that has exited since may have left its tid to another process's thread.
  if (!thread_of(pid_, tid_)) return;
  back.size = sizeof back;
  back.sched_flags = 0;
  (void)sched::set_attr(tid_, back);
}

void RtWindow::watch() {
  // Above the window's priority where this process may: a deadline that falls while the thread
  // holds its core would otherwise wait for this watchdog to be moved to the other core (seen:
  // a window of 34.9 ms for 20). Where it may not (a cgroup without a real-time budget), the
  // deadline is as late as the scheduler makes it, and the group's budget bounds the thread.
  (void)sched::set_attr(0, fifo(kPriority + 1, 0));
  std::unique_lock<std::mutex> lock(mu_);
  while (!closed_) {
    if (!saved_) {
      cv_.wait(lock);
      continue;
    }
    if (cv_.wait_until(lock, *opened_at_ + max_open_) == std::cv_status::timeout && saved_ &&
        Clock::now() >= *opened_at_ + max_open_) {
      expired_ = true;
      put_back_locked();
    }
  }
}

bool RtWindow::opened() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ended_at_.has_value() || saved_.has_value();
}

double RtWindow::open_ms() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!opened_at_ || (!saved_ && !ended_at_)) return 0;
  auto end = saved_ ? Clock::now() : *ended_at_;
  return std::chrono::duration<double, std::milli>(end - *opened_at_).count();
}

bool RtWindow::expired() const {
  std::lock_guard<std::mutex> lock(mu_);
  return expired_;
}

}  // namespace forkd

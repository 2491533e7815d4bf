#include "base/rt_window.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "base/proc_stat.h"
#include "base/sched_attr.h"

namespace forkd {
namespace {

using namespace std::chrono_literals;

pid_t self_tid() { return static_cast<pid_t>(::gettid()); }

// The policy of thread tid, with SCHED_RESET_ON_FORK's bit taken off.
int policy_of(pid_t tid) { return ::sched_getscheduler(tid) & ~SCHED_RESET_ON_FORK; }

// Whether this host lets this process run a thread at SCHED_FIFO (root, and on a cgroup v1
// hierarchy with real-time group scheduling a group with a budget).
bool fifo_allowed() {
  bool ok = false;
  std::thread t([&] {
    const sched_param p{1};
    ok = ::sched_setscheduler(0, SCHED_FIFO, &p) == 0;
    const sched_param z{0};
    (void)::sched_setscheduler(0, SCHED_OTHER, &z);
  });
  t.join();
  return ok;
}

// How many threads of this process run at SCHED_FIFO with this priority.
int threads_at_fifo(uint32_t priority) {
  int n = 0;
  for (int tid : process_threads(::getpid()).value_or(std::vector<int>{})) {
    sched::Attr a{};
    if (sched::get_attr(tid, a) == 0 && a.sched_policy == sched::kFifo &&
        a.sched_priority == priority) {
      ++n;
    }
  }
  return n;
}

TEST(RtWindow, RunsTheThreadAtFifoUntilClosedThenAsItWas) {
  if (!fifo_allowed()) GTEST_SKIP() << "SCHED_FIFO is not permitted to this process here";
  std::thread t([] {
    const pid_t tid = self_tid();
    errno = 0;
    const int own = ::nice(3);  // a nice of its own, to be given back
    ASSERT_EQ(errno, 0);
    RtWindow w(10s);
    EXPECT_FALSE(w.open());  // not armed yet
    ASSERT_TRUE(w.arm(0, tid));
    EXPECT_FALSE(w.arm(0, tid));  // once
    // Its watchdog runs at the next real-time priority, so that a deadline is never late behind
    // the thread it ends.
    auto until = std::chrono::steady_clock::now() + 5s;
    while (threads_at_fifo(2) != 1 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(1ms);
    }
    EXPECT_EQ(threads_at_fifo(2), 1);
    EXPECT_TRUE(w.open());
    EXPECT_TRUE(w.opened());
    EXPECT_EQ(policy_of(tid), SCHED_FIFO);
    // A thread it makes meanwhile starts at the normal policy.
    int child_policy = -1;
    std::thread([&] { child_policy = policy_of(self_tid()); }).join();
    EXPECT_EQ(child_policy, SCHED_OTHER);
    EXPECT_FALSE(w.open());  // once
    w.close();
    EXPECT_EQ(policy_of(tid), SCHED_OTHER);
    errno = 0;
    EXPECT_EQ(::nice(0), own);
    EXPECT_FALSE(w.expired());
    EXPECT_GT(w.open_ms(), 0.0);
    EXPECT_FALSE(w.open());  // closed for good
    EXPECT_EQ(policy_of(tid), SCHED_OTHER);
  });
  t.join();
}

TEST(RtWindow, TheDeadlineEndsAWindowNobodyCloses) {
  if (!fifo_allowed()) GTEST_SKIP() << "SCHED_FIFO is not permitted to this process here";
  std::thread t([] {
    const pid_t tid = self_tid();
    RtWindow w(20ms);
    ASSERT_TRUE(w.arm(0, tid));
    ASSERT_TRUE(w.open());
    auto until = std::chrono::steady_clock::now() + 5s;
    while (policy_of(tid) == SCHED_FIFO && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(1ms);
    }
    EXPECT_EQ(policy_of(tid), SCHED_OTHER);
    EXPECT_TRUE(w.expired());
    EXPECT_GE(w.open_ms(), 20.0);
    EXPECT_LT(w.open_ms(), 5000.0);
  });
  t.join();
}

TEST(RtWindow, LeavesThreadsItDoesNotHaveAlone) {
  RtWindow gone(10s);
  // Thread 1 is not a thread of this process.
  ASSERT_TRUE(gone.arm(0, 1));
  EXPECT_FALSE(gone.open());
  EXPECT_FALSE(gone.opened());
  EXPECT_EQ(gone.open_ms(), 0.0);
  RtWindow bad(10s);
  EXPECT_FALSE(bad.arm(0, 0));
  RtWindow closed(10s);
  closed.close();
  EXPECT_FALSE(closed.arm(0, self_tid()));
}

// The gate may want the window open before the thread is known (a live branch's first pass can
// arrive before the migration thread is found): open() then waits for arm(), or for close().
TEST(RtWindow, AnOpenBeforeTheArmingWaitsForIt) {
  if (!fifo_allowed()) GTEST_SKIP() << "SCHED_FIFO is not permitted to this process here";
  std::thread t([] {
    const pid_t tid = self_tid();
    RtWindow w(10s);
    std::thread armer([&] {
      std::this_thread::sleep_for(50ms);
      EXPECT_TRUE(w.arm(0, tid));
    });
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_TRUE(w.open(10s));
    const auto waited = std::chrono::steady_clock::now() - t0;
    armer.join();
    EXPECT_GE(waited, 50ms);
    EXPECT_LT(waited, 5s);
    EXPECT_EQ(policy_of(tid), SCHED_FIFO);
    w.close();
    EXPECT_EQ(policy_of(tid), SCHED_OTHER);
  });
  t.join();
}

TEST(RtWindow, AnOpenWaitingForTheArmingEndsOnCloseOrAfterItsWait) {
  RtWindow closed(10s);
  std::thread closer([&] {
    std::this_thread::sleep_for(50ms);
    closed.close();
  });
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(closed.open(10s));
  auto waited = std::chrono::steady_clock::now() - t0;
  closer.join();
  EXPECT_GE(waited, 50ms);
  EXPECT_LT(waited, 5s);
  EXPECT_FALSE(closed.opened());

  RtWindow never(10s);
  t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(never.open(30ms));
  waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 30ms);
  EXPECT_LT(waited, 5s);
  EXPECT_FALSE(never.opened());
  EXPECT_EQ(never.open_ms(), 0.0);
}

}  // namespace
}  // namespace forkd

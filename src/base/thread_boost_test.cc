#include "base/thread_boost.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>

namespace forkd {
namespace {

int nice_of(pid_t tid) {
  errno = 0;
  return ::getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
}

TEST(ThreadBoost, RaisesAThreadAndPutsItBack) {
  // A thread of its own, so that the test runner's nice is never touched.
  std::thread t([] {
    const pid_t tid = static_cast<pid_t>(::gettid());
    const int before = nice_of(tid);
    {
      ThreadBoost boost;
      if (!boost.raise(0, tid, BoostLevel{before - 5, 100'000})) {
        // Lowering nice needs CAP_SYS_NICE: without it nothing may have changed.
        EXPECT_EQ(nice_of(tid), before);
        return;
      }
      EXPECT_EQ(boost.raised(), 1u);
      EXPECT_EQ(nice_of(tid), before - 5);
      // A level above the thread's own is not a raise: it keeps the lower nice.
      EXPECT_TRUE(boost.raise(0, tid, BoostLevel{before + 3, 0}));
      EXPECT_EQ(nice_of(tid), before - 5);
    }
    EXPECT_EQ(nice_of(tid), before);
  });
  t.join();
}

TEST(ThreadBoost, RefusesThreadsOfOtherProcessesItDoesNotHave) {
  ThreadBoost boost;
  EXPECT_FALSE(boost.raise(0, 0, BoostLevel{-1, 0}));
  // Thread 1 is not a thread of this process.
  EXPECT_FALSE(boost.raise(0, 1, BoostLevel{-1, 0}));
  EXPECT_FALSE(boost.raise(::getpid(), 999'999'999, BoostLevel{-1, 0}));
  EXPECT_EQ(boost.raised(), 0u);
}

TEST(ThreadsNamed, FindsThreadsByTheirName) {
  std::thread t([] {
    pthread_setname_np(pthread_self(), "tb-named-test");
    const pid_t tid = static_cast<pid_t>(::gettid());
    auto found = threads_named(::getpid(), {"tb-named-test", "no-such-thread"});
    EXPECT_EQ(found, std::vector<pid_t>{tid});
  });
  t.join();
  EXPECT_TRUE(threads_named(::getpid(), {"tb-named-test"}).empty());
  EXPECT_TRUE(threads_named(999'999'999, {"x"}).empty());
}

}  // namespace
}  // namespace forkd

#include "base/proc_stat.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "base/files.h"

namespace forkd {
namespace {

TEST(ProcStat, FieldsCountedFromTheLastParenthesis) {
  // comm with a space and a ')' of its own; tpgid -1; utime 250, stime 50 ticks.
  auto s =
      parse_proc_stat("4242 (qemu) x (7) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->state, 'S');
  EXPECT_EQ(s->ppid, 17);
  EXPECT_EQ(s->utime_ticks, 250u);
  EXPECT_EQ(s->stime_ticks, 50u);
}

TEST(ProcStat, TruncatedOrGarbledTextIsNothing) {
  EXPECT_FALSE(parse_proc_stat("4242 (qemu) S 1 2 3"));
  EXPECT_FALSE(parse_proc_stat("no parenthesis at all"));
  EXPECT_FALSE(parse_proc_stat("1 (a) S 1 1 1 0 -1 0 0 0 0 0 x y"));
  EXPECT_FALSE(parse_proc_stat("1 (a)"));
  EXPECT_FALSE(parse_proc_stat(""));
}

TEST(ProcStat, ThisProcessHasItsParent) {
  auto s = read_proc_stat(::getpid());
  ASSERT_TRUE(s);
  EXPECT_EQ(s->ppid, ::getppid());
  EXPECT_FALSE(read_proc_stat(-1));
  EXPECT_FALSE(read_proc_stat(0));
}

TEST(ProcStat, SchedstatIsRunPlusWait) {
  EXPECT_EQ(parse_schedstat_busy_ns("126494999 26366593 577\n"), 152861592u);
  EXPECT_FALSE(parse_schedstat_busy_ns("126494999"));
  EXPECT_FALSE(parse_schedstat_busy_ns("x 1 2"));
  EXPECT_FALSE(parse_schedstat_busy_ns(""));
  EXPECT_FALSE(parse_schedstat_busy_ns("18446744073709551615 1 1"));  // the sum overflows
}

TEST(ProcStat, ThisProcessGetsBusierWhileItSpins) {
  auto before = process_busy_ns(::getpid());
  ASSERT_TRUE(before);
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(30);
  volatile uint64_t spins = 0;
  while (std::chrono::steady_clock::now() < until) spins = spins + 1;
  auto after = process_busy_ns(::getpid());
  ASSERT_TRUE(after);
  EXPECT_GE(*after - *before, 20'000'000u);  // 30 ms spun: ran, or waited for a CPU
  EXPECT_FALSE(process_busy_ns(-1));
  EXPECT_FALSE(process_busy_ns(0));
}

TEST(ProcStat, ThreadsOfAProcess) {
  const int tid = static_cast<int>(::gettid());
  auto mine = process_threads(::getpid());
  ASSERT_TRUE(mine);
  EXPECT_NE(std::find(mine->begin(), mine->end(), tid), mine->end());
  EXPECT_TRUE(thread_of(0, tid));
  EXPECT_TRUE(thread_of(::getpid(), tid));
  EXPECT_FALSE(thread_of(1, tid));  // not a thread of init
  EXPECT_FALSE(thread_of(-1, tid));
  EXPECT_FALSE(thread_of(0, 0));
  EXPECT_EQ(thread_dir(0, 5, "/x"), "/x/self/task/5");
  EXPECT_EQ(thread_dir(7, 5), "/proc/7/task/5");
  EXPECT_FALSE(process_threads(0));
  EXPECT_FALSE(process_threads(999'999'999));
  // Entries that are not thread ids are not threads.
  auto dir = TempDir::create("proctest");
  ASSERT_TRUE(dir);
  for (const char* e : {"/9/task/12", "/9/task/13", "/9/task/x1", "/9/task/14x"}) {
    ASSERT_TRUE(make_dirs(dir->path() + e));
  }
  auto fake = process_threads(9, dir->path());
  ASSERT_TRUE(fake);
  std::sort(fake->begin(), fake->end());
  EXPECT_EQ(*fake, (std::vector<int>{12, 13}));
}

}  // namespace
}  // namespace forkd

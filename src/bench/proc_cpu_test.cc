#include "bench/proc_cpu.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>

namespace forkd::bench {
namespace {

TEST(ProcCpu, UtimePlusStimeCountedFromTheLastParenthesis) {
  // comm with a space and a ')' of its own; utime 250, stime 50 ticks at 100 per second.
  std::string stat = "4242 (qemu) x (7) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9";
  auto s = parse_proc_stat_cpu_seconds(stat, 100);
  ASSERT_TRUE(s);
  EXPECT_DOUBLE_EQ(*s, 3.0);
}

TEST(ProcCpu, TruncatedOrGarbledTextIsNoFigure) {
  EXPECT_FALSE(parse_proc_stat_cpu_seconds("4242 (qemu) S 1 2 3", 100));
  EXPECT_FALSE(parse_proc_stat_cpu_seconds("no parenthesis at all", 100));
  EXPECT_FALSE(parse_proc_stat_cpu_seconds("1 (a) S 1 1 1 0 -1 0 0 0 0 0 x y", 100));
  EXPECT_FALSE(parse_proc_stat_cpu_seconds("1 (a) S 1 1 1 0 -1 0 0 0 0 0 1 1", 0));
}

TEST(ProcCpu, ThisProcessCountsWhatItBurns) {
  auto before = process_cpu_seconds(::getpid());
  ASSERT_TRUE(before);
  // Spins until the figure has grown by 50 ms (a loaded machine gives this process less than the
  // wall time), for 10 s at most.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  volatile unsigned long spin = 0;
  std::optional<double> after;
  do {
    for (int i = 0; i < 1000000; ++i) spin = spin + 1;
    after = process_cpu_seconds(::getpid());
    ASSERT_TRUE(after);
  } while (*after - *before < 0.05 && std::chrono::steady_clock::now() < until);
  EXPECT_GE(*after - *before, 0.05);
  EXPECT_FALSE(process_cpu_seconds(-1));
}

}  // namespace
}  // namespace forkd::bench

#include "bench/proc_cpu.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>

namespace forkd::bench {
namespace {

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

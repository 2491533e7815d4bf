#include "base/quiet.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>

namespace forkd {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

QuietWait fast_wait() {
  QuietWait w;
  w.window = milliseconds(20);
  w.budget = std::chrono::microseconds(500);
  w.poll = milliseconds(2);
  w.max = milliseconds(1000);
  return w;
}

TEST(Quiet, AnIdleCounterIsQuietAfterOneWindow) {
  auto r = wait_until_quiet([] { return std::optional<uint64_t>(42); }, fast_wait());
  EXPECT_TRUE(r.quiet);
  EXPECT_FALSE(r.gone);
  EXPECT_GE(r.waited_ms, 20);
  EXPECT_LT(r.waited_ms, 500);
}

// Busy (1 ms of busy time per ms) for the first 150 ms, then still: quiet one window after.
TEST(Quiet, WaitsOutABusySpell) {
  const auto start = Clock::now();
  auto busy = [&] {
    auto ms = std::chrono::duration_cast<milliseconds>(Clock::now() - start).count();
    return std::optional<uint64_t>(static_cast<uint64_t>(std::min<int64_t>(ms, 150)) * 1'000'000);
  };
  auto r = wait_until_quiet(busy, fast_wait());
  EXPECT_TRUE(r.quiet);
  EXPECT_GE(r.waited_ms, 170);
  EXPECT_LT(r.waited_ms, 800);
}

TEST(Quiet, AlwaysBusyGivesUpAtMax) {
  std::atomic<uint64_t> n{0};
  auto r = wait_until_quiet([&] { return std::optional<uint64_t>(n += 1'000'000); }, fast_wait());
  EXPECT_FALSE(r.quiet);
  EXPECT_FALSE(r.gone);
  EXPECT_GE(r.waited_ms, 1000);
  EXPECT_LT(r.waited_ms, 2000);
}

// Busy time below the budget within a window is quiet; at the budget it is not.
TEST(Quiet, TheBudgetIsPerWindow) {
  QuietWait w = fast_wait();
  w.max = milliseconds(300);
  std::atomic<uint64_t> n{0};
  // 2 ms poll, 20 ms window: about 10 samples a window, 10 µs each = ~100 µs < 500 µs.
  auto below = wait_until_quiet([&] { return std::optional<uint64_t>(n += 10'000); }, w);
  EXPECT_TRUE(below.quiet);
  auto above = wait_until_quiet([&] { return std::optional<uint64_t>(n += 500'000); }, w);
  EXPECT_FALSE(above.quiet);
}

TEST(Quiet, AGoneProcessEndsTheWait) {
  int calls = 0;
  auto r = wait_until_quiet(
      [&]() -> std::optional<uint64_t> {
        if (++calls > 3) return std::nullopt;
        return static_cast<uint64_t>(calls) * 10'000'000;
      },
      fast_wait());
  EXPECT_FALSE(r.quiet);
  EXPECT_TRUE(r.gone);
  EXPECT_EQ(calls, 4);
}

}  // namespace
}  // namespace forkd

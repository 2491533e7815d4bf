#include "base/quiet.h"

#include <deque>
#include <thread>
#include <utility>

namespace forkd {

QuietResult wait_until_quiet(const std::function<std::optional<uint64_t>()>& busy_ns,
                             const QuietWait& w) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto waited = [&] {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  };
  // Samples from the newest back to the last one at least a window old.
  std::deque<std::pair<Clock::time_point, uint64_t>> samples;
  const auto budget = static_cast<uint64_t>(w.budget.count());
  while (true) {
    auto now = Clock::now();
    auto busy = busy_ns();
    if (!busy) return QuietResult{false, true, waited()};
    samples.emplace_back(now, *busy);
    while (samples.size() > 1 && samples[1].first <= now - w.window) samples.pop_front();
    const auto& [oldest_at, oldest] = samples.front();
    // A sum that went down (a thread ended, and its time left the sum) is not quiet either:
    // something just happened there.
    if (oldest_at <= now - w.window && *busy >= oldest && *busy - oldest < budget) {
      return QuietResult{true, false, waited()};
    }
    if (now - start >= w.max) return QuietResult{false, false, waited()};
    std::this_thread::sleep_for(w.poll);
  }
}

}  // namespace forkd

#pragma once
// Waiting for a process to go quiet: its busy time (ran plus waited for a CPU, as
// process_busy_ns) grows by less than a budget over a whole window.
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>

namespace forkd {

struct QuietWait {
  std::chrono::milliseconds window{100};
  std::chrono::nanoseconds budget{500'000};  // busy time allowed within one window
  std::chrono::milliseconds poll{10};
  std::chrono::milliseconds max{3000};  // then it returns, quiet or not
};

struct QuietResult {
  bool quiet = false;
  bool gone = false;  // busy_ns gave nothing: the process ended
  double waited_ms = 0;
};

// Samples busy_ns every w.poll until the last w.window cost less than w.budget, w.max passed,
// or busy_ns returns nullopt.
QuietResult wait_until_quiet(const std::function<std::optional<uint64_t>()>& busy_ns,
                             const QuietWait& w);

}  // namespace forkd

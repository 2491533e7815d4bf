#include "log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>

namespace forkd::agent {

void log_line(std::string_view msg) {
  std::string line = "forkd-agent: ";
  line.append(msg.substr(0, 1024));
  line.push_back('\n');
  // One write() per line so concurrent lines do not interleave; best effort.
  ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
  (void)n;
}

void log_limited(std::string_view msg) {
  static std::atomic<int64_t> window_start{0};
  static std::atomic<int> count{0};
  constexpr int kPerSecond = 5;
  int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::steady_clock::now().time_since_epoch())
                    .count();
  int64_t start = window_start.load();
  if (now != start && window_start.compare_exchange_strong(start, now)) count.store(0);
  if (count.fetch_add(1) < kPerSecond) log_line(msg);
}

}  // namespace forkd::agent

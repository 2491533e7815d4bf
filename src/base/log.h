#pragma once
// Named spdlog loggers, one per subsystem, writing key=value lines to stderr.
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

// fmt 9 does not declare its formatter's one instantiation extern, so every translation unit
// that logs with arguments compiled all of fmt's formatting code again (about 4 s of CPU per
// file at -O2 -g). libfmt.so defines it (format.cc instantiates it): use that one.
#if defined(SPDLOG_FMT_EXTERNAL) && !defined(FMT_HEADER_ONLY) && FMT_VERSION >= 90000 && \
    FMT_VERSION < 100000
namespace fmt {
inline namespace v9 {
namespace detail {
extern template void vformat_to<char>(buffer<char>&, basic_string_view<char>,
                                      basic_format_args<FMT_BUFFER_CONTEXT(char)>, locale_ref);
}  // namespace detail
}  // namespace v9
}  // namespace fmt
#endif

namespace forkd {

// Sets the level for all loggers: from $FORKD_LOG (trace|debug|info|warn|error|off) when set,
// else default_level.
void init_logging(spdlog::level::level_enum default_level);

// The logger for a subsystem ("vmm", "engine", ...), created on first use.
std::shared_ptr<spdlog::logger> logger(const std::string& name);

// Lets through at most `burst` events per `period`, for log lines a guest or a client can
// trigger at will (STYLE.md: rate-limit them). Thread-safe.
class RateLimit {
 public:
  RateLimit(int burst, std::chrono::seconds period) : burst_(burst), period_(period) {}
  // True when this event may be logged. The first allowed event of a new period can report
  // how many were dropped before it (suppressed()).
  bool allow();
  uint64_t suppressed() const { return last_suppressed_.load(); }

 private:
  const int burst_;
  const std::chrono::seconds period_;
  std::mutex mu_;
  std::chrono::steady_clock::time_point window_start_{};
  int used_ = 0;
  uint64_t dropped_ = 0;
  std::atomic<uint64_t> last_suppressed_{0};
};

}  // namespace forkd

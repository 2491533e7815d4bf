#pragma once
// Monotonic time for measurements.
#include <chrono>

namespace forkd {

using SteadyClock = std::chrono::steady_clock;

// Milliseconds (fractional) from t until now.
inline double ms_since(SteadyClock::time_point t) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t).count();
}

}  // namespace forkd

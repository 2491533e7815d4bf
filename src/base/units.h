#pragma once
// Sizes for people to read.
#include <cstdint>
#include <cstdio>
#include <string>

namespace forkd {

// "12.3 MB" (decimal megabytes, one digit after the point).
inline std::string format_mb(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(bytes) / 1e6);
  return buf;
}

}  // namespace forkd

#include "bench/proc_cpu.h"

#include <unistd.h>

#include <cstdlib>
#include <string>

#include "base/files.h"

namespace forkd::bench {

std::optional<double> parse_proc_stat_cpu_seconds(const std::string& stat, long ticks_per_second) {
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so fields are counted
  // from the last ')'. utime and stime are fields 14 and 15, i.e. the 12th and 13th after it.
  auto close = stat.rfind(')');
  if (close == std::string::npos || ticks_per_second <= 0) return std::nullopt;
  const char* p = stat.c_str() + close + 1;
  unsigned long long v[13] = {};
  for (int i = 0; i < 13; ++i) {
    while (*p == ' ') ++p;
    if (*p == '\0') return std::nullopt;
    if (i == 0) {  // the state letter
      ++p;
      continue;
    }
    char* end = nullptr;
    v[i] = std::strtoull(p, &end, 10);
    if (end == p) return std::nullopt;
    p = end;
  }
  return static_cast<double>(v[11] + v[12]) / static_cast<double>(ticks_per_second);
}

std::optional<double> process_cpu_seconds(int pid) {
  if (pid <= 0) return std::nullopt;
  auto text = read_file("/proc/" + std::to_string(pid) + "/stat", 4096);
  if (!text) return std::nullopt;
  return parse_proc_stat_cpu_seconds(*text, ::sysconf(_SC_CLK_TCK));
}

}  // namespace forkd::bench

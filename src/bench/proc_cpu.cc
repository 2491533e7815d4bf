#include "bench/proc_cpu.h"

#include <unistd.h>

#include "base/proc_stat.h"

namespace forkd::bench {

std::optional<double> process_cpu_seconds(int pid) {
  auto s = read_proc_stat(pid);
  long ticks_per_second = ::sysconf(_SC_CLK_TCK);
  if (!s || ticks_per_second <= 0) return std::nullopt;
  return static_cast<double>(s->utime_ticks + s->stime_ticks) /
         static_cast<double>(ticks_per_second);
}

}  // namespace forkd::bench

#pragma once
// CPU time a process has used so far, from /proc/PID/stat: what the benches read before and after
// a window to say how much a VM cost while it idled.
#include <optional>

namespace forkd::bench {

// utime + stime of pid (all its threads), in seconds; nullopt when it is gone or unreadable.
std::optional<double> process_cpu_seconds(int pid);

}  // namespace forkd::bench

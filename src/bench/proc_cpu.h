#pragma once
// CPU time a process has used so far, from /proc/PID/stat: what the benches read before and after
// a window to say how much a VM cost while it idled.
#include <optional>
#include <string>

namespace forkd::bench {

// utime + stime of pid (all its threads), in seconds; nullopt when it is gone or unreadable.
std::optional<double> process_cpu_seconds(int pid);

// The same parse over the text of a /proc/PID/stat file (exposed for the unit test).
std::optional<double> parse_proc_stat_cpu_seconds(const std::string& stat, long ticks_per_second);

}  // namespace forkd::bench

#pragma once
// The fields of /proc/PID/stat that forkd reads: the parent (gc: is this QEMU our own child?) and
// the CPU time used so far (bench: what a VM cost while it idled).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace forkd {

struct ProcStat {
  char state = '?';
  int64_t ppid = 0;
  uint64_t utime_ticks = 0;  // clock ticks (sysconf(_SC_CLK_TCK) per second)
  uint64_t stime_ticks = 0;
};

// Parses the text of a /proc/PID/stat file: "pid (comm) state ppid ...", where comm may hold
// spaces and parentheses, so fields are counted from the last ')'. nullopt when the text stops
// before stime (field 15) or a number is not one.
std::optional<ProcStat> parse_proc_stat(std::string_view text);

// parse_proc_stat of /proc/PID/stat; nullopt when the process is gone or the file unreadable.
std::optional<ProcStat> read_proc_stat(int pid);

// The first two fields of a /proc/PID/task/TID/schedstat: ns the thread ran, and ns it waited,
// runnable, for a CPU. nullopt unless both are numbers.
std::optional<uint64_t> parse_schedstat_busy_ns(std::string_view text);

// The /proc directory of thread tid of process pid (pid 0: of this process, "self"), under proc
// (tests give a fake tree).
std::string thread_dir(int pid, int tid, const std::string& proc = "/proc");
// Whether tid is (still) a thread of process pid (pid 0: of this process).
bool thread_of(int pid, int tid, const std::string& proc = "/proc");
// The threads of process pid (its /proc/PID/task entries), at most 4096; nullopt when the
// process is gone.
std::optional<std::vector<int>> process_threads(int pid, const std::string& proc = "/proc");

// What every thread of PID has cost so far: ran plus waited for a CPU (parse_schedstat_busy_ns,
// summed over /proc/PID/task, at most 4096 threads read). A thread that is runnable but finds no
// CPU counts as busy, so a VM starved by a loaded host does not look idle. nullopt when the
// process is gone.
std::optional<uint64_t> process_busy_ns(int pid);

}  // namespace forkd

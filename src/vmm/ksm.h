#pragma once
// KSM (kernel samepage merging) for QEMU processes, FORKD_KSM=1. A QEMU launched with
// SpawnOptions::memory_merge has every anonymous page mergeable: ksmd finds pages equal to
// another process's (a child's heap, relocated library data, zero-filled buffers, guest pages
// written alike) and keeps one copy, copy-on-write. It costs ksmd's scanning CPU, and it opens
// the page-deduplication side channel (a guest that times its own writes learns whether some
// other sandbox holds a page it guessed), so it is off unless asked for.
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "base/error.h"

namespace forkd::vmm {

inline constexpr const char* kKsmSysfs = "/sys/kernel/mm/ksm";

// What the kernel's KSM reports (everything zero when it has none).
struct KsmState {
  bool present = false;        // the kernel has KSM
  bool running = false;        // ksmd scans (run = 1)
  uint64_t pages_shared = 0;   // merged pages kept
  uint64_t pages_sharing = 0;  // pages that map one of those (the pages saved)
  uint64_t full_scans = 0;
  uint64_t pages_to_scan = 0;  // ksmd's rate: this many pages...
  uint64_t sleep_ms = 0;       // ...then a sleep this long
};
KsmState read_ksm_state(const std::string& dir = kKsmSysfs);

// Empty when a process can be launched with all of its memory mergeable: the kernel has
// PR_SET_MEMORY_MERGE (Linux 6.4+) and a process launched so still has it after exec (checked
// once per forkd process, by launching grep on its own /proc/self/ksm_stat). Otherwise why not.
std::string ksm_unsupported_reason();

// "ksm_merge_any" of /proc/PID/ksm_stat: whether that process's memory is all mergeable
// (nullopt when unreadable).
std::optional<bool> process_merge_any(pid_t pid);

// The pid of the kernel's ksmd thread (nullopt without one).
std::optional<pid_t> ksmd_pid();

// Starts or stops ksmd (root; writes DIR/run).
Status set_ksmd_running(bool on, const std::string& dir = kKsmSysfs);
// Sets how many pages ksmd scans before each sleep (root; writes DIR/pages_to_scan).
Status set_ksmd_pages_to_scan(uint64_t pages, const std::string& dir = kKsmSysfs);

// For a measurement (root): ksmd running, and scanning pages_to_scan pages before each sleep when
// that is > 0, until restore_ksmd() sets back what this changed. Process-wide, so that the CLI's
// Ctrl-C teardown can call restore_ksmd() as well. Returns whether it started ksmd.
Result<bool> run_ksmd_for_measurement(int pages_to_scan, const std::string& dir = kKsmSysfs);
void restore_ksmd();

}  // namespace forkd::vmm

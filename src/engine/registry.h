#pragma once
// The sandboxes recorded under $FORKD_HOME/sandboxes/: listing and removal by any forkd process.
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "engine/config.h"

namespace forkd::engine {

struct SandboxInfo {
  std::string id;
  // running | unresponsive (QEMU runs but its agent stopped reading; see mark_unresponsive) |
  // exited | failed (its QEMU was killed for it: failure_reason "oom" past its memory limit)
  std::string state;
  std::string unresponsive_reason;  // why, when unresponsive
  std::string failure_reason;       // why, when failed
  bool alive() const { return state == "running" || state == "unresponsive"; }  // QEMU runs
  int pid = 0;
  nlohmann::json record;  // sandbox.json
  uint64_t uss_kib = 0;   // unique memory of its QEMU (smaps_rollup), 0 if unknown
  uint64_t pss_kib = 0;
  uint64_t rss_kib = 0;
};

// Every recorded sandbox (pool members excluded), sorted by creation time.
std::vector<SandboxInfo> list_sandboxes(const EngineConfig& cfg);

// Records in a sandbox's run dir that its agent stopped answering or reading (why: the error),
// so every forkd process lists it `unresponsive`; cleared once a new session is opened.
void mark_unresponsive(const std::string& run_dir, const std::string& why);
void clear_unresponsive(const std::string& run_dir);
bool marked_unresponsive(const std::string& run_dir);

// True when pid is a live QEMU whose command line names run_dir.
bool qemu_owns_dir(int pid, const std::string& run_dir);

// Whether a QEMU command line (NUL-separated) names a path under dir: at the start of an
// argument or of an option's value, never as the tail of a longer path.
bool cmdline_names_dir(std::string_view cmdline, const std::string& dir);

// Stops a sandbox (QMP quit, then SIGTERM/SIGKILL) and removes its run dir. kNotFound when the
// id is unknown.
Status remove_sandbox(const EngineConfig& cfg, const std::string& id);

// Resumes recorded sandboxes whose QEMU is alive but stopped: a branch interrupted by the death
// of its process (kill -9 during the pause) leaves its source so. forkd has no user-facing pause,
// so a stopped sandbox outside a pool is always such a leftover. Returns the ids resumed.
std::vector<std::string> resume_stopped_sandboxes(const EngineConfig& cfg);

// Memory of one process from /proc/<pid>/smaps_rollup, in KiB.
struct ProcMemory {
  uint64_t rss_kib = 0, pss_kib = 0, uss_kib = 0;
};
Result<ProcMemory> process_memory(int pid);

}  // namespace forkd::engine

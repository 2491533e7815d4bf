#pragma once
// Per-sandbox cgroups: one leaf per QEMU, <hierarchy>/<parent>/<name>, with its limits. Works on
// cgroup v2 (the unified hierarchy: <root>/cgroup.controllers lists the controllers) and on v1
// (one hierarchy per controller: <root>/memory, <root>/cpu, <root>/pids), which is what hybrid
// hosts give. The root is a parameter so that unit tests run over a fake tree.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"

namespace forkd::vmm {

// Host-side limits of one sandbox's QEMU (guest RAM included). Unset: no limit.
struct Limits {
  std::optional<uint64_t> memory_bytes;
  std::optional<double> cpus;  // a CPU quota in cores (0.5 = half a core)
  std::optional<int64_t> pids;
  bool empty() const { return !memory_bytes && !cpus && !pids; }
};

enum class CgroupVersion { kNone, kV1, kV2 };
std::string_view cgroup_version_name(CgroupVersion v);

struct CgroupLayout {
  CgroupVersion version = CgroupVersion::kNone;
  std::string root;                      // e.g. /sys/fs/cgroup
  std::vector<std::string> controllers;  // the ones forkd uses that exist: memory, cpu, pids
  std::string reason;                    // why none, when version is kNone
  bool has(std::string_view controller) const;
  // The hierarchy holding a controller: root on v2, root/<controller> on v1.
  std::string hierarchy(std::string_view controller) const;
};

// Looks at root (and, for v1, its per-controller mounts).
CgroupLayout detect_cgroups(const std::string& root = "/sys/fs/cgroup");

// The cgroup period forkd writes with a CPU quota, in microseconds.
inline constexpr int64_t kCpuPeriodUs = 100000;

class SandboxCgroup {
 public:
  // Creates the leaf in every hierarchy forkd uses (and parent, enabling the controllers on v2),
  // then writes the limits. A limit whose controller is absent is kUnavailable. On failure
  // nothing is left behind.
  static Result<SandboxCgroup> create(const CgroupLayout& layout, const std::string& parent,
                                      const std::string& name, const Limits& limits);
  // An existing leaf, from a sandbox's record (no file is touched).
  static SandboxCgroup existing(const CgroupLayout& layout, const std::string& parent,
                                const std::string& name);

  // The files (one per hierarchy) a new process joins by writing "0" (itself) to them, while it
  // is one thread: on v1 `tasks`, on v2 cgroup.procs. Moving its one thread through `tasks`
  // does not take the kernel's cgroup_threadgroup_rwsem, which a cgroup.procs write takes for
  // writing: the first such write after a quiet spell waits for an RCU grace period (rcu_sync),
  // measured at 5-20 ms of a lone fork's ~30 ms launch on the TCG hosts (perf trace). On v2 a
  // domain cgroup can only be joined through cgroup.procs.
  std::vector<std::string> join_files() const;
  // Kills of this cgroup's processes by the kernel's OOM killer (0 when unknown).
  uint64_t oom_kills() const;
  // Current memory use (bytes) and pids, 0 when unknown.
  uint64_t memory_current() const;
  // The leaf directories (one per hierarchy).
  const std::vector<std::string>& dirs() const { return dirs_; }
  // rmdir of every leaf; the processes must have exited (retries briefly while the kernel
  // finishes releasing them). Missing leaves are fine.
  Status remove() const;

 private:
  CgroupVersion version_ = CgroupVersion::kNone;
  std::vector<std::string> dirs_;
  std::string memory_dir_;
};

// Removes the leaves under <hierarchy>/<parent>/ that are empty and were made more than min_age
// ago (left by a forkd killed before it cleaned up; a leaf being set up for a launch is younger).
// A leaf with a process in it is refused by the kernel and stays. Returns how many went.
int sweep_stale_leaves(const CgroupLayout& layout, const std::string& parent,
                       std::chrono::seconds min_age);

// The limit files and values one sandbox gets on a layout: (file relative to its hierarchy's
// leaf, value) pairs, keyed by controller. Pure, for tests and `doctor`.
struct LimitWrite {
  std::string controller;
  std::string file;
  std::string value;
};
std::vector<LimitWrite> limit_writes(CgroupVersion version, const Limits& limits);

}  // namespace forkd::vmm

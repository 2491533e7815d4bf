#pragma once
// One sandbox's jail, engine side: before its QEMU starts, the run dir is opened to the jail
// group, the per-sandbox files QEMU writes are handed to its uid, and its cgroup is made with its
// limits (vmm/jail.h says what the jail is). The cgroup is named after the run dir
// (forkd/<basename>) and goes with it (remove_run_dir).
#include <nlohmann/json.hpp>
#include <string>

#include "base/error.h"
#include "vmm/cgroup.h"
#include "vmm/qemu_cmdline.h"

namespace forkd::engine {

inline constexpr const char* kCgroupParent = "forkd";
// Beside it: the CPU cgroup a branch lifts its pause's threads into (vmm/cpu_lift.h).
inline constexpr const char* kPauseCgroup = "forkd-pause";

// Limits as JSON ({"memory_mib", "cpus", "pids"}, unset ones null) and back.
nlohmann::json limits_json(const vmm::Limits& limits);
vmm::Limits limits_from_json(const nlohmann::json& j);
// Limits from request-style values: memory in MiB, cores, tasks; 0 leaves that one unset.
vmm::Limits limits_of(int64_t memory_mib, double cpus, int64_t pids);
// Each field of over that is set replaces base's.
vmm::Limits merge_limits(vmm::Limits base, const vmm::Limits& over);

// Opens $FORKD_HOME to the jail group (see prepare_home in engine/config.h): its top-level
// directories 02710 root:forkd-qemu, and the tags, images and caches already there group-
// readable. Done once per home per process (jail_vm calls it too, for engines whose caller did
// not prepare the home).
Status share_home_with_jail(const std::string& home);

// Jails the QEMU of vc, whose run dir is dir (call after its disk and memory are set): a fresh
// uid, its own cgroup with limits, and its files. Without the jail (not root, or FORKD_JAIL=off)
// QEMU runs as the caller: limits then still need cgroups, which only root can make here, so
// asking for limits is kUnavailable with the reason. Returns what sandbox.json records:
// {"jailed", "uid", "cgroup", "limits"}.
struct EngineConfig;
Result<nlohmann::json> jail_vm(const EngineConfig& cfg, const std::string& dir,
                               const vmm::Limits& limits, vmm::VmConfig* vc);

// What SandboxInfo and `ps --json` show of a sandbox's isolation, from its sandbox.json:
// {"uid", "jailed", "limits", "network", "ports", "netns", "netns_network"} (null/none/[]
// where the record has nothing; records older than the jail have no uid). netns is the name of
// the child's own namespace, netns_network {address, host_address, allow_list} its addresses.
nlohmann::json isolation_info(const nlohmann::json& record);

// The boundary in force on this host, for `doctor` and GET /version: {"jailed", "reason",
// "user", "uid_range", "no_new_privs", "seccomp", "cgroups": {"version", "controllers"},
// "default_limits", "network_modes", "network", "qemu_version"}.
nlohmann::json boundary_info(const vmm::Limits& default_limits, const std::string& expose_address);

// Rewrites the limits of a running sandbox's cgroup (a pool member claimed with other limits).
Status apply_limits(const std::string& dir, const vmm::Limits& limits);

// Kills of the sandbox's QEMU by the kernel's OOM killer (0 without a cgroup).
uint64_t oom_kills(const std::string& dir);

// Removes the sandbox's cgroup (its QEMU must have exited) and its run dir.
Status remove_run_dir(const std::string& dir);

}  // namespace forkd::engine

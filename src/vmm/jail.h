#pragma once
// The jail every QEMU runs in when forkd runs as root: its own uid (one per sandbox, from a range
// no account uses), the group forkd-qemu and no other, no capabilities, PR_SET_NO_NEW_PRIVS, no
// real-time priority of its own (RLIMIT_RTPRIO 0), its own cgroup with the sandbox's limits, only
// the descriptors it is given, and QEMU's seccomp filter. What QEMU must open it gets as a
// descriptor (its sockets) or through the group (tag and image files are group-readable in
// directories only the group may traverse, never through world bits); what it must write (its
// disk overlay, a template's memory) is chowned to its uid.
//
// Why one uid per sandbox: under TCG, QEMU is the only boundary, and a QEMU that is escaped runs
// as its uid. Two QEMUs sharing a uid could ptrace each other or read each other's
// /proc/<pid>/mem; distinct uids cannot.
#include <sys/types.h>

#include <optional>
#include <string>

#include "base/error.h"
#include "vmm/cgroup.h"
#include "vmm/lean_qemu.h"
#include "vmm/static_qemu.h"

namespace forkd::vmm {

inline constexpr const char* kJailUser = "forkd-qemu";
// Per-sandbox uids: kJailUidBase + [0, kJailUidCount). Above the ranges systemd and subuid
// allocators hand out by default; no account owns them.
inline constexpr uid_t kJailUidBase = 1900000000u;
inline constexpr uint32_t kJailUidCount = 1000000u;
// The -sandbox options every QEMU gets.
inline constexpr const char* kSeccompOptions =
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

struct JailIdentity {
  uid_t uid = 0;
  gid_t gid = 0;
};

// What this host enforces for QEMU, probed once per process (see host_jail()).
struct HostJail {
  bool active = false;  // QEMUs run jailed (uid, group, no_new_privs)
  std::string reason;   // why not, when !active
  gid_t gid = 0;        // the forkd-qemu group
  CgroupLayout cgroups;
  std::string qemu_version;  // e.g. "10.0.2"
  // QEMU maps a read-only file copy-on-write (memory-backend-file readonly=on,rom=off: 8.2+).
  bool private_readonly_ram = false;
  // New TCG VMs get the RAM pad (QEMU before 9.0, see guest_ram_bytes in vmm/qemu_cmdline.h).
  bool tcg_ram_pad = true;
  // QEMU has the migration capability switchover-ack (has_switchover_ack in qemu_cmdline.h).
  bool switchover_ack = false;
  // Whether QEMU starts with forkd's stub libraries (vmm/lean_qemu.h), and why not.
  LeanQemuProbe lean;
  // forkd's static QEMU build (vmm/static_qemu.h), and why not; none when FORKD_QEMU names the
  // QEMU to run.
  StaticQemu static_qemu;
};

// Probes once: root, the forkd-qemu user and group (created with useradd/groupadd when missing),
// QEMU's version (the jail needs 8.2+, see private_readonly_ram), cgroups. FORKD_JAIL=off turns
// the jail off (for debugging; doctor says so). Thread-safe.
const HostJail& host_jail();

// A uid from the range no running process uses. Concurrent callers can race for one uid only if
// they draw the same random slot in the same instant (1 in a million per pair).
Result<JailIdentity> allocate_identity(const HostJail& jail);

// Hands a per-sandbox file (its disk overlay, its console log, a template's memory file) to the
// jailed uid: created empty when missing, owner uid:gid, mode 0600. No symlinks followed.
Status give_file(const std::string& path, const JailIdentity& id);

// Makes dir traversable (not listable) by the jail group: group forkd-qemu, mode 02710 (new
// entries inherit the group). Only for directories this process owns.
Status open_dir_to_group(const std::string& dir, gid_t gid);

// Puts an existing tree (images, tags, caches written before the jail existed) into the group:
// directories 02710, files g+r, for entries this process owns; symlinks are left alone.
void share_tree_with_group(const std::string& dir, gid_t gid);

// "10.0.2" from `qemu-system-x86_64 --version`; empty when it does not run.
std::string probe_qemu_version(const std::string& binary);
// The version in that output; empty when it has none.
std::string parse_qemu_version(const std::string& output);
// Whether version (major.minor[.patch]) is at least major.minor.
bool version_at_least(const std::string& version, int major, int minor);

}  // namespace forkd::vmm

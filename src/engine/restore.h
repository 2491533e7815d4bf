#pragma once
// Restoring one child from a tag: a QEMU started with -incoming defer maps the tag's memory
// file MAP_PRIVATE (copy-on-write), loads the device state, runs, and is given its own identity
// (`resumed`: fresh RNG seed credited to the guest kernel, wall clock, hostname, sandbox id and
// a random 128-bit epoch) before it is reported ready.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/dir_lock.h"
#include "base/error.h"
#include "engine/config.h"
#include "engine/sandbox.h"
#include "store/snapshot_meta.h"

namespace forkd::engine {

// A QEMU already started for a tag and waiting for its device state (see pool.h).
struct PrestartedVm {
  std::string id;
  std::string dir;
  vmm::VmProcess vm;
  vmm::QmpClient qmp;
  bool loaded = false;  // device state already loaded and the VM paused (a warm pool member)
  bool nic = false;     // started with a NIC (the tag has one), and -S
  // The run dir's lock, held until the VM is recorded (sandbox.json or a pool member file): a
  // VM whose launcher dies before that is an orphan that gc reaps (engine/gc.h).
  LockedDir lock;
  nlohmann::json jail;  // what sandbox.json records of its jail (engine/sandbox_jail.h)
  bool collapse_code_pages = false;  // vmm::collapses_code_pages of its QEMU
  // The step of its code buffer in small pages (vmm::windows_code_pages), or -1; and the tag's
  // hint file (engine/code_window.h) where finish_restore notes where TCG stands, or empty.
  int code_window = -1;
  std::string code_window_hint;
};

// A child's network, as asked of fork (see ForkOptions). Children of a tag without a NIC are
// always `none`; a `none` child of a tag with one keeps the NIC (it is part of the device state)
// with its link down, so the NIC drops every frame.
struct ChildNetwork {
  std::string mode;         // "none" | "outbound"; empty: the tag's
  std::vector<int> expose;  // guest TCP ports forwarded from listen_address (outbound only)
  std::string listen_address = "127.0.0.1";
  // forkd's per_child_netns (outbound only, root only): the child's QEMU runs in a network
  // namespace of its own with a tap NIC (vmm/netns.h); exposed ports then answer at the
  // namespace's address, and allow (A.B.C.D[/N][:PORT], needs netns) limits where it may go.
  bool netns = false;
  std::vector<std::string> allow;
};
inline constexpr size_t kMaxExposedPorts = 16;

// The mode a child of meta gets for net (kInvalidArgument when it cannot have it: outbound or
// exposed ports on a tag made without a NIC, a bad or repeated port, too many ports).
Result<std::string> resolve_child_network(const store::SnapshotMeta& meta, const ChildNetwork& net);

// The flat memory file children of meta map: the tag's memory, or a chain link's assembled
// memory (assembled and verified on first use).
Result<std::string> tag_memory_path(const EngineConfig& cfg, const store::SnapshotMeta& meta);

// Starts the QEMU of a future child of meta (everything up to, not including, the device-state
// load). The tag must have been verified.
// With net.netns, its namespace is made first (net must have been resolved).
Result<PrestartedVm> prestart_child(const EngineConfig& cfg, const store::SnapshotMeta& meta,
                                    const std::string& tag_dir, const vmm::Limits& limits,
                                    const ChildNetwork& net = {});

// Makes a prestarted VM a warm pool member: loads the device state, runs it just long enough to
// answer a provisional `resumed` and one exec (so the code paths of a claim are already
// translated, under TCG), then pauses it. Its real identity is set when it is claimed.
Status warm_up_prestarted(PrestartedVm& pre, const std::string& tag_dir);

// Loads the device state into a prestarted VM (or resumes a warm one), runs it and sets its
// identity and network (net.mode resolved, see resolve_child_network; exposed ports forwarded).
// With limits, they replace the ones the VM was started with (a claimed pool member). On
// failure the VM is killed and its run dir removed.
Result<std::unique_ptr<Sandbox>> finish_restore(PrestartedVm vm, const store::SnapshotMeta& meta,
                                                const std::string& tag_dir,
                                                std::optional<vmm::Limits> limits = std::nullopt,
                                                const ChildNetwork& net = {});

}  // namespace forkd::engine

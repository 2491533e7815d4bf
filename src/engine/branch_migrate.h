#pragma once
// The QEMU side of a branch: pre-copy migration of a running sandbox into a paused destination
// QEMU whose RAM is a memory file (share=on), which then saves its device state with
// x-ignore-shared. The source is resumed the moment the migration completes.
#include <functional>
#include <optional>
#include <string>

#include "base/error.h"
#include "engine/branch.h"
#include "engine/config.h"
#include "store/chain.h"

namespace forkd::engine {

struct MigrateRequest {
  std::string source_dir;  // the source sandbox's run dir (qmp.sock)
  pid_t source_pid = 0;    // its QEMU, checked to own source_dir; 0: unknown (no boost)
  int memory_mib = 256;
  int cpus = 1;
  std::string machine = "microvm";
  bool nic = false;          // the source has a NIC: so must the destination
  bool pit = true;           // the source has the PIT: so must the destination
  bool ioapic2 = true;       // likewise microvm's second IO-APIC
  std::string memory_file;   // created (preallocated) here; the destination's RAM
  std::string vmstate_file;  // the destination's device state goes here
  BranchMode mode = BranchMode::kLive;
  std::function<void(double pause_ms, BranchMode mode)> on_resumed;
  // Runs once memory_file holds the whole memory, on a thread of its own beside the
  // destination's last steps (QEMU flushes the file, then saves its device state and quits);
  // its error fails the migration.
  std::function<Status()> on_memory_complete;
  // A live branch into a chain link: no destination QEMU. forkd reads the source's stream
  // itself (engine/branch_receive.h), writes the pages that differ from this parent memory into
  // link_dir (memory.diff, memory.pages) and the rest of the stream into vmstate_file;
  // memory_file and on_memory_complete are not used. Ignored for a full branch.
  std::string link_parent_memory;
  std::string link_dir;
};

struct MigrateResult {
  uint64_t ram_bytes = 0;               // the source's RAM size, which the memory file has
  BranchMode mode = BranchMode::kLive;  // as asked, or kFull when live was unsafe (see .cc)
  double pause_ms = 0;                  // source STOP to RESUME, by QEMU's event timestamps
  double copy_ms = 0;                   // migrate command until completion
  // The pause in two: STOP until QEMU's `completed` event (last dirty pages, device state, and
  // with a destination QEMU the disk snapshot), and from that event until RESUME (event delivery,
  // a link's disk snapshot (SourceCopy::snapshot_after), our `cont`; or QEMU's own start).
  double switchover_ms = 0;
  double resume_ms = 0;
  // QEMU started the source again itself as the copy completed (x-resume-on-completion, see
  // engine/branch_source.cc), without forkd's `cont`.
  bool resumed_by_qemu = false;
  // A gated switch-over (engine/switchover_gate.h): when the reader let the source switch over,
  // from the call's start; 0 when the copy was not gated.
  double gate_ms = 0;
  // How long the source's migration thread ran at a real-time priority around the pause (from
  // the gate's opening, base/rt_window.h); 0 when it did not (not gated, or not permitted here).
  double rt_window_ms = 0;
  // With a disk: the source's layer frozen at the paused instant (the source went on on a new
  // overlay above it) and the raw base image at the bottom of its chain.
  std::string frozen_disk;
  std::string disk_base;
  std::optional<SpawnOptions::Credentials> disk_owner;  // SourceDisk::owner
  // The link written from the stream (link_parent_memory set), and the time from the copy's
  // end until its hashes were done.
  std::optional<store::LinkWrite> link;
  double link_ms = 0;
};

Result<MigrateResult> migrate_to_template(const EngineConfig& cfg, const MigrateRequest& req);

}  // namespace forkd::engine

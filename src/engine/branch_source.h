#pragma once
// The source's side of a branch, shared by both ways of receiving the copy (a destination QEMU,
// engine/branch_migrate.cc, or forkd reading the stream itself, engine/branch_receive.cc).
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/rt_window.h"
#include "base/subprocess.h"
#include "engine/branch_migrate.h"
#include "engine/migration.h"
#include "vmm/qmp_client.h"

namespace forkd::engine {

inline constexpr int kBranchMultifdChannels = 2;  // a full branch's copy, one per core here

// The source's disk as QEMU has it now: active image file and virtual size, and the uid and gid
// that own that file (a jailed QEMU's; none when forkd's own).
// QEMU's word is checked (engine/disk_checks.h): the active image must be a layer's regular file
// directly in source_dir. What the layers name as their backing files is QEMU's to write, so the
// tools that follow them (find_disk_base, the tag's rebase) run as the owner.
struct SourceDisk {
  std::string active;
  int64_t virtual_size = 0;
  std::optional<SpawnOptions::Credentials> owner;
};
Result<std::optional<SourceDisk>> query_disk(vmm::QmpClient& qmp, const std::string& source_dir);

// Sets res.disk_base from res.frozen_disk (nothing to do without a disk), following the chain as
// res.disk_owner.
Status find_disk_base(MigrateResult& res);

// The source's QMP and its exact RAM size (with or without the TCG pad, see
// vmm::guest_ram_bytes), checked against the record's MiB.
struct SourceConn {
  vmm::QmpClient qmp;
  uint64_t ram_bytes = 0;
};
Result<SourceConn> connect_source(const MigrateRequest& req);

// The mode a branch can use: under a QEMU before 9.0 with TCG, a source whose RAM is whole
// 256 KiB units (a VM of a tag saved before the RAM pad, or by a newer QEMU that needs none)
// would lose pages in a live copy (see vmm::guest_ram_bytes): it is copied stopped instead.
BranchMode usable_mode(BranchMode asked, bool tcg, uint64_t ram_bytes);

// The source's side of a copy into uri: its capabilities and parameters, the migration, its
// disk frozen at the paused instant, and `cont` the moment the copy completes. Fills the result's
// copy and pause figures (and frozen_disk) and calls req.on_resumed. On any failure the source is
// running again when this returns.
struct SourceCopy {
  vmm::QmpClient& qmp;
  const MigrateRequest& req;
  BranchMode mode;
  const std::optional<SourceDisk>& disk;
  bool multifd;
  bool ignore_shared;  // the stream's block list then carries each block's address
  // The source waits for the reader's word before it switches over (engine/switchover_gate.h).
  bool switchover_gate = false;
  // The disk's snapshot after the migration completed (the source still stopped, its images
  // inactive: QEMU supports an external snapshot then) instead of in a pause before the
  // switch-over. Only without a destination QEMU, which would open the frozen layer meanwhile.
  bool snapshot_after = false;
  // Opened by the gate's reader as the source switches over (with switchover_gate only; it waits
  // for the arming): copy_from_source arms it with the source's migration thread once the
  // pause's threads are lifted, or closes it when it finds none, and closes it once the source
  // runs again.
  RtWindow* pause_window = nullptr;
};
Status copy_from_source(const SourceCopy& c, const std::string& uri, MigrateResult& res);

}  // namespace forkd::engine

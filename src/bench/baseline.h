#pragma once
// What forking is measured against, run on the same image and warm-up as a tag:
// a cold boot plus the warm-up, and QEMU's plain save/restore with RAM in the migration stream.
#include "base/error.h"
#include "engine/config.h"
#include "store/snapshot_meta.h"

namespace forkd::bench {

struct ColdBootResult {
  double boot_ms = 0;    // QEMU start until the agent (and its warm Python worker) answered
  double warmup_ms = 0;  // the tag's warm-up steps
  double total_ms = 0;
};
Result<ColdBootResult> cold_boot_and_warm(const engine::EngineConfig& cfg,
                                          const store::SnapshotMeta& meta);

struct PlainRestoreResult {
  double save_ms = 0;           // stop + full save (RAM in the stream) + fsync of the file
  double save_no_fsync_ms = 0;  // the same save until QEMU completed the stream, no fsync
  uint64_t state_bytes = 0;     // size of that stream
  double launch_ms = 0;         // destination QEMU start
  double load_ms = 0;           // migrate-incoming of the full stream until running
  double agent_ms = 0;          // until the agent answered
  double total_ms = 0;          // launch + load + agent: the restore a user waits for
};
Result<PlainRestoreResult> plain_restore(const engine::EngineConfig& cfg,
                                         const store::SnapshotMeta& meta);

}  // namespace forkd::bench

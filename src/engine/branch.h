#pragma once
// BRANCH: pause a running sandbox as briefly as possible, snapshot it into a new tag, resume it.
//
// Both modes migrate the source's RAM into a paused destination QEMU whose RAM is the new tag's
// memory file (share=on, preallocated); the destination then saves its device state with
// x-ignore-shared and quits, which makes the file a template exactly like `forkd snapshot` makes.
//  - live: pre-copy. The source runs while its memory is copied; it stops only for the last dirty
//    pages and the device state (pause_ms = that interval).
//  - full: the source is stopped first and stays stopped for the whole copy.
// `diff` is accepted as an alias of live. A disk is snapshotted at the paused instant (the source
// continues on a new overlay). pause_ms is measured from QEMU's own STOP and RESUME events.
//
// A branch of a sandbox forked from tag A is a chain link: parent_tag A, parent_content_hash =
// A's memory content hash, and the link stores only the pages that differ from A.
#include <functional>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/config.h"
#include "engine/image_store.h"
#include "store/snapshot_meta.h"

namespace forkd::engine {

enum class BranchMode { kFull, kLive };

// "full" | "live" | "diff" (alias of live); kInvalidArgument otherwise.
Result<BranchMode> parse_branch_mode(const std::string& s);
const char* branch_mode_name(BranchMode m);

struct BranchOptions {
  std::string sandbox_id;
  std::string tag;  // empty: generated, branch-<source-id>-<unix-ts>-<hex>
  BranchMode mode = BranchMode::kLive;
  // Store the whole memory and record no parent (workspace state tags, which replace
  // themselves). Otherwise a source forked from a tag becomes a chain link of that tag.
  bool flat = false;
  bool replace = false;  // replace an existing tag of that name (workspace state tags)
  // On failure, keep the tag listed as "failed" (for wait:false callers, who poll for the
  // outcome) instead of clearing it (the caller got the error).
  bool keep_failed_record = false;
  // Warm-up steps run in the source since it was forked, appended to the parent's in the record.
  std::vector<std::string> warmup;
  // Called once, as soon as the source runs again (before the tag is written), with the
  // generated tag, the pause and the mode used. The daemon's wait:false answers from here.
  std::function<void(const std::string& tag, double pause_ms, BranchMode mode)> on_resumed;
};

struct BranchResult {
  store::SnapshotMeta meta;             // the committed tag
  BranchMode mode = BranchMode::kLive;  // as asked, or full when live was unsafe for the source
  double pause_ms = 0;                  // source vCPUs stopped (QEMU STOP to RESUME event)
  double copy_ms = 0;                   // migration start to completion
  double switchover_ms = 0;  // of the pause: STOP until QEMU's migration `completed` event
  // Of the pause: `completed` until RESUME (a link's disk snapshot, `cont`; or QEMU's own start).
  double resume_ms = 0;
  double gate_ms = 0;  // a gated switch-over: when the source was let switch over (0: not gated)
  double rt_window_ms = 0;       // MigrateResult::rt_window_ms
  bool resumed_by_qemu = false;  // QEMU resumed the source itself (MigrateResult::resumed_by_qemu)
  double total_ms = 0;           // call start to tag committed
  // Steps of total_ms: the whole migration (destination start until it saved its device state
  // and quit), the memory step (link: compare, write, hash; flat: fsync; it runs beside the
  // end of the migration), the other files' fsync and hash, and the commit.
  double migrate_ms = 0, memory_ms = 0, files_ms = 0, commit_ms = 0;
  uint64_t link_bytes = 0;  // bytes of memory stored by the tag (dirty set for a link)
  // After the commit, outside total_ms: the source's frozen disk layer folded into the one below
  // (engine/disk_fold.h; false when there was none of the sandbox's own below it).
  double fold_ms = 0;
  bool folded = false;
};

// Branches a running sandbox. The caller may hold an agent connection to it; its children's
// first request is then a little slower (their guest saw a host connected at the pause and
// notices ours as a new one, see finish_restore), which is why the daemon and the CLI let
// theirs go first.
// The source keeps running whatever happens (on any failure after
// it was stopped, it is resumed before the error is returned), and no partial tag is left.
// While the call runs the tag is listed with status "writing" (a pending record); with
// keep_failed_record a failure leaves status "failed" until the tag is deleted.
// Errors: kNotFound (sandbox), kAlreadyExists (tag exists or a branch of it is in flight),
// kInvalidArgument (tag), kQemuFailed / kTimeout / kNoSpace.
Result<BranchResult> branch_sandbox(const EngineConfig& cfg, const BranchOptions& opts);

// `forkd snapshot --from TAG --tag NEW --exec CMD`: forks one child of from_tag, runs the
// warm-up in it (shell commands, then Python), branches it into new_tag (a link of from_tag) and
// removes the child, whatever happened.
struct SnapshotFromOptions {
  std::string from_tag;
  std::string new_tag;
  std::vector<std::string> exec;
  std::vector<std::string> eval;
  BranchMode mode = BranchMode::kLive;
  ProgressFn progress;
};
Result<BranchResult> snapshot_from(const EngineConfig& cfg, const SnapshotFromOptions& opts);

// The generated tag for a branch of sandbox id (fits the tag regex).
std::string generate_branch_tag(const std::string& sandbox_id);

}  // namespace forkd::engine

#pragma once
// The tags under $FORKD_HOME/snapshots/. A tag directory appears only by an atomic rename of a
// fully written, fsynced staging directory (.staging-<tag>-<pid>), so a crash never leaves a
// half-written tag that looks complete. Files in a ready tag are never written again.
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "store/snapshot_meta.h"

namespace forkd::store {

// A tag being written by a branch (status writing) or whose write failed (status failed). Kept
// in .pending-<tag>.json beside the tags so every process lists it; the tag directory itself
// appears only when the write commits.
struct PendingTag {
  std::string tag;
  std::string status = "writing";  // writing | failed
  std::string error;               // why it failed
  std::string branched_from;
  double pause_ms = 0;
  int64_t created_at = 0;
  int pid = 0;  // the writer; a writing record whose writer is gone reads as failed
};

class SnapshotStore {
 public:
  explicit SnapshotStore(std::string home);

  std::string root() const { return root_; }
  // The directory of a tag; the tag must already be validated.
  std::string dir(const std::string& tag) const { return root_ + "/" + tag; }

  // kInvalidArgument for names outside ^[A-Za-z0-9_-]{1,64}$.
  static Status validate_tag(const std::string& tag);

  bool exists(const std::string& tag) const;
  // Ready tags, sorted.
  std::vector<SnapshotMeta> list() const;
  // Loads snapshot.json. An unknown tag is kNotFound listing the known tags.
  Result<SnapshotMeta> load(const std::string& tag) const;

  // Checks every file against snapshot.json before a restore: sizes always (a truncated memory
  // file must be an error, never a SIGBUS), the vmstate hash always (QEMU parses it), and the
  // other hashes once per file version: a file whose inode, size, mtime and ctime match the
  // stamp of its last full verification is not hashed again.
  Status verify(const SnapshotMeta& meta) const;

  // A fresh staging directory for tag, owned by this process.
  Result<std::string> stage(const std::string& tag) const;
  // Hashes the files listed in meta.files (filling size and sha256), records verification
  // stamps, writes snapshot.json and renames staging into place. With replace, an existing tag
  // is swapped out (children running from it keep their mappings).
  Status commit(const std::string& staging, SnapshotMeta meta, bool replace) const;
  Status remove(const std::string& tag) const;
  // Claims tag for a write: kAlreadyExists when the tag is being written, or exists (unless
  // replace).
  Status begin_pending(const PendingTag& p, bool replace = false) const;
  Status update_pending(const PendingTag& p) const;
  void end_pending(const std::string& tag) const;
  std::optional<PendingTag> pending(const std::string& tag) const;
  std::vector<PendingTag> list_pending() const;

  // Removes staging directories whose owner process is gone.
  void cleanup_stale() const;

 private:
  Status record_stamp(const std::string& tag_dir, const std::string& role,
                      const std::string& sha) const;
  bool stamp_matches(const std::string& tag_dir, const std::string& role,
                     const std::string& sha) const;
  std::string root_;
};

}  // namespace forkd::store

#pragma once
// The tags under $FORKD_HOME/snapshots/. A tag directory appears only by an atomic rename of a
// fully written, fsynced staging directory (see TagWrite, which every writer uses), so a crash
// never leaves a half-written tag that looks complete. Files in a ready tag are never written
// again. Each tag has a lock (.lock-<tag>, a flock) that its writers and its remover hold;
// leftovers of a tag (.staging-, .old-, .removing-<tag>-<hex>) are removed only under it.
#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "base/dir_lock.h"
#include "base/error.h"
#include "store/snapshot_meta.h"

namespace forkd::store {

// Files of a ready tag: read-only, for the owner and the group (a tag's memory is the guest's RAM,
// secrets loaded during warm-up included). The group is the QEMU jail's (engine/config.h), which
// reads tags copy-on-write; without the jail $FORKD_HOME admits no one else.
inline constexpr mode_t kTagFileMode = 0440;

// The size and SHA-256 of the file at path, as a tag records them (SnapshotMeta::files).
Result<FileEntry> hash_file_entry(const std::string& path);

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
  int pid = 0;  // the writer (informational); liveness is the tag's lock, not the pid
};

class SnapshotStore {
 public:
  explicit SnapshotStore(std::string home);

  std::string root() const { return root_; }
  // Where links' assembled memories are cached (store/chain.h's MemoryResolver).
  std::string assembled_dir() const { return home_ + "/cache/assembled"; }
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

  // The lock file of a tag (TagWrite and remove() hold it).
  std::string lock_path(const std::string& tag) const { return root_ + "/.lock-" + tag; }
  // Takes tag's lock (kAlreadyExists when another operation holds it) and removes the tag's
  // leftovers of earlier, dead writers.
  Result<FileLock> lock_tag(const std::string& tag) const;
  // lock_tag, retried for up to wait while another operation holds it.
  Result<FileLock> lock_tag_waiting(const std::string& tag, std::chrono::milliseconds wait) const;
  // A fresh, uniquely named staging directory for tag. The caller holds the tag's lock.
  Result<std::string> make_staging(const std::string& tag) const;
  // Hashes the files listed in meta.files (filling size and sha256), records verification
  // stamps, writes snapshot.json and renames staging into place (see TagWrite::commit, the only
  // caller; it holds the tag's lock). A chain link is put in place under its parent's lock too,
  // once the parent is found unchanged (kFailedPrecondition if it was removed or replaced
  // meanwhile): a removal of the parent, which checks dependents under that lock, sees it.
  // With hashes_known, meta.files already holds the hashes (the caller hashed the bytes as it
  // wrote them): only sizes are checked.
  Status commit(const std::string& staging, SnapshotMeta meta, bool replace,
                bool hashes_known = false) const;
  // Removes a tag (under its lock; kAlreadyExists while it is being written). With
  // refuse_dependents, a tag that is a chain link's parent is kept (kFailedPrecondition naming
  // them), checked under the lock, so a link being committed cannot slip in between.
  Status remove(const std::string& tag, bool refuse_dependents = false) const;
  // Records the content hash of link, committed with it pending (SnapshotMeta::content_pending),
  // under the tag's lock. kFailedPrecondition when the tag is no longer that link (replaced
  // meanwhile); a record that already holds a hash must hold this one (kChecksumMismatch).
  Status record_content_hash(const SnapshotMeta& link, const std::string& sha256) const;
  // Lists tag as being written (status "writing") until end_pending. The caller holds the
  // tag's lock (a TagWrite); kAlreadyExists when the tag exists, unless replace.
  Status begin_pending(const PendingTag& p, bool replace = false) const;
  // durable: flushed to disk; otherwise only replaced atomically (progress that a crash may lose).
  Status update_pending(const PendingTag& p, bool durable = true) const;
  void end_pending(const std::string& tag) const;
  std::optional<PendingTag> pending(const std::string& tag) const;
  std::vector<PendingTag> list_pending() const;

  // Settles what dead writers left: removes the leftovers of every tag whose lock is free, and
  // turns the pending record of a write whose writer died (status still "writing", lock free)
  // into a lasting "failed" one, cleared by remove(). Returns how many entries it changed.
  int cleanup_stale() const;

 private:
  // digest: the file's FileEntry::digest().
  Status record_stamp(const std::string& tag_dir, const std::string& role,
                      const std::string& digest) const;
  bool stamp_matches(const std::string& tag_dir, const std::string& role,
                     const std::string& digest) const;
  std::string home_;
  std::string root_;
};

}  // namespace forkd::store

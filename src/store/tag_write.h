#pragma once
// One operation that writes a tag (snapshot, branch, compact; later unpack and pull). Correct by
// construction under concurrency:
//  - it holds the tag's lock (<snapshots>/.lock-<tag>, a flock) for its whole length, so two
//    writers of one tag never meet: the second is refused at once (kAlreadyExists);
//  - its staging dir (.staging-<tag>-<random>) is its own, and leftovers of earlier writers of
//    the tag are removed only by a holder of the tag's lock;
//  - the commit is one atomic rename: RENAME_NOREPLACE for a new tag, RENAME_EXCHANGE with the
//    old tag for a replace (then the old one is removed), so a crash at any point leaves the old
//    tag or the new one, never neither.
// Destroying a TagWrite that did not commit removes its staging dir; the lock goes with it.
#include <string>
#include <utility>

#include "base/dir_lock.h"
#include "base/error.h"
#include "store/snapshot_meta.h"
#include "store/snapshot_store.h"

namespace forkd::store {

class TagWrite {
 public:
  // Locks tag, refuses an existing one (kAlreadyExists) unless replace, removes the tag's
  // leftovers and creates a fresh staging dir.
  static Result<TagWrite> begin(const SnapshotStore& store, const std::string& tag, bool replace);

  TagWrite(TagWrite&& other) noexcept
      : store_(other.store_),
        tag_(std::move(other.tag_)),
        replace_(other.replace_),
        lock_(std::move(other.lock_)),
        staging_(std::exchange(other.staging_, {})) {}
  TagWrite& operator=(TagWrite&&) = delete;
  ~TagWrite();

  const std::string& tag() const { return tag_; }
  const std::string& staging() const { return staging_; }

  // Hashes the files of meta.files found in the staging dir, writes snapshot.json and puts the
  // tag in place atomically. A replace is refused (kFailedPrecondition, naming them) while the
  // old tag has dependents (chain links whose parent it is), since they would point at memory
  // that is gone. After a commit the object only holds the lock until destroyed.
  // hashes_known: see SnapshotStore::commit.
  Status commit(SnapshotMeta meta, bool hashes_known = false);

 private:
  TagWrite(const SnapshotStore& store, std::string tag, bool replace, FileLock lock,
           std::string staging);
  const SnapshotStore* store_;
  std::string tag_;
  bool replace_;
  FileLock lock_;
  std::string staging_;  // empty once committed (or moved from)
};

}  // namespace forkd::store

#include "store/tag_write.h"

#include "base/files.h"

namespace forkd::store {

Result<TagWrite> TagWrite::begin(const SnapshotStore& store, const std::string& tag, bool replace) {
  FORKD_TRY(SnapshotStore::validate_tag(tag));
  auto lock = store.lock_tag(tag);
  if (!lock) return tl::unexpected(lock.error());
  if (!replace && store.exists(tag)) {
    return make_error(ErrorCode::kAlreadyExists,
                      "tag " + tag + " already exists; use --force to replace it");
  }
  auto staging = store.make_staging(tag);
  if (!staging) return tl::unexpected(staging.error());
  return TagWrite(store, tag, replace, std::move(*lock), std::move(*staging));
}

TagWrite::TagWrite(const SnapshotStore& store, std::string tag, bool replace, FileLock lock,
                   std::string staging)
    : store_(&store),
      tag_(std::move(tag)),
      replace_(replace),
      lock_(std::move(lock)),
      staging_(std::move(staging)) {}

TagWrite::~TagWrite() {
  // Before the lock goes (members are destroyed after this body), so no one else can be
  // writing this tag's staging dirs meanwhile.
  if (!staging_.empty()) (void)remove_tree(staging_);
}

Status TagWrite::commit(SnapshotMeta meta, bool hashes_known) {
  if (staging_.empty()) return make_error(ErrorCode::kInternal, "tag write already committed");
  if (meta.tag != tag_) {
    return make_error(ErrorCode::kInternal, "commit of " + meta.tag + " by the writer of " + tag_);
  }
  FORKD_TRY(store_->commit(staging_, std::move(meta), replace_, hashes_known));
  staging_.clear();
  return {};
}

}  // namespace forkd::store

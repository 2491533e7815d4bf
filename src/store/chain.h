#pragma once
// Snapshot chains. A branch of a sandbox forked from tag A is a link of A: it stores only the
// memory pages that differ from A (memory.diff, a sparse file, plus the memory.pages bitmap) and
// names A and A's memory content hash. Children need one flat memory file to map, so the first
// spawn of a link assembles it (parent's assembled memory + the link's pages), verifies the
// content hash once and keeps it in $FORKD_HOME/cache/assembled; later spawns only stat it.
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "store/snapshot_meta.h"
#include "store/snapshot_store.h"

namespace forkd::store {

inline constexpr size_t kPageSize = 4096;
inline constexpr int kMaxChainDepth = 64;

struct ChainInfo {
  int depth = 0;                        // 0 for a base
  std::vector<std::string> ancestors;   // root first, parent last
  std::vector<std::string> dependents;  // tags whose parent is this tag, sorted
  std::string warning;                  // a missing parent, a changed parent, a cycle
};

// Walks the parents of meta (depth, ancestors, warning; dependents left empty: finding them
// reads every tag). A cycle or a missing parent ends the walk with a warning; it never loops.
ChainInfo walk_ancestors(const SnapshotStore& store, const SnapshotMeta& meta);

// walk_ancestors of tag plus its direct dependents. kNotFound only when tag itself is unknown.
Result<ChainInfo> chain_info(const SnapshotStore& store, const std::string& tag);

// Direct dependents (links whose parent_tag is tag), and every descendant, deepest first.
std::vector<std::string> direct_dependents(const SnapshotStore& store, const std::string& tag);
std::vector<std::string> all_descendants(const SnapshotStore& store, const std::string& tag);

// Result of writing a link's pages.
struct LinkWrite {
  std::string content_sha256;  // of the whole memory; empty when left pending
  uint64_t pages_changed = 0;
  uint64_t bytes_stored = 0;  // bytes allocated by memory.diff
  // Size and checksum of memory.diff (XXH3) and memory.pages (SHA-256), hashed from the bytes as
  // they were written (a commit may take them as known).
  FileEntry diff;
  FileEntry pages;
};

// Compares the whole memory at full_path with the parent's whole memory at parent_path (same
// size) and writes dir/memory.diff (sparse: changed pages at their offsets) and
// dir/memory.pages (one bit per page), both fsynced.
Result<LinkWrite> write_link(const std::string& full_path, const std::string& parent_path,
                             const std::string& dir);

// The last step of write_link and LinkReceiver::finish, once memory.diff is written and flushed:
// fills out's content hash, its two file entries and the diff's allocated bytes, and writes the
// page bitmap to pages_path, flushed.
Status finish_link(int diff_fd, uint64_t size, const std::string& content_sha256,
                   const std::string& diff_xxh3, const std::string& bitmap,
                   const std::string& pages_path, LinkWrite& out);

class MemoryResolver {
 public:
  // cache_dir: $FORKD_HOME/cache/assembled.
  MemoryResolver(const SnapshotStore& store, std::string cache_dir)
      : store_(store), cache_dir_(std::move(cache_dir)) {}

  // The flat memory file children of meta map: a base's memory file, or a link's assembled
  // memory (assembled and verified now if missing or changed). The meta must be verified. A
  // link whose content hash is pending gets it recorded by its assembly.
  Result<std::string> resolve(const SnapshotMeta& meta) const;
  // meta with its content hash: as it is, or (pending) after the link's memory was assembled
  // and the hash recorded, reloaded. Verifies a pending meta first.
  Result<SnapshotMeta> settle(const SnapshotMeta& meta) const;

  // Where a link's assembled memory lives (for a link whose content hash is pending, the name
  // its assembly locks).
  std::string assembled_path(const SnapshotMeta& meta) const;
  // Adopts full_path (the whole memory of a link, hash already known) as its assembled memory,
  // so the first spawn need not assemble it.
  Status adopt(const SnapshotMeta& meta, const std::string& full_path) const;
  // Removes a tag's assembled memory files (after the tag was deleted).
  void forget(const std::string& tag) const;

 private:
  Result<std::string> resolve_depth(const SnapshotMeta& meta, int depth) const;
  Result<SnapshotMeta> settle_depth(const SnapshotMeta& meta, int depth) const;
  // A pending link's record as it is now, when it has been settled meanwhile (the same diff).
  std::optional<SnapshotMeta> settled_since(const SnapshotMeta& meta) const;
  bool stamp_ok(const std::string& path, const std::string& sha) const;
  // boot_id: the data may not be on disk yet, so the stamp holds only while this boot lasts.
  Status stamp(const std::string& path, const std::string& sha,
               const std::string& boot_id = "") const;

  const SnapshotStore& store_;
  std::string cache_dir_;
};

}  // namespace forkd::store

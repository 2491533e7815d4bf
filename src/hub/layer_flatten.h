#pragma once
// Flattens a container image's layers (OCI/Docker layer tarballs) into one directory tree, the
// future guest rootfs. Layers come from any registry, so every archive is hostile: nothing is
// ever written outside the root, no device node is created, and sizes and counts are bounded.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "base/error.h"

namespace forkd::hub {

// Bounds over the whole image: they are checked against the FlattenStats accumulated across
// apply_layer calls, so pass the same stats for every layer of one image.
struct FlattenLimits {
  uint64_t max_total_bytes = 16ull << 30;  // declared data bytes of all entries (kNoSpace)
  uint64_t max_entries = 2'000'000;        // tar entries of all layers (kInvalidArgument)
  size_t max_path = 4096;                  // bytes of one entry's path or link target
};

// What the layers held; accumulates across apply_layer calls.
struct FlattenStats {
  uint64_t entries = 0;  // every tar entry seen
  uint64_t files = 0;
  uint64_t dirs = 0;
  uint64_t symlinks = 0;
  uint64_t hardlinks = 0;
  uint64_t whiteouts = 0;  // .wh.NAME, .wh..wh..opq and 0/0 character devices
  uint64_t bytes = 0;      // declared data bytes (file contents), as bounded by max_total_bytes
  uint64_t skipped_count = 0;
  // Entries not created, each with why ("dev/null: character device 1/3 not created"); holds
  // the first kMaxSkippedRecorded, skipped_count counts them all.
  std::vector<std::string> skipped;
};
inline constexpr size_t kMaxSkippedRecorded = 1000;

// Applies one layer (plain tar, tar+gzip or tar+zstd, told apart by magic bytes) on top of
// root_dir, which must exist (empty before the first layer). Layers must be applied in order,
// lowest first. OCI whiteouts are honoured: ".wh.NAME" removes NAME of lower layers and
// ".wh..wh..opq" removes a directory's lower-layer content, keeping what this layer adds.
//
// Paths are relative ("usr/bin/x" or "./usr/bin/x"); absolute paths, ".." components, empty
// names and paths longer than max_path are refused (kInvalidArgument, naming layer and entry).
// Every path is resolved beneath root_dir by the kernel (openat2 RESOLVE_IN_ROOT): a symlink in
// a parent position is resolved as if root_dir were "/" (as containerd does), so `etc -> /`
// can never lead out; the entry's own name is never followed, symlinks are created as given.
// Hard links must name a regular file already in the tree. Device nodes, FIFOs and sockets are
// not created (listed in stats->skipped). Owners come from the tar (the caller runs as root),
// modes keep setuid/setgid, mtimes are set.
//
// On error the tree is left half-applied: the caller must remove root_dir (files.h remove_tree).
// Not thread-safe for one root_dir; independent roots may be flattened concurrently.
Status apply_layer(const std::string& layer_path, const std::string& root_dir,
                   const FlattenLimits& limits, FlattenStats* stats);

}  // namespace forkd::hub

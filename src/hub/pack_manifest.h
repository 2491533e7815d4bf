#pragma once
// The manifest of a pack (and of a tag pushed to a registry): which tags it carries, root of the
// chain first, with their snapshot records, and for every file either its data (in chunks of
// kChunkBytes, in the stream that follows) or a reference to an identical file of an earlier tag
// or of a tag the receiver must already have (`requires`, from pack --since).
//
// A manifest comes from another host: from_json trusts nothing. It refuses a newer format by
// name, and checks tags, roles, sizes, hashes, the chain order (every parent comes before its
// link, so a loop cannot be expressed) and every reference.
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "store/snapshot_meta.h"

namespace forkd::hub {

inline constexpr int kPackFormat = 1;
// Largest file a pack may describe, and largest manifest accepted.
inline constexpr uint64_t kMaxPackFileBytes = 1ull << 40;
inline constexpr size_t kMaxManifestBytes = 16u << 20;

// Where a file's bytes are instead of in the stream: a file of another tag (earlier in the pack
// or required), or, with an empty tag, any file of the receiver with the same sha256 and size
// (a pack made --without-image leaves the image's root disk and kernel out this way).
struct FileRef {
  std::string tag;
  std::string role;
  bool external() const { return tag.empty(); }
};

struct PackTag {
  store::SnapshotMeta meta;             // files: every role with its size and checksum
  std::map<std::string, FileRef> refs;  // roles whose bytes are those of another tag's file
  // Roles whose data travels in the stream, in stream order.
  std::vector<std::string> data_roles() const;
};

struct PackRequirement {
  std::string tag;
  std::string content_hash;
};

struct PackManifest {
  int format = kPackFormat;
  int64_t created_at = 0;
  std::string created_by;  // "forkd <version>"
  std::vector<PackRequirement> requires_tags;
  std::vector<PackTag> tags;  // root first; the last one is the tag that was asked for

  nlohmann::json to_json() const;
  static Result<PackManifest> from_json(const nlohmann::json& j);
  // Logical bytes of the data that travels (refs excluded).
  uint64_t data_bytes() const;
  // The number of chunks a file of size bytes travels in.
  static uint64_t chunk_count(uint64_t size);
};

// The roles a tag directory may hold (store::snapshot_file_name knows their file names).
bool is_known_role(const std::string& role);

}  // namespace forkd::hub

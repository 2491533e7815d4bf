#pragma once
// A pack: one file (or pipe) holding a tag and the links of its chain a receiver lacks.
//
// Layout (little-endian):
//   "FORKDPK\n"  u32 format  u32 reserved  u64 manifest length  sha256 of the manifest (64 hex)
//   the manifest (JSON, see pack_manifest.h)
//   per chunk, in chunk_plan order: u64 blob length, sha256 of the blob (64 hex), the blob
//   end of file (anything after the last chunk is an error)
#include <cstdint>
#include <string>
#include <vector>

#include "base/error.h"
#include "hub/tag_chunks.h"
#include "store/snapshot_store.h"

namespace forkd::hub {

struct PackOptions {
  std::string tag;
  std::string since;   // pack only the links after this ancestor
  std::string output;  // a path, or "-" for stdout
  int threads = 0;     // 0: one per core
  ByteProgress progress;
  bool without_image = false;  // leave the image's files out (see build_manifest)
};

struct PackResult {
  PackManifest manifest;
  EncodeStats stats;
  uint64_t logical_bytes = 0;  // of the files whose data travels
  uint64_t pack_bytes = 0;
  double ms = 0;
};

// Writes the pack. A file is staged beside the output and renamed into place when complete, so
// a cut pack never has the output's name.
Result<PackResult> pack_tag(const store::SnapshotStore& store, const PackOptions& opts);

struct UnpackOptions {
  std::string input;    // a path, or "-" for stdin
  std::string new_tag;  // name for the pack's last tag
  int threads = 0;
  ByteProgress progress;
};

struct UnpackResult {
  AssembleResult tags;
  uint64_t pack_bytes = 0;
  double ms = 0;
};

Result<UnpackResult> unpack_file(const store::SnapshotStore& store, const UnpackOptions& opts);

// Reads only the header and manifest of a pack (for `forkd unpack --list`-style inspection and
// for tests).
Result<PackManifest> read_pack_manifest(const std::string& path);

}  // namespace forkd::hub

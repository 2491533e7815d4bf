#pragma once
// The two halves every transport of tags shares (a pack file, a registry):
//  - build_manifest + encode_chunks: a tag (and the links of its chain the receiver lacks) as a
//    manifest and an ordered sequence of chunk blobs;
//  - TagAssembler: the receiving side. It takes the chunk blobs in the same order, checks each
//    one's digest, decodes it into staged tag directories (zero pages become holes), hashes every
//    file in order, and commits the tags only when every byte matched; until then nothing is
//    visible, and a failure leaves nothing behind.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"
#include "hub/pack_manifest.h"
#include "store/snapshot_store.h"

namespace forkd::hub {

// One chunk of the data stream: file `role` of tag `tag`, bytes [offset, offset + length).
struct ChunkPos {
  size_t tag_index = 0;
  std::string role;
  uint64_t index = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
};
// Every chunk of the manifest's data files, in stream order.
std::vector<ChunkPos> chunk_plan(const PackManifest& m);

using ByteProgress = std::function<void(uint64_t done, uint64_t total)>;

// Same content: equal memory content hashes and the same files (role, size and checksum).
bool same_content(const store::SnapshotMeta& a, const store::SnapshotMeta& b);

// tag's chain, root first, tag last (kFailedPrecondition for a broken one).
Result<std::vector<std::string>> chain_of(const store::SnapshotStore& store,
                                          const std::string& tag);

// The manifest of tag and its ancestors, root first; with since, only the links after since
// (which must be an ancestor of tag), which the receiver must already have. Files equal to one
// earlier in the chain (or in since) travel as references. Every tag is verified first.
// With without_image, the image's files (root disk, kernel, initrd) travel as external
// references: the receiver must hold identical files already.
Result<PackManifest> build_manifest(const store::SnapshotStore& store, const std::string& tag,
                                    const std::string& since, bool without_image = false);

struct EncodeStats {
  uint64_t chunks = 0;
  uint64_t zero_pages = 0;
  uint64_t blob_bytes = 0;
};
// Reads and encodes every chunk of m's data files (threads at once; 0: one per core) and hands
// each blob with its lowercase hex sha256 to sink, in chunk_plan order.
using BlobSink =
    std::function<Status(const ChunkPos&, const std::string& blob, const std::string& sha256)>;
Result<EncodeStats> encode_chunks(const store::SnapshotStore& store, const PackManifest& m,
                                  int threads, const BlobSink& sink,
                                  const ByteProgress& progress = {});

struct AssembleResult {
  std::vector<std::string> created;  // tags committed, root first
  std::vector<std::string> present;  // tags this host already had (same content)
  uint64_t logical_bytes = 0;        // of the files written
};

class TagAssembler {
 public:
  // Checks m against this host (required tags present with their content, no clash with a tag
  // of other content), takes the tags' locks and stages them. new_tag renames the last tag.
  static Result<std::unique_ptr<TagAssembler>> begin(const store::SnapshotStore& store,
                                                     PackManifest m, const std::string& new_tag,
                                                     int threads, ByteProgress progress = {});
  ~TagAssembler();

  const PackManifest& manifest() const;
  // The chunks still expected, in order (chunk_plan of the manifest).
  const std::vector<ChunkPos>& plan() const;
  // The next chunk's blob; sha256 is what the sender claims (checked against the bytes).
  Status add_chunk(std::string blob, const std::string& sha256);
  // False when the next chunk's bytes are not needed: its tag is here already, or its file is
  // (an identical file of a verified tag, linked instead). A transport that can (a pull) then
  // skips fetching it with skip_chunk; one that cannot (a pack stream) adds it as usual.
  bool next_needed() const;
  Status skip_chunk();
  // After the last chunk: links the referenced files, checks every file's hash and commits the
  // tags root first (undoing earlier commits if a later one fails).
  Result<AssembleResult> finish();

 private:
  struct Impl;
  explicit TagAssembler(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace forkd::hub

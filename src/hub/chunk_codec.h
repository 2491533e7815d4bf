#pragma once
// One chunk of a tag file as a self-contained blob: the unit a pack stores and a registry holds
// as a layer. A chunk is at most kChunkBytes of a file; its zero pages travel as bits, the other
// pages as one zstd frame. Encoding is deterministic (one thread, a fixed level), so equal
// chunks give equal blobs and a registry stores them once.
//
// Blob layout (little-endian):
//   "FKC1"  u32 reserved (0)  u64 logical length
//   bitmap: one bit per 4 KiB page (the last page may be short), set = page is stored
//   one zstd frame: the stored pages, in order
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "base/error.h"

namespace forkd::hub {

inline constexpr uint64_t kChunkBytes = 16ull << 20;
inline constexpr uint64_t kChunkPage = 4096;
// A chunk blob can never be larger than this (header + bitmap + zstd's bound for kChunkBytes).
uint64_t max_chunk_blob_bytes();

// A fixed buffer of kChunkBytes, allocated once and reused (a fresh 16 MiB allocation costs a
// page fault per page, which dominated packing).
struct ChunkBuffer {
  std::unique_ptr<char[]> bytes = std::unique_ptr<char[]>(new char[kChunkBytes]);
  char* data() { return bytes.get(); }
  const char* data() const { return bytes.get(); }
};

// A decoded chunk: which pages are stored and their bytes, back to back.
struct DecodedChunk {
  uint64_t length = 0;  // logical bytes
  std::string present;  // one byte per page: 1 stored, 0 zero
  ChunkBuffer data;     // the stored pages, in order
  uint64_t stored = 0;  // bytes of data in use
  // Logical offset (within the chunk) and length of page i.
  uint64_t page_offset(uint64_t i) const { return i * kChunkPage; }
  uint64_t page_len(uint64_t i) const {
    return i + 1 < present.size() ? kChunkPage : length - i * kChunkPage;
  }
};

// Reusable (de)compression state; one per thread at a time.
class ChunkCodec {
 public:
  explicit ChunkCodec(int level = 3);
  ~ChunkCodec();
  ChunkCodec(const ChunkCodec&) = delete;
  ChunkCodec& operator=(const ChunkCodec&) = delete;

  // Encodes data (at most kChunkBytes) into blob. Stats: how many pages were zero.
  Status encode(std::string_view data, std::string* blob, uint64_t* zero_pages = nullptr);
  // Decodes a blob that must describe exactly expected_length logical bytes. Everything is
  // checked: magic, lengths, the bitmap, and that the frame holds exactly the stored pages.
  Status decode(std::string_view blob, uint64_t expected_length, DecodedChunk* out);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// True when all n bytes at p are zero.
bool all_zero(const char* p, size_t n);

}  // namespace forkd::hub

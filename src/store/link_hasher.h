#pragma once
// The two hashes of a chain link, computed on two threads of their own while write_link compares
// and writes: the content hash of the whole memory (SHA-256, 0.65 s per GiB here: links name
// their parent by it), and the checksum of memory.diff as written (the pages that differ from the
// parent's at their offsets, zeros elsewhere; XXH3-128, which only guards the file), so that the
// commit need not read the sparse diff file back (at 1 GiB that read and hash took ~1.9 s,
// measured).
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "base/files.h"
#include "base/xxh3.h"

namespace forkd::store {

// A memory file mapped for reading, and which of its pages are holes (never written, so zero).
// A hole is never read through the mapping: that would give it a page of memory.
struct MemView {
  const char* data = nullptr;
  std::vector<uint8_t> hole;  // one entry per page, 1 = hole; empty: no holes

  bool is_hole(size_t p) const { return p < hole.size() && hole[p] != 0; }
};

// The holes among the pages of fd's first `bytes` (SEEK_DATA / SEEK_HOLE); a page with any data
// is data. Empty when the file system cannot tell (then every page is data).
std::vector<uint8_t> hole_pages(int fd, uint64_t bytes);

class LinkHasher {
 public:
  static constexpr size_t kPage = 4096;

  // full and parent: n bytes each (a multiple of kPage); the views and their bytes stay valid and
  // unchanged until finish().
  // Starts the hashing (without threads, finish() does it all).
  LinkHasher(const MemView& full, const MemView& parent, size_t n);
  ~LinkHasher();  // joins
  LinkHasher(const LinkHasher&) = delete;
  LinkHasher& operator=(const LinkHasher&) = delete;

  struct Hashes {
    std::string content;  // SHA-256 of full
    std::string diff;     // XXH3-128 of full with the pages equal to parent's zeroed
  };
  Hashes finish();

  // Whether page p of full differs from the parent's: what makes a page part of the diff.
  static bool page_changed(const MemView& full, const MemView& parent, size_t p);

  static constexpr size_t kMaxChunk = 1 << 20;  // the zero buffer's size

 private:
  void hash_content();
  void hash_diff();
  void join();

  const MemView& full_;
  const MemView& parent_;
  size_t n_;
  Sha256 content_;
  Xxh3 diff_;
  // Not started (resources exhausted): finish() hashes inline.
  std::thread content_thread_;
  std::thread diff_thread_;
};

}  // namespace forkd::store

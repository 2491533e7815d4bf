#pragma once
// The two hashes of a chain link, computed on a second thread while write_link compares and
// writes the next chunk: the content hash of the whole memory, and the hash of memory.diff as
// written (the changed pages at their offsets, zeros elsewhere), so that the commit need not
// read the sparse diff file back (at 1 GiB that read and hash took ~1.9 s, measured).
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/files.h"

namespace forkd::store {

class LinkHasher {
 public:
  static constexpr size_t kPage = 4096;

  LinkHasher();
  ~LinkHasher();
  LinkHasher(const LinkHasher&) = delete;
  LinkHasher& operator=(const LinkHasher&) = delete;

  // Hands over n bytes of the whole memory (a multiple of kPage) and which of their pages
  // changed (changed.size() == n / kPage). Waits until the previous chunk is hashed: data must stay
  // valid until the next add() or finish(), so a caller alternates two buffers.
  void add(const char* data, size_t n, const std::vector<bool>& changed);
  struct Hashes {
    std::string content;  // SHA-256 of every byte added
    std::string diff;     // SHA-256 of the same bytes with unchanged pages zeroed
  };
  Hashes finish();

  static constexpr size_t kMaxChunk = 1 << 20;  // the zero buffer's size

 private:
  void hash(const char* data, size_t n, const std::vector<bool>& changed);
  void run();

  Sha256 content_;
  Sha256 diff_;
  std::mutex mu_;
  std::condition_variable cv_;
  const char* data_ = nullptr;  // the chunk waiting or being hashed; null when idle
  size_t n_ = 0;
  std::vector<bool> changed_;
  bool stop_ = false;
  std::thread thread_;  // not started (resources exhausted): add() hashes inline
};

}  // namespace forkd::store

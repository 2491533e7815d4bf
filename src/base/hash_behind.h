#pragma once
// A SHA-256 computed on a thread of its own, behind a producer that fills buffers in order: the
// producer take()s a free buffer, fills it, and give()s it back with its length; the thread
// hashes the buffers in the order given and frees them again. So reading and writing a chunk
// overlap the hashing of the ones before it. Without a thread (none could start), give() hashes
// at once.
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/files.h"

namespace forkd {

class HashBehind {
 public:
  // threaded = false: give() hashes at once (as when no thread can start; tests use it).
  HashBehind(size_t buffers, size_t buffer_bytes, bool threaded = true);
  ~HashBehind();  // stops and joins the thread (the digest is then lost)
  HashBehind(const HashBehind&) = delete;
  HashBehind& operator=(const HashBehind&) = delete;

  char* take();                    // a free buffer of buffer_bytes; waits for one
  void give(char* buf, size_t n);  // buf's first n bytes are the next to hash
  std::string finish();            // waits for every buffer given; the hex digest; call once

 private:
  void run();
  void stop();

  const size_t bytes_;
  std::unique_ptr<char[]> pool_;
  std::vector<char*> free_;
  std::deque<std::pair<char*, size_t>> queue_;
  bool done_ = false;  // no more buffers will be given
  std::mutex mu_;
  std::condition_variable cv_;
  Sha256 sha_;
  std::thread thread_;
};

}  // namespace forkd

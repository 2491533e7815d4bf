#include "base/hash_behind.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>

namespace forkd {
namespace {

// Chunks of every size up to the buffer's, through two buffers (so the producer waits for the
// thread), hash as the bytes do at once; likewise without the thread.
TEST(HashBehind, ChunksInOrderHashAsTheWhole) {
  for (bool threaded : {true, false}) {
    std::mt19937 rng(7);
    const size_t kBuf = 64 * 1024;
    HashBehind h(2, kBuf, threaded);
    std::string all;
    for (int i = 0; i < 300; ++i) {
      const size_t n = rng() % (kBuf + 1);
      char* b = h.take();
      for (size_t j = 0; j < n; ++j) b[j] = static_cast<char>(rng());
      all.append(b, n);
      h.give(b, n);
    }
    EXPECT_EQ(h.finish(), sha256_hex(all)) << "threaded " << threaded;
  }
}

// Destroyed without finish() (the producer failed half-way): it stops and joins.
TEST(HashBehind, DroppedHalfWayStops) {
  HashBehind h(3, 4096);
  for (int i = 0; i < 10; ++i) {
    char* b = h.take();
    std::memset(b, i, 4096);
    h.give(b, 4096);
  }
}

}  // namespace
}  // namespace forkd

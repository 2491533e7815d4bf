#pragma once
// Two SHA-256 digests of two messages of the same length, computed in one pass. With the x86 SHA
// extensions the two messages' rounds run interleaved on one core: a round's latency, not the
// unit's throughput, bounds a single SHA-256 stream, so two streams cost little more than one.
// Without them it falls back to two ordinary digests (base/files.h's Sha256), one after another.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "base/files.h"

namespace forkd {

class Sha256Pair {
 public:
  // Whether this CPU has what the interleaved path needs (SHA extensions, SSSE3, SSE4.1).
  static bool accelerated();

  // force_portable: the fallback even where the accelerated path exists (tests compare both).
  explicit Sha256Pair(bool force_portable = false);
  Sha256Pair(const Sha256Pair&) = delete;
  Sha256Pair& operator=(const Sha256Pair&) = delete;

  // Feeds n bytes of a to the first digest and n bytes of b to the second.
  void update(const void* a, const void* b, size_t n);
  // Finishes both digests (lowercase hex); call once.
  std::pair<std::string, std::string> hex();

 private:
  static constexpr size_t kBlock = 64;
  void compress(const uint8_t* a, const uint8_t* b, size_t blocks);

  bool fast_;
  // Fast path: the two states, a partial block of each, the bytes fed so far.
  uint32_t state_a_[8];
  uint32_t state_b_[8];
  uint8_t buf_a_[kBlock];
  uint8_t buf_b_[kBlock];
  size_t buffered_ = 0;
  uint64_t total_ = 0;
  // Fallback.
  std::unique_ptr<Sha256> slow_a_;
  std::unique_ptr<Sha256> slow_b_;
};

}  // namespace forkd

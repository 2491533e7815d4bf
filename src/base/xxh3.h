#pragma once
// XXH3-128 (the xxHash library's, header-only here): a non-cryptographic checksum at many GB/s,
// used where only a file's integrity is at stake and SHA-256 would sit on a critical path (a
// link's memory.diff, hashed between a branch's pause and its tag being ready). Not for content
// addresses or anything a forger could choose.
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace forkd {

class Xxh3 {
 public:
  Xxh3();
  ~Xxh3();
  Xxh3(const Xxh3&) = delete;
  Xxh3& operator=(const Xxh3&) = delete;
  void update(const void* data, size_t n);
  std::string hex();  // 32 lowercase hex digits, the canonical (big-endian) form

 private:
  struct State;
  std::unique_ptr<State> s_;
};

std::string xxh3_hex(std::string_view data);

}  // namespace forkd

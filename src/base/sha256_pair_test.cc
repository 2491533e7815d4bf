#include "base/sha256_pair.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "base/files.h"

namespace forkd {
namespace {

std::string sha256_of(const std::string& s) {
  Sha256 h;
  h.update(s.data(), s.size());
  return h.hex();
}

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(gen());
  return s;
}

// Feeds a and b (same size) in pieces whose sizes come from seed, so that every path through
// the partial-block buffer is taken.
std::pair<std::string, std::string> pair_digest(const std::string& a, const std::string& b,
                                                uint32_t seed, bool portable) {
  Sha256Pair p(portable);
  std::mt19937 gen(seed);
  size_t off = 0;
  while (off < a.size()) {
    size_t step = std::min<size_t>(a.size() - off, gen() % 3 == 0 ? gen() % 200 : gen() % 9000);
    p.update(a.data() + off, b.data() + off, step);
    off += step;
  }
  return p.hex();
}

TEST(Sha256Pair, BothDigestsMatchOpenSslAtEveryLengthAroundTheBlockEdges) {
  std::vector<size_t> sizes = {0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000};
  sizes.push_back((1u << 20) + 13);
  sizes.push_back(3u << 20);
  for (size_t n : sizes) {
    const std::string a = random_bytes(n, static_cast<uint32_t>(n));
    const std::string b = random_bytes(n, static_cast<uint32_t>(n) + 7);
    for (bool portable : {false, true}) {
      for (uint32_t seed : {1u, 2u}) {
        auto [da, db] = pair_digest(a, b, seed, portable);
        EXPECT_EQ(da, sha256_of(a)) << "size " << n << " portable " << portable;
        EXPECT_EQ(db, sha256_of(b)) << "size " << n << " portable " << portable;
      }
    }
  }
}

TEST(Sha256Pair, KnownDigests) {
  // FIPS 180-4's examples.
  Sha256Pair p;  // nothing fed: the empty message's digest
  std::string abc = "abc", xyz = "xyz";
  Sha256Pair q;
  q.update(abc.data(), xyz.data(), 3);
  auto [a, b] = q.hex();
  EXPECT_EQ(a, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(b, sha256_of(xyz));
  EXPECT_EQ(p.hex().first, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

}  // namespace
}  // namespace forkd

#include "hub/chunk_codec.h"

#include <gtest/gtest.h>

#include <random>

namespace forkd::hub {
namespace {

std::string mixed(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (size_t p = 0; p < n; p += kChunkPage) {
    if (rng() % 3 == 0) continue;  // a zero page
    for (size_t i = p; i < std::min(n, p + kChunkPage); i++) s[i] = static_cast<char>(rng() % 7);
  }
  return s;
}

std::string logical(const DecodedChunk& c) {
  std::string out;
  uint64_t at = 0;
  for (size_t i = 0; i < c.present.size(); i++) {
    uint64_t len = c.page_len(i);
    if (c.present[i]) {
      out.append(c.data.data() + at, len);
      at += len;
    } else {
      out.append(len, '\0');
    }
  }
  return out;
}

TEST(ChunkCodec, RoundTripsMixedZeroAndShortPages) {
  ChunkCodec codec;
  for (size_t n : {size_t{0}, size_t{1}, size_t{4095}, size_t{4097}, size_t{1} << 20,
                   static_cast<size_t>(kChunkBytes)}) {
    std::string data = mixed(n, static_cast<uint32_t>(n));
    std::string blob;
    uint64_t zeros = 0;
    ASSERT_TRUE(codec.encode(data, &blob, &zeros));
    DecodedChunk out;
    auto st = codec.decode(blob, n, &out);
    ASSERT_TRUE(st) << st.error().message();
    EXPECT_EQ(logical(out), data) << n;
  }
}

TEST(ChunkCodec, ZeroChunkIsTinyAndDeterministic) {
  ChunkCodec a, b;
  std::string zeros(kChunkBytes, '\0'), x, y;
  uint64_t z = 0;
  ASSERT_TRUE(a.encode(zeros, &x, &z));
  ASSERT_TRUE(b.encode(zeros, &y));
  EXPECT_EQ(z, kChunkBytes / kChunkPage);
  EXPECT_LT(x.size(), 1024u);
  EXPECT_EQ(x, y);
}

TEST(ChunkCodec, RefusesLies) {
  ChunkCodec codec;
  std::string data = mixed(3 * kChunkPage + 100, 7), blob;
  ASSERT_TRUE(codec.encode(data, &blob));
  DecodedChunk out;
  EXPECT_FALSE(codec.decode(blob, data.size() + 1, &out));  // length differs from the claim
  std::string bad = blob;
  bad[0] = 'X';
  EXPECT_FALSE(codec.decode(bad, data.size(), &out));  // magic
  bad = blob;
  bad[5] = 1;
  EXPECT_FALSE(codec.decode(bad, data.size(), &out));  // reserved
  bad = blob;
  bad[16] = static_cast<char>(bad[16] ^ 0x01);  // a page flips between stored and zero
  EXPECT_FALSE(codec.decode(bad, data.size(), &out));
  bad = blob;
  bad[16] = static_cast<char>(bad[16] | 0x80);  // a bit past the last page
  EXPECT_FALSE(codec.decode(bad, data.size(), &out));
  EXPECT_FALSE(codec.decode(blob.substr(0, blob.size() - 3), data.size(), &out));  // cut
  EXPECT_FALSE(codec.decode(blob + "x", data.size(), &out));                       // extra
  EXPECT_FALSE(codec.decode(blob.substr(0, 10), data.size(), &out));
  EXPECT_FALSE(codec.decode("", 0, &out));
  std::string huge = blob;
  huge[8] = 0;
  huge[15] = 0x7f;  // a length far beyond a chunk
  EXPECT_FALSE(codec.decode(huge, data.size(), &out));
}

TEST(ChunkCodec, RandomGarbageNeverCrashes) {
  ChunkCodec codec;
  std::mt19937 rng(1);
  std::string data = mixed(64 * 1024, 3), blob;
  ASSERT_TRUE(codec.encode(data, &blob));
  DecodedChunk out;
  for (int i = 0; i < 2000; i++) {
    std::string b = blob;
    for (int k = 0; k < 4; k++) b[rng() % b.size()] = static_cast<char>(rng());
    auto st = codec.decode(b, data.size(), &out);
    if (st) {
      EXPECT_EQ(logical(out).size(), data.size());
    }
  }
}

TEST(ChunkCodec, AllZero) {
  std::string z(1000, '\0');
  EXPECT_TRUE(all_zero(z.data(), z.size()));
  z[999] = 1;
  EXPECT_FALSE(all_zero(z.data(), z.size()));
  z[999] = 0;
  z[3] = 1;
  EXPECT_FALSE(all_zero(z.data(), z.size()));
}

}  // namespace
}  // namespace forkd::hub

#include "base/xxh3.h"

#include <gtest/gtest.h>

#include <string>

namespace forkd {
namespace {

TEST(Xxh3, GivesTheReferenceDigestOfNothing) {
  // XXH3-128 of no bytes, as the xxHash project's own tests list it.
  EXPECT_EQ(xxh3_hex(""), "99aa06d3014798d86001c324468d497f");
}

TEST(Xxh3, PiecesHashAsTheWhole) {
  std::string data;
  for (int i = 0; i < 300000; ++i) data.push_back(static_cast<char>(i * 7 + i / 251));
  Xxh3 pieces;
  for (size_t at = 0, step = 1; at < data.size(); at += step, step = step * 3 + 1) {
    pieces.update(data.data() + at, std::min(step, data.size() - at));
  }
  const std::string whole = xxh3_hex(data);
  EXPECT_EQ(pieces.hex(), whole);
  EXPECT_EQ(whole.size(), 32u);
  data[123456] ^= 1;
  EXPECT_NE(xxh3_hex(data), whole);
}

}  // namespace
}  // namespace forkd

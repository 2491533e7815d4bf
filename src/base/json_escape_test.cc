#include "base/json_escape.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

namespace forkd {
namespace {

// What nlohmann::json writes for s (the daemon's other bodies), without the quotes.
std::string reference(const std::string& s) {
  std::string d = nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return d.substr(1, d.size() - 2);
}

std::string escaped(const std::string& s) {
  std::string out;
  append_json_escaped(out, s);
  return out;
}

TEST(JsonEscape, MatchesNlohmannOnAwkwardInput) {
  const std::vector<std::string> cases = {
      "",
      "plain text\n",
      std::string(5, '\0'),
      "quote \" backslash \\ tab \t bell \x07 del \x7f",
      "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80",  // valid 2-, 3- and 4-byte sequences
      "\xC3",                                       // truncated
      "\xC0\xAF \xE0\x80\xAF \xED\xA0\x80",         // overlong forms, a surrogate
      "\xF4\x90\x80\x80 \xFF\xFE",                  // beyond U+10FFFF, never valid
      "\xE2\x82",                                   // cut before its end
  };
  for (const auto& s : cases) {
    EXPECT_EQ(escaped(s), reference(s)) << "input of " << s.size() << " bytes";
    EXPECT_EQ(json_escaped_size(s), reference(s).size());
  }
}

TEST(JsonEscape, MatchesNlohmannOnRandomBytes) {
  std::mt19937 rng(11);
  for (int round = 0; round < 2000; ++round) {
    std::string s(static_cast<size_t>(rng() % 64), '\0');
    for (auto& c : s) c = static_cast<char>(rng());
    ASSERT_EQ(escaped(s), reference(s)) << "round " << round;
    ASSERT_EQ(json_escaped_size(s), reference(s).size());
  }
}

TEST(JsonEscape, NulsAreSixBytesEach) {
  EXPECT_EQ(json_escaped_size(std::string(1000, '\0')), 6000u);
}

TEST(JsonEscape, PrefixFitsAndEndsOnACharacter) {
  std::string s = "ab\xE2\x82\xAC\ncd";  // a, b, euro (3 bytes), \n (2 escaped), c, d
  EXPECT_EQ(json_escaped_prefix(s, 0), 0u);
  EXPECT_EQ(json_escaped_prefix(s, 2), 2u);
  EXPECT_EQ(json_escaped_prefix(s, 4), 2u) << "the euro sign is not split";
  EXPECT_EQ(json_escaped_prefix(s, 5), 5u);
  EXPECT_EQ(json_escaped_prefix(s, 6), 5u) << "\\n is two bytes";
  EXPECT_EQ(json_escaped_prefix(s, 7), 6u);
  EXPECT_EQ(json_escaped_prefix(s, 1000), s.size());
  std::string nuls(10, '\0');
  EXPECT_EQ(json_escaped_prefix(nuls, 59), 9u);
}

}  // namespace
}  // namespace forkd

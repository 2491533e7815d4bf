#include "base/json_get.h"

#include <gtest/gtest.h>

namespace forkd::json {
namespace {

TEST(JsonGet, WrongTypesAndRangesNeverThrow) {
  Json j = {{"s", "x"}, {"i", -3}, {"u", 5000000000ull}, {"b", true}, {"f", 1.5}, {"n", nullptr}};
  EXPECT_EQ(get_string(j, "s").value_or(""), "x");
  EXPECT_FALSE(get_string(j, "i"));
  EXPECT_EQ(get_int<int>(j, "i").value_or(0), -3);
  EXPECT_FALSE(get_int<uint32_t>(j, "i")) << "negative into unsigned";
  EXPECT_FALSE(get_int<int>(j, "u")) << "too big for int";
  EXPECT_EQ(get_int<uint64_t>(j, "u").value_or(0), 5000000000ull);
  EXPECT_FALSE(get_int<int>(j, "f")) << "a float is not an integer";
  EXPECT_FALSE(get_int<int>(j, "s"));
  EXPECT_EQ(get_bool(j, "b").value_or(false), true);
  EXPECT_FALSE(get_bool(j, "n"));
  EXPECT_EQ(number_or(j, "f", 0), 1.5);
  EXPECT_EQ(string_or(j, "missing", "def"), "def");
  EXPECT_EQ(int_or(Json::array(), "i", 7), 7) << "not an object";
  EXPECT_EQ(bool_or(Json("str"), "b", false), false);
}

TEST(JsonGet, UntrustedInputNestedTooDeepIsDiscarded) {
  std::string deep =
      std::string(kMaxUntrustedDepth + 1, '[') + std::string(kMaxUntrustedDepth + 1, ']');
  EXPECT_TRUE(parse_untrusted(deep).is_discarded());
  std::string ok = std::string(kMaxUntrustedDepth, '[') + std::string(kMaxUntrustedDepth, ']');
  EXPECT_TRUE(parse_untrusted(ok).is_array());
  // Brackets inside strings (escaped quotes included) are text, not depth.
  std::string text = "{\"s\":\"\\\"" + std::string(500, '[') + "\"}";
  auto j = parse_untrusted(text);
  ASSERT_TRUE(j.is_object()) << text;
  EXPECT_EQ(j["s"].get<std::string>().size(), 501u);
  EXPECT_TRUE(parse_untrusted("not json").is_discarded());
}

}  // namespace
}  // namespace forkd::json

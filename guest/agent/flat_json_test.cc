#include "flat_json.h"

#include <gtest/gtest.h>

namespace forkd::agent {
namespace {

TEST(FlatJson, ReadsAnObjectOfScalars) {
  auto f = scan_flat_object(
      " {\"s\":\"a b-c\", \"u\":18446744073709551615,\"n\":-7,\"z\":0,\"t\":true,\"f\":false,"
      "\"x\":null}\n");
  ASSERT_TRUE(f);
  ASSERT_EQ(f->size(), 7u);
  EXPECT_EQ(find_flat(*f, "s")->text, "a b-c");
  EXPECT_EQ(find_flat(*f, "u")->number, UINT64_MAX);
  EXPECT_EQ(find_flat(*f, "u")->kind, FlatValue::Kind::kUnsigned);
  EXPECT_EQ(find_flat(*f, "n")->kind, FlatValue::Kind::kNegative);
  EXPECT_EQ(find_flat(*f, "n")->number, 7u);
  EXPECT_EQ(find_flat(*f, "z")->number, 0u);
  EXPECT_TRUE(find_flat(*f, "t")->boolean);
  EXPECT_EQ(find_flat(*f, "f")->kind, FlatValue::Kind::kBool);
  EXPECT_FALSE(find_flat(*f, "f")->boolean);
  EXPECT_EQ(find_flat(*f, "x")->kind, FlatValue::Kind::kNull);
  EXPECT_EQ(find_flat(*f, "missing"), nullptr);
  auto empty = scan_flat_object("{ }");
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());
}

TEST(FlatJson, RefusesAllElse) {
  const char* cases[] = {
      "",
      "[]",
      "\"s\"",
      "{",
      "{\"a\":1",
      "{\"a\":1,}",
      "{,}",
      "{\"a\" 1}",
      "{a:1}",
      "{\"a\":{}}",
      "{\"a\":[1]}",
      "{\"a\":\"x\\\"y\"}",     // an escape
      "{\"a\\u0062\":1}",       // an escape in a key
      "{\"a\":\"\xc3\xa9\"}",   // not ASCII
      "{\"a\":\"tab\there\"}",  // a control character
      "{\"a\":1.5}",
      "{\"a\":1e3}",
      "{\"a\":01}",
      "{\"a\":-}",
      "{\"a\":+1}",
      "{\"a\":18446744073709551616}",  // 2^64
      "{\"a\":-18446744073709551616}",
      "{\"a\":tru}",
      "{\"a\":truex}",
      "{\"a\":nul}",
      "{\"a\":1,\"a\":2}",  // duplicate keys: nlohmann keeps one of them
      "{\"a\":1} x",
      "{\"a\":1}{}",
      "{\"a\":\"unterminated}",
  };
  for (const char* c : cases) EXPECT_FALSE(scan_flat_object(c)) << c;
}

TEST(FlatJson, BoundsItsFields) {
  std::string many = "{";
  for (size_t i = 0; i <= kMaxFlatFields; ++i) {
    many += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":1";
  }
  many += "}";
  EXPECT_FALSE(scan_flat_object(many));
}

TEST(FlatJson, WritesOnlyPlainStrings) {
  std::string out = "x";
  EXPECT_TRUE(append_plain_json_string(&out, "sb-1 ok"));
  EXPECT_EQ(out, "x\"sb-1 ok\"");
  const std::string_view bad_strings[] = {"a\"b", "a\\b", "a\nb", {"a\0b", 3}, "\x7f", "\xc3\xa9"};
  for (std::string_view bad : bad_strings) {
    EXPECT_FALSE(append_plain_json_string(&out, bad));
    EXPECT_EQ(out, "x\"sb-1 ok\"");
  }
}

}  // namespace
}  // namespace forkd::agent

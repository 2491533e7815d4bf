#include "request.h"

#include <gtest/gtest.h>

namespace forkd::agent {
namespace {

TEST(ParseRequest, Valid) {
  auto r = parse_request(R"({"id": 7, "op": "ping"})", "body");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->id, 7u);
  EXPECT_EQ(r->op, "ping");
  EXPECT_EQ(r->body, "body");
}

TEST(ParseRequest, Malformed) {
  for (const char* bad :
       {"", "{", "[1,2]", "42", "\"s\"", "{\"op\": \"ping\"}", "{\"id\": 0, \"op\": \"ping\"}",
        "{\"id\": -3, \"op\": \"ping\"}", "{\"id\": 1.5, \"op\": \"ping\"}",
        "{\"id\": \"1\", \"op\": \"ping\"}", "{\"id\": 18446744073709551616, \"op\": \"ping\"}"}) {
    auto r = parse_request(bad, "");
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().id, 0u) << bad;
    EXPECT_EQ(r.error().error.code, "bad_request") << bad;
  }
}

TEST(ParseRequest, BadOpKeepsId) {
  auto r = parse_request(R"({"id": 9, "op": 3})", "");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().id, 9u);
  EXPECT_EQ(r.error().error.code, "bad_request");
}

TEST(ParseRequest, KnownOps) {
  EXPECT_TRUE(is_known_op("exec"));
  EXPECT_TRUE(is_known_op("remove"));
  EXPECT_TRUE(is_known_op("resumed"));
  EXPECT_TRUE(is_known_op("sync"));
  EXPECT_FALSE(is_known_op("resume"));
  EXPECT_FALSE(is_known_op(""));
}

TEST(Fields, TypesAreChecked) {
  Json j = Json::parse(R"({"s": "x", "b": true, "n": 5, "neg": -1, "f": 1.5, "nul": null})");
  EXPECT_EQ(*get_string(j, "s"), "x");
  EXPECT_FALSE(get_string(j, "b"));
  EXPECT_FALSE(get_string(j, "missing"));
  EXPECT_EQ(*get_bool(j, "b", false), true);
  EXPECT_EQ(*get_bool(j, "missing", true), true);
  EXPECT_EQ(*get_bool(j, "nul", true), true);
  EXPECT_FALSE(get_bool(j, "s", false));
  EXPECT_EQ(*get_u64(j, "n", 0, 10), 5u);
  EXPECT_FALSE(get_u64(j, "n", 0, 4));
  EXPECT_FALSE(get_u64(j, "neg", 0, 10));
  EXPECT_FALSE(get_u64(j, "f", 0, 10));
  EXPECT_EQ(*get_u64(j, "missing", 3, 10), 3u);
  // Not an object at all.
  EXPECT_FALSE(get_string(Json::array(), "s"));
}

TEST(Fields, Paths) {
  EXPECT_TRUE(get_path(Json{{"p", "/tmp/x"}}, "p"));
  EXPECT_FALSE(get_path(Json{{"p", ""}}, "p"));
  EXPECT_FALSE(get_path(Json{{"p", std::string("a\0b", 3)}}, "p"));
  EXPECT_FALSE(get_path(Json{{"p", std::string(kMaxPathLen + 1, 'a')}}, "p"));
  EXPECT_FALSE(get_path(Json{{"p", 3}}, "p"));
}

TEST(Replies, Shapes) {
  Json ok = ok_reply(5, Json{{"size", 3}, {"id", 99}});
  EXPECT_EQ(ok["id"], 5);
  EXPECT_EQ(ok["ok"], true);
  EXPECT_EQ(ok["size"], 3);
  Json err = error_reply(6, {"not_found", "nope"});
  EXPECT_EQ(err["ok"], false);
  EXPECT_EQ(err["error"]["code"], "not_found");
  EXPECT_EQ(err["error"]["message"], "nope");
}

TEST(Replies, InvalidUtf8DoesNotThrow) {
  Json j{{"name", std::string("\xff\xfe", 2)}};
  std::string s = to_wire(j);
  EXPECT_FALSE(s.empty());
}

}  // namespace
}  // namespace forkd::agent

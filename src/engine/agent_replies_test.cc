#include "engine/agent_replies.h"

#include <gtest/gtest.h>

namespace forkd::engine {
namespace {

void expect_protocol_error(const Error& e, const std::string& field) {
  EXPECT_EQ(e.code(), ErrorCode::kAgentProtocol) << e.describe();
  EXPECT_NE(e.message().find(field), std::string::npos) << e.message();
}

TEST(AgentReplies, ExecAcceptsTheRealShape) {
  auto r = decode_exec_reply(Json{{"exit_code", 3}, {"timed_out", false}, {"duration_ms", 12}});
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_FALSE(r->timed_out);
  EXPECT_EQ(r->duration_ms, 12);
}

TEST(AgentReplies, ExecRefusesForgedFields) {
  for (Json bad : {Json{{"exit_code", "x"}, {"timed_out", false}},
                   Json{{"exit_code", 1.5}, {"timed_out", false}},
                   Json{{"exit_code", 99999}, {"timed_out", false}},
                   Json{{"exit_code", 0}, {"timed_out", "no"}}, Json{{"exit_code", 0}},
                   Json{{"exit_code", 0}, {"timed_out", false}, {"duration_ms", Json::array()}},
                   Json{{"exit_code", 0}, {"timed_out", false}, {"duration_ms", -5}}, Json::array(),
                   Json("string"), Json()}) {
    auto r = decode_exec_reply(bad);
    ASSERT_FALSE(r) << bad.dump();
    EXPECT_EQ(r.error().code(), ErrorCode::kAgentProtocol) << bad.dump();
  }
}

TEST(AgentReplies, EvalNullsAndStrings) {
  auto ok = decode_eval_reply(Json{{"value", "3"}, {"stdout", "hi\n"}, {"error", nullptr}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->value.value_or(""), "3");
  EXPECT_EQ(ok->stdout_text, "hi\n");
  EXPECT_FALSE(ok->error);
  auto stmt = decode_eval_reply(Json::object());
  ASSERT_TRUE(stmt);
  EXPECT_FALSE(stmt->value);
  auto bad = decode_eval_reply(Json{{"value", 5}});
  ASSERT_FALSE(bad);
  expect_protocol_error(bad.error(), "eval");
}

TEST(AgentReplies, ResumedNeedsRealBooleans) {
  auto ok = decode_resumed_reply(Json{{"reseeded", true},
                                      {"clock_set", true},
                                      {"hostname", "sb-1"},
                                      {"sandbox_id", "sb-1"},
                                      {"epoch", std::string(32, 'a')}});
  ASSERT_TRUE(ok);
  EXPECT_TRUE(ok->reseeded);
  EXPECT_EQ(ok->info["sandbox_id"], "sb-1");
  auto failed = decode_resumed_reply(
      Json{{"reseeded", false}, {"reseed_error", "no entropy"}, {"clock_set", true}});
  ASSERT_TRUE(failed) << "a failed step is a valid reply";
  EXPECT_EQ(failed->reseed_error, "no entropy");
  // The forgery of issue 11: a string where a boolean belongs.
  auto forged = decode_resumed_reply(Json{{"reseeded", "x"}, {"clock_set", true}});
  ASSERT_FALSE(forged);
  expect_protocol_error(forged.error(), "reseeded");
  auto forged2 = decode_resumed_reply(Json{{"reseeded", true}, {"clock_set", 1}});
  ASSERT_FALSE(forged2);
  expect_protocol_error(forged2.error(), "clock_set");
  // Unknown or oversized extras are dropped, never copied into the sandbox's info.
  auto extra = decode_resumed_reply(Json{{"reseeded", true},
                                         {"clock_set", true},
                                         {"hostname", std::string(100000, 'h')},
                                         {"evil", "x"}});
  ASSERT_TRUE(extra);
  EXPECT_FALSE(extra->info.contains("hostname"));
  EXPECT_FALSE(extra->info.contains("evil"));
}

TEST(AgentReplies, HelloKeepsKnownFieldsOnly) {
  auto ok = decode_hello_reply(Json{{"pid", 7},
                                    {"version", "0.1.0"},
                                    {"numpy", nullptr},
                                    {"python", false},
                                    {"junk", Json::array({1, 2})}});
  ASSERT_TRUE(ok);
  EXPECT_EQ((*ok)["pid"], 7);
  EXPECT_TRUE((*ok)["numpy"].is_null());
  EXPECT_FALSE(ok->contains("junk"));
  for (Json bad : {Json{{"pid", "7"}}, Json{{"pid", 0}}, Json{{"pid", 7}, {"python", "yes"}},
                   Json{{"pid", 7}, {"numpy", 1}}, Json{{"pid", 7}, {"uptime_ms", "long"}}}) {
    EXPECT_FALSE(decode_hello_reply(bad)) << bad.dump();
  }
}

TEST(AgentReplies, StatAndList) {
  auto st = decode_stat_reply(Json{{"type", "file"}, {"size", 5}, {"mode", 420}, {"mtime", 1}});
  ASSERT_TRUE(st);
  EXPECT_EQ(st->size, 5u);
  EXPECT_FALSE(decode_stat_reply(Json{{"type", {}}, {"size", 5}, {"mode", 420}, {"mtime", 1}}));
  EXPECT_FALSE(
      decode_stat_reply(Json{{"type", "file"}, {"size", -1}, {"mode", 420}, {"mtime", 1}}));
  auto list = decode_list_reply(Json{
      {"entries", {{{"name", "a"}, {"type", "dir"}, {"size", 0}, {"mode", 493}, {"mtime", 2}}}}});
  ASSERT_TRUE(list);
  EXPECT_EQ(list->size(), 1u);
  EXPECT_FALSE(decode_list_reply(Json{{"entries", 7}}));
  EXPECT_FALSE(decode_list_reply(Json{{"entries", {{{"name", 1}}}}}));
  Json many = Json::array();
  for (size_t i = 0; i <= kMaxListEntries; ++i) {
    many.push_back({{"name", "f"}, {"type", "file"}, {"size", 0}, {"mode", 0}, {"mtime", 0}});
  }
  EXPECT_FALSE(decode_list_reply(Json{{"entries", many}}));
}

TEST(AgentReplies, ReadNeverLongerThanAsked) {
  EXPECT_TRUE(decode_read_reply(Json{{"eof", true}, {"size", 3}}, 3, 1024));
  auto big = decode_read_reply(Json{{"eof", false}}, 2048, 1024);
  ASSERT_FALSE(big);
  expect_protocol_error(big.error(), "2048");
  EXPECT_FALSE(decode_read_reply(Json{{"eof", "maybe"}}, 0, 1024));
}

}  // namespace
}  // namespace forkd::engine

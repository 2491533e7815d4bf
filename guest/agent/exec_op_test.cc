#include "exec_op.h"

#include <gtest/gtest.h>

namespace forkd::agent {
namespace {

TEST(ParseExec, Argv) {
  auto s = parse_exec(Json::parse(
      R"({"argv": ["ls", "-l"], "env": {"A": "1"}, "cwd": "/tmp", "timeout_ms": 5, "stdin": true})"));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->argv, (std::vector<std::string>{"ls", "-l"}));
  ASSERT_EQ(s->env.size(), 1u);
  EXPECT_EQ(s->env[0].first, "A");
  EXPECT_EQ(s->cwd, "/tmp");
  EXPECT_EQ(s->timeout_ms, 5u);
  EXPECT_TRUE(s->use_stdin);
}

TEST(ParseExec, Shell) {
  auto s = parse_exec(Json::parse(R"({"shell": "echo hi"})"));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->argv, (std::vector<std::string>{"/bin/sh", "-c", "echo hi"}));
  EXPECT_EQ(s->timeout_ms, 0u);
  EXPECT_FALSE(s->use_stdin);
}

TEST(ParseExec, Rejects) {
  for (const char* bad :
       {R"({})", R"({"argv": ["a"], "shell": "b"})", R"({"argv": []})", R"({"argv": "ls"})",
        R"({"argv": [1]})", R"({"argv": [""]})", R"({"shell": 3})", R"({"argv": ["a"], "env": []})",
        R"({"argv": ["a"], "env": {"A": 1}})", R"({"argv": ["a"], "env": {"A=B": "1"}})",
        R"({"argv": ["a"], "env": {"": "1"}})", R"({"argv": ["a"], "cwd": 5})",
        R"({"argv": ["a"], "timeout_ms": -1})", R"({"argv": ["a"], "timeout_ms": "5"})",
        R"({"argv": ["a"], "stdin": 1})", R"({"argv": ["a\u0000b"]})"}) {
    auto s = parse_exec(Json::parse(bad));
    ASSERT_FALSE(s) << bad;
    EXPECT_EQ(s.error().code, "bad_request") << bad;
  }
  Json many = Json{{"argv", Json::array()}};
  for (size_t i = 0; i <= kMaxArgs; ++i) many["argv"].push_back("x");
  EXPECT_FALSE(parse_exec(many));
}

TEST(ParseExec, UserAndHandle) {
  auto s = parse_exec(Json::parse(R"({"shell": "id", "user": "nobody", "handle": "cmd-1a"})"));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->user, "nobody");
  EXPECT_EQ(s->handle, "cmd-1a");
  for (const char* bad : {R"({"shell": "x", "user": ""})", R"({"shell": "x", "user": "a:b"})",
                          R"({"shell": "x", "user": 0})", R"({"shell": "x", "user": "a/b"})",
                          R"({"shell": "x", "handle": "a b"})", R"({"shell": "x", "handle": ""})",
                          R"({"shell": "x", "handle": 7})"}) {
    EXPECT_FALSE(parse_exec(Json::parse(bad))) << bad;
  }
}

TEST(LookupUser, NamesNumbersAndHostileLines) {
  const std::string passwd =
      "root:x:0:0:root:/root:/bin/sh\n"
      "broken line\n"
      "evil:x:99999999999:1::/x:/bin/sh\n"
      "app:x:1000:1001:App:/home/app:/bin/sh\n"
      "nohome:x:1002:1002::\n";
  auto app = lookup_user("app", passwd);
  ASSERT_TRUE(app);
  EXPECT_EQ(app->uid, 1000u);
  EXPECT_EQ(app->gid, 1001u);
  EXPECT_EQ(app->home, "/home/app");
  auto by_uid = lookup_user("1000", passwd);
  ASSERT_TRUE(by_uid);
  EXPECT_EQ(by_uid->name, "app");
  auto unlisted = lookup_user("4242", passwd);
  ASSERT_TRUE(unlisted);
  EXPECT_EQ(unlisted->uid, 4242u);
  EXPECT_EQ(unlisted->gid, 4242u);
  EXPECT_EQ(unlisted->home, "/");
  EXPECT_EQ(lookup_user("nohome", passwd)->home, "/");
  EXPECT_FALSE(lookup_user("evil", passwd));  // uid out of range: the line is skipped
  EXPECT_FALSE(lookup_user("ghost", passwd));
  EXPECT_FALSE(lookup_user("99999999999", passwd));
  EXPECT_FALSE(lookup_user("root", ""));
}

TEST(MergeEnv, ReplacesAndAppends) {
  auto env = merge_env({"A=1", "B=2", "PATH=/bin"}, {{"B", "3"}, {"C", "4"}});
  EXPECT_EQ(env, (std::vector<std::string>{"A=1", "PATH=/bin", "B=3", "C=4"}));
}

TEST(ResolveCommand, Lookup) {
  EXPECT_EQ(resolve_command("sh", "/nonexistent:/bin:/usr/bin").value_or(""), "/bin/sh");
  EXPECT_FALSE(resolve_command("no-such-command-xyz", "/bin:/usr/bin"));
  EXPECT_EQ(resolve_command("./x", "").value_or(""), "./x");
  EXPECT_FALSE(resolve_command("sh", ""));
}

}  // namespace
}  // namespace forkd::agent

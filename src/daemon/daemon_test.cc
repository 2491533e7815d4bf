// Unit tests for the daemon's pure parts: token vetting and matching, loopback detection, the
// error table, and the request-body decoders.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "base/files.h"
#include "daemon/auth.h"
#include "daemon/commands.h"
#include "daemon/errors.h"
#include "daemon/request_decode.h"

namespace forkd::daemon {
namespace {

constexpr const char* kGood = "Zq3v8Kp1Lm7Rt2Wx9Yb4Nc6Hd0Gf5Js8";

TEST(Auth, WeakTokensRefused) {
  EXPECT_TRUE(check_token_strength(kGood));
  EXPECT_FALSE(check_token_strength("short"));
  EXPECT_FALSE(check_token_strength(std::string(40, 'a')));
  EXPECT_FALSE(check_token_strength("changeme"));
  EXPECT_FALSE(check_token_strength(""));
}

TEST(Auth, LoadTokenTrimsAndVets) {
  auto dir = TempDir::create("forkd-auth-test");
  ASSERT_TRUE(dir);
  ASSERT_TRUE(write_file_atomic(dir->path() + "/t", std::string("  ") + kGood + "\n"));
  auto t = load_token(dir->path() + "/t");
  ASSERT_TRUE(t) << t.error().describe();
  EXPECT_EQ(*t, kGood);
  ASSERT_TRUE(write_file_atomic(dir->path() + "/weak", "secret\n"));
  EXPECT_FALSE(load_token(dir->path() + "/weak"));
  EXPECT_FALSE(load_token(dir->path() + "/missing"));
}

TEST(Auth, TokenFileReadableByOthersIsRefused) {
  auto dir = TempDir::create("forkd-auth-test");
  ASSERT_TRUE(dir);
  std::string path = dir->path() + "/t";
  ASSERT_TRUE(write_file_atomic(path, std::string(kGood) + "\n", 0644));
  auto t = load_token(path);
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(t.error().message().find("chmod 600 " + path), std::string::npos)
      << t.error().message();
  ASSERT_EQ(::chmod(path.c_str(), 0640), 0);
  EXPECT_FALSE(load_token(path)) << "readable by group";
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  EXPECT_TRUE(load_token(path));
}

TEST(Auth, BearerMatchesOnlyTheExactHeader) {
  std::string good = std::string("Bearer ") + kGood;
  EXPECT_TRUE(bearer_matches(good, kGood));
  EXPECT_FALSE(bearer_matches(kGood, kGood));                            // no scheme
  EXPECT_FALSE(bearer_matches("bearer x", kGood));                       // wrong token
  EXPECT_FALSE(bearer_matches(good + "x", kGood));                       // longer
  EXPECT_FALSE(bearer_matches(good.substr(0, good.size() - 1), kGood));  // shorter
  EXPECT_FALSE(bearer_matches("", kGood));
}

TEST(Auth, Loopback) {
  EXPECT_TRUE(is_loopback_host("127.0.0.1"));
  EXPECT_TRUE(is_loopback_host("127.1.2.3"));
  EXPECT_TRUE(is_loopback_host("::1"));
  EXPECT_TRUE(is_loopback_host("localhost"));
  EXPECT_FALSE(is_loopback_host("0.0.0.0"));
  EXPECT_FALSE(is_loopback_host("10.0.0.1"));
  EXPECT_FALSE(is_loopback_host("128.0.0.1"));
}

TEST(Errors, TableMapsStableCodes) {
  EXPECT_EQ(http_status(ErrorCode::kInvalidArgument), 400);
  EXPECT_EQ(http_status(ErrorCode::kNotFound), 404);
  EXPECT_EQ(http_status(ErrorCode::kAlreadyExists), 409);
  EXPECT_EQ(http_status(ErrorCode::kNoPython), 409);
  EXPECT_EQ(http_status(ErrorCode::kUnavailable), 503);
  EXPECT_EQ(http_status(ErrorCode::kAgentTimeout), 504);
  EXPECT_EQ(http_status(ErrorCode::kInternal), 500);
}

TEST(Decode, ForkBounds) {
  auto ok = decode_fork(R"({"snapshot_tag":"py","n":3})");
  ASSERT_TRUE(ok) << ok.error().describe();
  EXPECT_EQ(ok->snapshot_tag, "py");
  EXPECT_EQ(ok->n, 3);
  EXPECT_FALSE(ok->memory_limit_mib);
  EXPECT_FALSE(decode_fork(R"({"snapshot_tag":"py","n":3,"unknown":true})"))
      << "an unknown spawn option is refused, never ignored";
  EXPECT_FALSE(decode_fork(R"({"snapshot_tag":"py","n":0})"));
  EXPECT_FALSE(decode_fork(R"({"snapshot_tag":"py","n":1001})"));
  EXPECT_FALSE(decode_fork(R"({"snapshot_tag":"py","n":"3"})"));
  EXPECT_FALSE(decode_fork(R"({"snapshot_tag":"../x","n":1})"));
  EXPECT_FALSE(decode_fork(R"({"n":1})"));
  EXPECT_FALSE(decode_fork("{not json"));
  EXPECT_FALSE(decode_fork("[1,2]"));
}

TEST(Decode, ForkLimitsAndForkdFields) {
  auto ok =
      decode_fork(R"({"snapshot_tag":"py","memory_limit_mib":512,"cpu_limit":0.5,"pids_limit":64,)"
                  R"("network":"none","live_fork":true,"per_child_netns":false,"hugepages":false,)"
                  R"("prewarm":0,"expose":[]})");
  ASSERT_TRUE(ok) << ok.error().describe();
  EXPECT_EQ(ok->memory_limit_mib, 512);
  EXPECT_EQ(ok->cpu_limit, 0.5);
  EXPECT_EQ(ok->pids_limit, 64);
  EXPECT_TRUE(decode_fork(R"({"snapshot_tag":"py","memory_limit_mib":null})"));
  EXPECT_EQ(ok->network, "none");
  auto net = decode_fork(R"({"snapshot_tag":"py","network":"outbound","expose":[8080,22]})");
  ASSERT_TRUE(net) << net.error().describe();
  EXPECT_EQ(net->network, "outbound");
  EXPECT_EQ(net->expose, (std::vector<int>{8080, 22}));
  EXPECT_FALSE(net->per_child_netns);
  auto netns = decode_fork(
      R"({"snapshot_tag":"py","per_child_netns":true,"allow_list":["10.0.0.0/8","1.2.3.4:443"]})");
  ASSERT_TRUE(netns) << netns.error().describe();
  EXPECT_TRUE(netns->per_child_netns);
  EXPECT_EQ(netns->allow_list, (std::vector<std::string>{"10.0.0.0/8", "1.2.3.4:443"}));
  auto tags_own = decode_fork(R"({"snapshot_tag":"py"})");
  ASSERT_TRUE(tags_own);
  EXPECT_EQ(tags_own->network, "") << "absent: the tag's network";
  // Each refusal names its field.
  for (const char* body :
       {R"({"snapshot_tag":"py","memory_limit_mib":8})", R"({"snapshot_tag":"py","cpu_limit":0})",
        R"({"snapshot_tag":"py","cpu_limit":"1"})", R"({"snapshot_tag":"py","pids_limit":2})",
        R"({"snapshot_tag":"py","per_child_netns":1})",
        R"({"snapshot_tag":"py","allow_list":"10.0.0.0/8"})",
        R"({"snapshot_tag":"py","allow_list":[8]})", R"({"snapshot_tag":"py","hugepages":true})",
        R"({"snapshot_tag":"py","prewarm":4})", R"({"snapshot_tag":"py","expose":[0]})",
        R"({"snapshot_tag":"py","expose":["80"]})", R"({"snapshot_tag":"py","expose":8080})",
        R"({"snapshot_tag":"py","expose":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]})",
        R"({"snapshot_tag":"py","network":"wifi"})"}) {
    auto r = decode_fork(body);
    ASSERT_FALSE(r) << body;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument) << body;
    std::string field = std::string(body).substr(22);  // after {"snapshot_tag":"py","
    field = field.substr(0, field.find('"'));
    EXPECT_NE(r.error().message().find(field), std::string::npos)
        << body << " -> " << r.error().message();
  }
}

TEST(Decode, SnapshotCreateNamesImageForForkdFields) {
  auto ok = decode_snapshot_create(R"({"tag":"t","image":"python","exec":["true"]})");
  ASSERT_TRUE(ok) << ok.error().describe();
  EXPECT_EQ(ok->image, "python");
  EXPECT_EQ(ok->exec, std::vector<std::string>{"true"});
  auto fc = decode_snapshot_create(R"({"tag":"t","kernel":"/k","rootfs":"/r"})");
  ASSERT_FALSE(fc);
  EXPECT_NE(fc.error().message().find("image"), std::string::npos);
  EXPECT_FALSE(decode_snapshot_create(R"({"tag":"a/b"})"));
  EXPECT_EQ(ok->network, "none");
  auto net = decode_snapshot_create(R"({"tag":"t","network":"outbound"})");
  ASSERT_TRUE(net);
  EXPECT_EQ(net->network, "outbound");
  EXPECT_FALSE(decode_snapshot_create(R"({"tag":"t","network":"bridge"})"));
  EXPECT_FALSE(decode_snapshot_create(R"({"tag":"t","exec":"true"})"));
}

TEST(Decode, ExecAndEval) {
  auto a = decode_exec(R"({"args":["echo","hi"],"timeout_secs":5})");
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(a->args.size(), 2u);
  EXPECT_TRUE(decode_exec(R"({"shell":"echo hi"})"));
  EXPECT_FALSE(decode_exec(R"({})"));
  EXPECT_FALSE(decode_exec(R"({"args":[1,2]})"));
  EXPECT_FALSE(decode_exec(R"({"args":["x"],"timeout_secs":3601})"));
  EXPECT_TRUE(decode_eval(R"({"code":"1+1"})"));
  EXPECT_FALSE(decode_eval(R"({"code":1})"));
  auto capped = decode_exec(R"({"args":["x"],"max_output_bytes":1000})");
  ASSERT_TRUE(capped);
  EXPECT_EQ(capped->max_output_bytes, 1000u);
  EXPECT_EQ(decode_exec(R"({"args":["x"]})")->max_output_bytes, 0u) << "absent: the default";
  for (const char* bad :
       {R"({"args":["x"],"max_output_bytes":0})", R"({"args":["x"],"max_output_bytes":-5})",
        R"({"args":["x"],"max_output_bytes":"big"})",
        R"({"args":["x"],"max_output_bytes":268435457})"}) {
    EXPECT_FALSE(decode_exec(bad)) << bad;
  }
  EXPECT_TRUE(decode_snapshot_create(R"({"tag":"t","force":true,"cascade":true})"));
  EXPECT_FALSE(decode_snapshot_create(R"({"tag":"t","cascade":true})")) << "cascade needs force";
}

TEST(Decode, ExecStdinEnvCwdUserStreamBackground) {
  auto a = decode_exec(
      R"({"args":["cat"],"stdin":"hi","env":{"A":"1"},"cwd":"/tmp","user":"nobody","stream":true})");
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(*a->stdin_data, "hi");
  EXPECT_EQ(a->env.at("A"), "1");
  EXPECT_EQ(a->cwd, "/tmp");
  EXPECT_EQ(a->user, "nobody");
  EXPECT_TRUE(a->stream);
  EXPECT_FALSE(a->background);
  auto b =
      decode_exec(R"({"shell":"cat","stdin_b64":"AAH/","background":true,"timeout_secs":86400})");
  ASSERT_TRUE(b) << b.error().describe();
  EXPECT_EQ(*b->stdin_data, std::string("\x00\x01\xff", 3));
  EXPECT_TRUE(b->background);
  for (const char* bad : {
           R"({"shell":"x","stream":true,"background":true})",
           R"({"shell":"x","timeout_secs":86400})",  // only background runs that long
           R"({"shell":"x","background":true,"timeout_secs":700000})",
           R"({"shell":"x","stdin":"a","stdin_b64":"YQ=="})",
           R"({"shell":"x","stdin_b64":"not base64!"})",
           R"({"shell":"x","stdin":5})",
           R"({"shell":"x","env":{"A=B":"1"}})",
           R"({"shell":"x","env":{"A":1}})",
           R"({"shell":"x","env":["A"]})",
           R"({"shell":"x","cwd":"relative"})",
           R"({"shell":"x","cwd":"/a/../b"})",
           R"({"shell":"x","user":""})",
           R"({"shell":"x","user":"a:b"})",
           R"({"shell":"x","stream":"yes"})",
       }) {
    EXPECT_FALSE(decode_exec(bad)) << bad;
  }
  std::string big =
      R"({"shell":"cat","stdin":")" + std::string(kMaxExecStdinBytes + 1, 'a') + "\"}";
  EXPECT_FALSE(decode_exec(big));
}

TEST(Decode, GuestPathsAndBase64) {
  for (const char* good : {"/", "/tmp/a b", "/x/..y/z..", "/a/./b", "/a//b/"}) {
    EXPECT_TRUE(check_guest_path(good)) << good;
  }
  for (std::string bad :
       {std::string(""), std::string("tmp/x"), std::string("/a/../b"), std::string("/.."),
        std::string("/a/.."), std::string("/a\0b", 4), "/" + std::string(4096, 'a')}) {
    EXPECT_FALSE(check_guest_path(bad)) << bad;
  }
  EXPECT_EQ(*decode_base64("aGVsbG8="), "hello");
  EXPECT_EQ(*decode_base64("aGVsbG8"), "hello");
  EXPECT_EQ(*decode_base64(""), "");
  EXPECT_FALSE(decode_base64("aGVsb$8="));
  EXPECT_FALSE(decode_base64("a"));
}

TEST(Decode, Workspaces) {
  auto c = decode_workspace_create(
      R"({"name":"dev","snapshot_tag":"py","per_child_netns":false,"memory_limit_mib":512,"x":1})");
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->name, "dev");
  EXPECT_EQ(c->snapshot_tag, "py");
  EXPECT_EQ(c->memory_limit_mib, 512);
  EXPECT_FALSE(c->per_child_netns);
  auto routed =
      decode_workspace_create(R"({"name":"dev","snapshot_tag":"py","per_child_netns":true})");
  ASSERT_TRUE(routed) << routed.error().describe();
  EXPECT_TRUE(routed->per_child_netns);
  EXPECT_FALSE(
      decode_workspace_create(R"({"name":"dev","snapshot_tag":"py","memory_limit_mib":8})"));
  EXPECT_FALSE(decode_workspace_create(R"({"name":"../x","snapshot_tag":"py"})"));
  EXPECT_FALSE(decode_workspace_create(R"({"name":5,"snapshot_tag":"py"})"));
  EXPECT_FALSE(decode_workspace_create(R"({"name":"dev"})"));
  EXPECT_FALSE(
      decode_workspace_create(R"({"name":"dev","snapshot_tag":"py","per_child_netns":1})"));
  EXPECT_FALSE(
      decode_workspace_create(R"({"name":"dev","snapshot_tag":"py","memory_limit_mib":"1"})"));
  EXPECT_TRUE(decode_workspace_suspend("")->live);
  EXPECT_TRUE(decode_workspace_suspend(R"({"diff":true})")->live);
  EXPECT_FALSE(decode_workspace_suspend(R"({"diff":false})")->live);
  EXPECT_FALSE(decode_workspace_suspend(R"({"diff":"no"})"));
  EXPECT_FALSE(decode_workspace_suspend("[]"));
}

using Json = nlohmann::json;

TEST(Commands, StreamHoldsOnlyUnreadOutputWithinItsCapAndTheBudget) {
  engine::OutputBudget budget(1000);
  {
    Command cmd("cmd-1", "sb-1", {{"shell", "x"}}, /*cap=*/10, &budget, /*consume=*/true);
    cmd.append(false, "0123456789abc");  // 3 bytes over the cap: dropped, counted
    cmd.append(true, "err");
    EXPECT_EQ(budget.in_use(), 13u);
    auto r = cmd.read(0, std::chrono::milliseconds(0));
    ASSERT_EQ(r.chunks.size(), 2u);
    EXPECT_EQ(r.chunks[0].data, "0123456789");
    EXPECT_FALSE(r.done);
    EXPECT_EQ(budget.in_use(), 0u);  // read: given back
    cmd.append(false, "more");       // room again once read
    r = cmd.read(r.next, std::chrono::milliseconds(0));
    ASSERT_EQ(r.chunks.size(), 1u);
    EXPECT_EQ(r.chunks[0].data, "more");
    engine::ExecResult done;
    done.exit_code = 3;
    cmd.finish(done);
    r = cmd.read(r.next, std::chrono::milliseconds(0));
    EXPECT_TRUE(r.done);
    auto line = cmd.final_line();
    EXPECT_EQ(line["type"], "exit");
    EXPECT_EQ(line["exit_code"], 3);
    EXPECT_EQ(line["dropped_bytes"], 3);
    EXPECT_EQ(line["stdout_bytes"], 17);
  }
  EXPECT_EQ(budget.in_use(), 0u);
}

TEST(Commands, KeptOutputIsReadByEveryReaderAndFailuresAreReported) {
  engine::OutputBudget budget(4);  // smaller than the output: the rest is dropped
  Command cmd("cmd-2", "sb-1", {{"args", {"a"}}}, 100, &budget, /*consume=*/false);
  cmd.append(false, "hello");
  EXPECT_EQ(cmd.output().first, "hell");
  EXPECT_EQ(cmd.read(0, std::chrono::milliseconds(0)).chunks.size(), 1u);
  EXPECT_EQ(cmd.read(0, std::chrono::milliseconds(0)).chunks.size(), 1u);  // still there
  cmd.finish(tl::unexpected(Error(ErrorCode::kAgentTimeout, "agent stopped reading")));
  auto info = cmd.info();
  EXPECT_EQ(info["status"], "failed");
  EXPECT_TRUE(info["exit_code"].is_null());
  EXPECT_EQ(info["args"], Json::array({"a"}));
  EXPECT_EQ(cmd.final_line()["type"], "error");
  Command missing("cmd-3", "sb-1", Json::object(), 100, nullptr, false);
  missing.finish(tl::unexpected(Error(ErrorCode::kGuestCommandNotFound, "command not found: x")));
  EXPECT_EQ(missing.info()["exit_code"], 127);
  EXPECT_NE(missing.output().second.find("command not found"), std::string::npos);
}

TEST(Commands, TableCapsPerSandboxAndRefusesOnceStopping) {
  CommandTable table;
  std::vector<std::string> ids;
  for (size_t i = 0; i < CommandTable::kPerSandbox; ++i) {
    auto c = table.create("sb-a", Json::object(), 10, nullptr, true);
    ASSERT_TRUE(c);
    ids.push_back((*c)->id());
  }
  auto over = table.create("sb-a", Json::object(), 10, nullptr, true);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_TRUE(table.create("sb-b", Json::object(), 10, nullptr, true));  // another sandbox
  EXPECT_TRUE(table.find("sb-a", ids[0]));
  EXPECT_FALSE(table.find("sb-b", ids[0]));  // ids are per sandbox
  EXPECT_TRUE(table.erase("sb-a", ids[0]));
  EXPECT_EQ(table.list("sb-a").size(), CommandTable::kPerSandbox - 1);
  table.drop_sandbox("sb-a");
  EXPECT_TRUE(table.list("sb-a").empty());
  EXPECT_EQ(table.running(), static_cast<int>(CommandTable::kPerSandbox) + 1);
  table.shutdown();
  auto late = table.create("sb-c", Json::object(), 10, nullptr, false);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code(), ErrorCode::kUnavailable);
}

}  // namespace
}  // namespace forkd::daemon

// Drives the real forkd-agent binary over --listen-unix, as the host would over virtio-serial.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "proto/frame.h"
#include "request.h"
#include "test_client.h"

namespace forkd::agent {
namespace {

using namespace forkd::agent::testing;
using Clock = std::chrono::steady_clock;

class AgentHostTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/agent-host-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    sock_ = dir_ + "/agent.sock";
    pid_ = start_agent(sock_);
  }
  static void TearDownTestSuite() {
    stop_agent(pid_);
    std::string cmd = "rm -rf " + dir_;
    (void)std::system(cmd.c_str());
  }
  static std::string dir_, sock_;
  static pid_t pid_;
};
std::string AgentHostTest::dir_, AgentHostTest::sock_;
pid_t AgentHostTest::pid_ = -1;

TEST_F(AgentHostTest, Ping) {
  Client c(sock_);
  ASSERT_TRUE(c.connected());
  Reply r = c.call({{"op", "ping"}});
  EXPECT_EQ(r.final["ok"], true) << r.final;
  EXPECT_EQ(r.final["version"], "0.1.0");
  EXPECT_EQ(r.final["protocol"], 1);
  EXPECT_TRUE(r.final["python"].is_boolean());
  EXPECT_TRUE(r.final.contains("numpy"));
  EXPECT_TRUE(r.final["uptime_ms"].is_number());
}

TEST_F(AgentHostTest, MalformedInputGetsErrorsNotCrashes) {
  Client c(sock_);
  auto expect_error = [&](uint64_t id, const char* code) {
    auto f = c.read_frame();
    ASSERT_TRUE(f);
    Json j = Json::parse(f->json);
    EXPECT_EQ(j["id"], id) << j;
    EXPECT_EQ(j["ok"], false) << j;
    EXPECT_EQ(j["error"]["code"], code) << j;
  };
  c.send_raw("garbage that is not a frame");
  expect_error(0, "bad_request");
  c.send_raw(*proto::encode_frame("not json"));
  expect_error(0, "bad_request");
  c.send_raw(*proto::encode_frame("[1]"));
  expect_error(0, "bad_request");
  c.send_raw(*proto::encode_frame(R"({"op": "ping"})"));
  expect_error(0, "bad_request");
  c.send_raw(*proto::encode_frame(R"({"id": 77, "op": "fly"})"));
  expect_error(77, "unknown_op");
  c.send_raw(*proto::encode_frame(R"({"id": 78, "op": "file_read", "path": 3})"));
  expect_error(78, "bad_request");
  c.send_raw(*proto::encode_frame(R"({"id": 79, "op": "exec", "argv": "ls"})"));
  expect_error(79, "bad_request");
  std::string bad_version = *proto::encode_frame(R"({"id": 80, "op": "ping"})");
  bad_version[4] = 9;
  c.send_raw(bad_version);
  expect_error(0, "bad_request");
  EXPECT_EQ(c.call({{"op", "ping"}}).final["ok"], true);
}

TEST_F(AgentHostTest, PartialFrameThenDisconnect) {
  {
    Client c(sock_);
    std::string f = *proto::encode_frame(R"({"id": 5, "op": "ping"})");
    c.send_raw(f.substr(0, 10));
  }
  Client c(sock_);
  EXPECT_EQ(c.call({{"op", "ping"}}).final["ok"], true);
}

TEST_F(AgentHostTest, ExecBasics) {
  Client c(sock_);
  Reply r = c.call({{"op", "exec"}, {"argv", {"sh", "-c", "echo out; echo err >&2; exit 3"}}});
  EXPECT_EQ(r.final["ok"], true) << r.final;
  EXPECT_EQ(r.final["exit_code"], 3);
  EXPECT_EQ(r.final["timed_out"], false);
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
  r = c.call(
      {{"op", "exec"}, {"shell", "pwd; echo $FOO"}, {"cwd", "/tmp"}, {"env", {{"FOO", "bar"}}}});
  EXPECT_EQ(r.out, "/tmp\nbar\n");
  r = c.call({{"op", "exec"}, {"argv", {"cat"}}, {"stdin", true}}, std::string("in\0put", 6));
  EXPECT_EQ(r.out, std::string("in\0put", 6));
  r = c.call({{"op", "exec"}, {"shell", "kill -9 $$"}});
  EXPECT_EQ(r.final["exit_code"], 137);
  r = c.call({{"op", "exec"}, {"argv", {"no-such-cmd-xyz"}}});
  EXPECT_EQ(r.final["ok"], false);
  EXPECT_EQ(r.final["error"]["code"], "not_found");
  EXPECT_EQ(r.final["error"]["message"], "command not found: no-such-cmd-xyz");
  r = c.call({{"op", "exec"}, {"argv", {"/no/such/bin"}}});
  EXPECT_EQ(r.final["error"]["code"], "not_found");
  r = c.call({{"op", "exec"}, {"argv", {"true"}}, {"cwd", "/no/such/dir"}});
  EXPECT_EQ(r.final["error"]["code"], "not_found");
  r = c.call({{"op", "exec"}, {"argv", {"/etc/passwd"}}});
  EXPECT_EQ(r.final["error"]["code"], "not_found");
}

TEST_F(AgentHostTest, ExecLargeOutput) {
  Client c(sock_);
  Reply r =
      c.call({{"op", "exec"}, {"shell", "head -c 10485760 /dev/zero; head -c 1000 /dev/zero >&2"}});
  EXPECT_EQ(r.final["exit_code"], 0);
  EXPECT_EQ(r.out.size(), 10485760u);
  EXPECT_EQ(r.err.size(), 1000u);
}

TEST_F(AgentHostTest, ExecTimeoutKillsGroup) {
  Client c(sock_);
  auto t0 = Clock::now();
  Reply r = c.call({{"op", "exec"}, {"shell", "sleep 30 & sleep 30"}, {"timeout_ms", 300}});
  EXPECT_EQ(r.final["timed_out"], true) << r.final;
  EXPECT_EQ(r.final["exit_code"], 137);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
}

TEST_F(AgentHostTest, ExecBackgroundChildDoesNotHang) {
  Client c(sock_);
  auto t0 = Clock::now();
  Reply r = c.call({{"op", "exec"}, {"shell", "sleep 5 & echo hi"}});
  EXPECT_EQ(r.final["exit_code"], 0);
  EXPECT_EQ(r.out, "hi\n");
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(2));
}

TEST_F(AgentHostTest, ConcurrentExecs) {
  Client c(sock_);
  std::vector<uint64_t> ids;
  auto t0 = Clock::now();
  for (int i = 0; i < 8; ++i) {
    ids.push_back(c.send({{"op", "exec"}, {"shell", "sleep 1; echo " + std::to_string(i)}}));
  }
  // Replies come in any order: collect all frames.
  std::map<uint64_t, std::string> out;
  int finals = 0;
  while (finals < 8) {
    auto f = c.read_frame();
    ASSERT_TRUE(f);
    Json j = Json::parse(f->json);
    if (j.contains("event")) {
      out[j["id"].get<uint64_t>()] += f->bin;
    } else {
      EXPECT_EQ(j["exit_code"], 0);
      ++finals;
    }
  }
  for (int i = 0; i < 8; ++i) EXPECT_EQ(out[ids[static_cast<size_t>(i)]], std::to_string(i) + "\n");
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(4));
}

TEST_F(AgentHostTest, BusyBeyondCap) {
  Client c(sock_);
  int busy = 0, ok = 0;
  // Each exec outlives the dispatch of all 70 by far: with `sleep 1`, a loaded host (a
  // clean-clone ctest -j2) once took longer than that to start them, and all 70 succeeded.
  for (int i = 0; i < 70; ++i) c.send({{"op", "exec"}, {"argv", {"sleep", "5"}}});
  for (int i = 0; i < 70; ++i) {
    auto f = c.read_frame();
    ASSERT_TRUE(f);
    Json j = Json::parse(f->json);
    if (j["ok"] == true) ++ok;
    if (j["ok"] == false && j["error"]["code"] == "busy") ++busy;
  }
  EXPECT_EQ(ok, 64);
  EXPECT_EQ(busy, 6);
}

TEST_F(AgentHostTest, Files) {
  Client c(sock_);
  std::string d = dir_ + "/files";
  EXPECT_EQ(c.call({{"op", "mkdir"}, {"path", d + "/sub"}, {"parents", true}}).final["ok"], true);
  std::string data;
  for (int i = 0; i < 3 * (1 << 20) + 123; ++i) data.push_back(static_cast<char>(i * 7));
  const size_t chunk = proto::kChunkLen;
  for (size_t off = 0; off < data.size(); off += chunk) {
    Reply w = c.call(
        {{"op", "file_write"}, {"path", d + "/blob"}, {"offset", off}, {"truncate", off == 0}},
        std::string_view(data).substr(off, chunk));
    ASSERT_EQ(w.final["ok"], true) << w.final;
  }
  std::string back;
  for (int i = 0; i < 10; ++i) {
    Reply rd = c.call(
        {{"op", "file_read"}, {"path", d + "/blob"}, {"offset", back.size()}, {"length", chunk}});
    ASSERT_EQ(rd.final["ok"], true) << rd.final;
    EXPECT_EQ(rd.final["size"], data.size());
    back += rd.bin;
    if (rd.final["eof"] == true) break;
  }
  EXPECT_TRUE(back == data);
  Reply st = c.call({{"op", "file_stat"}, {"path", d + "/blob"}});
  EXPECT_EQ(st.final["type"], "file");
  Reply ls = c.call({{"op", "file_list"}, {"path", d}});
  ASSERT_EQ(ls.final["entries"].size(), 2u);
  EXPECT_EQ(ls.final["entries"][0]["name"], "blob");
  EXPECT_EQ(c.call({{"op", "remove"}, {"path", d}, {"recursive", true}}).final["ok"], true);
  Reply gone = c.call({{"op", "file_stat"}, {"path", d}});
  EXPECT_EQ(gone.final["error"]["code"], "not_found");
}

TEST_F(AgentHostTest, SyncAnswersWithItsDuration) {
  // What it is for (a child of a tag does not commit its parent's journal) is checked in a VM:
  // PythonEval.ChildrenOfATagLeaveItsDiskAlone.
  Client c(sock_);
  Reply r = c.call({{"op", "sync"}});
  ASSERT_EQ(r.final["ok"], true) << r.final;
  ASSERT_TRUE(r.final["ms"].is_number()) << r.final;
  EXPECT_GE(r.final["ms"].get<double>(), 0.0);
}

TEST_F(AgentHostTest, Eval) {
  Client c(sock_);
  Reply p = c.call({{"op", "ping"}});
  if (p.final["python"] != true) {
    Reply r = c.call({{"op", "eval"}, {"code", "1"}});
    EXPECT_EQ(r.final["error"]["code"], "no_python");
    GTEST_SKIP() << "no python3 on this host";
  }
  Reply r = c.call({{"op", "eval"}, {"code", "1 + 1"}});
  EXPECT_EQ(r.final["ok"], true) << r.final;
  EXPECT_EQ(r.final["value"], "2");
  EXPECT_TRUE(r.final["error"].is_null());
  r = c.call({{"op", "eval"}, {"code", "x = 40\nprint('hi')"}});
  EXPECT_TRUE(r.final["value"].is_null());
  EXPECT_EQ(r.final["stdout"], "hi\n");
  r = c.call({{"op", "eval"}, {"code", "x + 2"}});
  EXPECT_EQ(r.final["value"], "42");
  r = c.call({{"op", "eval"}, {"code", "1/0"}});
  EXPECT_TRUE(r.final["value"].is_null());
  EXPECT_NE(r.final["error"].get<std::string>().find("ZeroDivisionError"), std::string::npos);
  r = c.call({{"op", "eval"}, {"code", "def f(:"}});
  EXPECT_NE(r.final["error"].get<std::string>().find("SyntaxError"), std::string::npos);
  r = c.call({{"op", "eval"}, {"code", "import time; time.sleep(10)"}, {"timeout_ms", 300}});
  EXPECT_EQ(r.final["error"]["code"], "timeout");
  // Killed and restarted: globals are gone, but eval works again.
  r = c.call({{"op", "eval"}, {"code", "import os; os._exit(1)"}});
  EXPECT_EQ(r.final["ok"], false);
  r = c.call({{"op", "eval"}, {"code", "'again'"}});
  EXPECT_EQ(r.final["value"], "'again'");
  if (p.final["numpy"].is_string()) {
    r = c.call({{"op", "eval"}, {"code", "int(np.arange(10).sum())"}});
    EXPECT_EQ(r.final["value"], "45") << r.final;
  }
}

}  // namespace
}  // namespace forkd::agent

// exec through a real minimal-image VM: exit codes, stderr, env, cwd, timeouts, big output,
// sequential and concurrent requests on one sandbox.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "integration/vm_fixture.h"

namespace forkd::test {
namespace {

struct SandboxExecTraits {
  static constexpr const char* kImage = "minimal";
  static constexpr int kMemoryMib = 256;
};
class SandboxExec : public SharedSandboxTest<SandboxExecTraits> {
 protected:
  static engine::ExecResult sh(const std::string& cmd, engine::ExecOptions o = {}) {
    o.shell = cmd;
    auto r = sb_->exec(o);
    EXPECT_TRUE(r) << r.error().describe();
    return r ? *r : engine::ExecResult{};
  }
};

TEST_F(SandboxExec, EchoAndExitCodes) {
  auto r = sh("echo hello");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.stdout_data, "hello\n");
  EXPECT_EQ(sh("exit 42").exit_code, 42);
  engine::ExecOptions o;
  o.argv = {"false"};
  auto f = sb_->exec(o);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->exit_code, 1);
}

TEST_F(SandboxExec, StderrIsSeparate) {
  auto r = sh("echo out; echo err >&2");
  EXPECT_EQ(r.stdout_data, "out\n");
  EXPECT_EQ(r.stderr_data, "err\n");
}

TEST_F(SandboxExec, EnvAndCwd) {
  engine::ExecOptions o;
  o.env["FORKD_GREETING"] = "hi there";
  o.cwd = "/tmp";
  auto r = sh("echo \"$FORKD_GREETING\"; pwd", o);
  EXPECT_EQ(r.stdout_data, "hi there\n/tmp\n");
}

TEST_F(SandboxExec, ArgvIsNotShellParsed) {
  engine::ExecOptions o;
  o.argv = {"echo", "a  b", "$HOME", "; ls"};
  auto r = sb_->exec(o);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->stdout_data, "a  b $HOME ; ls\n");
}

TEST_F(SandboxExec, StdinIsPassed) {
  engine::ExecOptions o;
  o.argv = {"wc", "-c"};
  o.stdin_data = std::string(12345, 'x');
  auto r = sb_->exec(o);
  ASSERT_TRUE(r);
  EXPECT_EQ(std::stoi(r->stdout_data), 12345);
}

TEST_F(SandboxExec, CommandNotFound) {
  engine::ExecOptions o;
  o.argv = {"no-such-command-forkd"};
  auto r = sb_->exec(o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kGuestCommandNotFound);
  EXPECT_NE(r.error().message().find("no-such-command-forkd"), std::string::npos);
}

TEST_F(SandboxExec, TimeoutKillsTheProcessGroup) {
  engine::ExecOptions o;
  o.timeout = std::chrono::milliseconds(1000);
  auto start = std::chrono::steady_clock::now();
  auto r = sh("sleep 30 & sleep 30; echo never", o);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(r.timed_out);
  EXPECT_EQ(r.exit_code, 137);
  EXPECT_EQ(r.stdout_data, "");
  EXPECT_LT(took, std::chrono::seconds(15));
  // Neither sleep survived the kill.
  auto ps = sh("ps -o args | grep '[s]leep 30' | wc -l");
  EXPECT_EQ(ps.stdout_data, "0\n");
}

TEST_F(SandboxExec, TenMegabytesOfOutput) {
  auto r = sh("head -c 10485760 /dev/zero | tr '\\0' 'a'");
  EXPECT_EQ(r.exit_code, 0);
  ASSERT_EQ(r.stdout_data.size(), 10485760u);
  EXPECT_EQ(r.stdout_data.find_first_not_of('a'), std::string::npos);
}

TEST_F(SandboxExec, StreamedOutputArrivesInOrder) {
  std::string seen;
  engine::ExecOptions o;
  o.shell = "for i in 1 2 3 4 5; do echo line$i; done";
  auto r = sb_->exec(o, [&](const std::string& which, std::string_view d) {
    if (which == "stdout") seen.append(d);
  });
  ASSERT_TRUE(r);
  EXPECT_EQ(seen, "line1\nline2\nline3\nline4\nline5\n");
  EXPECT_TRUE(r->stdout_data.empty());
}

TEST_F(SandboxExec, TwentySequentialExecs) {
  for (int i = 0; i < 20; ++i) {
    auto r = sh("echo " + std::to_string(i));
    ASSERT_EQ(r.stdout_data, std::to_string(i) + "\n");
  }
}

TEST_F(SandboxExec, EightConcurrentExecs) {
  std::atomic<int> good{0};
  std::vector<std::jthread> threads;
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([i, &good] {
      engine::ExecOptions o;
      o.shell = "sleep 1; echo " + std::to_string(i);
      auto r = sb_->exec(o);
      if (r && r->exit_code == 0 && r->stdout_data == std::to_string(i) + "\n") ++good;
    });
  }
  threads.clear();
  EXPECT_EQ(good.load(), 8);
  // They ran concurrently: 8 one-second sleeps in well under 8 seconds.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(7));
}

TEST_F(SandboxExec, PingReportsAgent) {
  auto p = sb_->ping();
  ASSERT_TRUE(p);
  EXPECT_EQ((*p)["version"], "0.1.0");
  EXPECT_TRUE((*p)["numpy"].is_null());
  EXPECT_FALSE((*p)["python"].get<bool>());
}

TEST_F(SandboxExec, EvalWithoutPythonIsAClearError) {
  auto r = sb_->eval("1+1");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kNoPython);
  EXPECT_NE(r.error().message().find("python"), std::string::npos);
}

}  // namespace
}  // namespace forkd::test

#include "base/subprocess.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

namespace forkd {
namespace {

TEST(Subprocess, CapturesOutputAndExitCode) {
  auto r = run_capture({"sh", "-c", "echo out; echo err >&2; exit 3"}, std::chrono::seconds(10));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_NE(r->output.find("out"), std::string::npos);
  EXPECT_NE(r->output.find("err"), std::string::npos);
}

TEST(Subprocess, MissingBinaryIsAnError) {
  auto r = Child::spawn({"/nonexistent/forkd-no-such-binary"});
  EXPECT_FALSE(r);
}

TEST(Subprocess, WaitTimeoutThenKill) {
  auto c = Child::spawn({"sleep", "30"});
  ASSERT_TRUE(c);
  auto w = c->wait(std::chrono::milliseconds(50));
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code(), ErrorCode::kTimeout);
  EXPECT_TRUE(process_alive(c->pid()));
  c->kill(9);
  auto w2 = c->wait(std::chrono::seconds(5));
  ASSERT_TRUE(w2);
  EXPECT_EQ(*w2, 128 + 9);
}

TEST(Subprocess, RunCaptureTimesOut) {
  auto r = run_capture({"sleep", "30"}, std::chrono::milliseconds(100));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kTimeout);
}

// run_capture's env is added to the child's environment.
TEST(Subprocess, RunCapturePassesEnvironment) {
  auto r = run_capture({"sh", "-c", "echo \"$FORKD_TEST_VAR\""}, std::chrono::seconds(10),
                       {{"FORKD_TEST_VAR", "given"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->output, "given\n");
}

// no_huge_pages forbids transparent huge pages to the launched program (its own status says so,
// after exec); without it the program inherits this process's setting (allowed here).
TEST(Subprocess, NoHugePagesReachesTheProgram) {
  for (bool off : {false, true}) {
    SpawnOptions o;
    o.no_huge_pages = off;
    auto c = Child::spawn({"grep", "-qx", "THP_enabled:.0", "/proc/self/status"}, o);
    ASSERT_TRUE(c) << c.error().describe();
    auto code = c->wait(std::chrono::seconds(10));
    ASSERT_TRUE(code);
    EXPECT_EQ(*code, off ? 0 : 1) << "no_huge_pages " << off;
  }
}

// no_real_time leaves the launched program no real-time priority to give itself: its limit is
// 0, soft and hard, where without it the program inherits this process's (raised here).
TEST(Subprocess, NoRealTimeReachesTheProgram) {
  struct rlimit own {};
  ASSERT_EQ(::getrlimit(RLIMIT_RTPRIO, &own), 0);
  const struct rlimit raised = {5, 5};
  if (::setrlimit(RLIMIT_RTPRIO, &raised) != 0) GTEST_SKIP() << "cannot raise RLIMIT_RTPRIO here";
  for (bool off : {false, true}) {
    SpawnOptions o;
    o.no_real_time = off;
    auto r = Child::spawn({"sh", "-c", "test \"$(ulimit -r) $(ulimit -H -r)\" = \"0 0\""}, o);
    ASSERT_TRUE(r) << r.error().describe();
    auto code = r->wait(std::chrono::seconds(10));
    ASSERT_TRUE(code);
    EXPECT_EQ(*code, off ? 0 : 1) << "no_real_time " << off;
  }
  EXPECT_EQ(::setrlimit(RLIMIT_RTPRIO, &own), 0);
}

// A die_with_parent child is killed when the process that spawned it dies.
TEST(Subprocess, DieWithParent) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t middle = ::fork();
  ASSERT_GE(middle, 0);
  if (middle == 0) {
    SpawnOptions o;
    o.die_with_parent = true;
    auto c = Child::spawn({"sleep", "30"}, o);
    pid_t p = c ? c->pid() : -1;
    if (c) c->detach();
    (void)!::write(fds[1], &p, sizeof p);
    ::_exit(0);
  }
  pid_t grandchild = -1;
  ASSERT_EQ(::read(fds[0], &grandchild, sizeof grandchild),
            static_cast<ssize_t>(sizeof grandchild));
  ::close(fds[0]);
  ::close(fds[1]);
  ASSERT_GT(grandchild, 0);
  ::waitpid(middle, nullptr, 0);
  bool gone = false;
  for (int i = 0; i < 200 && !gone; ++i) {
    std::string stat_path = "/proc/" + std::to_string(grandchild) + "/stat";
    FILE* f = std::fopen(stat_path.c_str(), "r");
    if (!f) {
      gone = true;
      break;
    }
    char state = '?';
    int scanned = std::fscanf(f, "%*d %*s %c", &state);
    std::fclose(f);
    gone = scanned == 1 && (state == 'Z' || state == 'X');
    if (!gone) ::usleep(10000);
  }
  EXPECT_TRUE(gone) << "sleep outlived the process that spawned it";
}

// A descriptor someone opened without O_CLOEXEC (cpp-httplib's accepted sockets) must not leak
// into a child: a QEMU holding a client's socket keeps that client waiting forever.
TEST(Subprocess, ChildrenInheritOnly012) {
  int leaky = ::open("/dev/null", O_RDONLY);  // no O_CLOEXEC, on purpose
  ASSERT_GE(leaky, 3);
  std::string probe =
      "test -e /proc/self/fd/" + std::to_string(leaky) + " && echo leaked || echo ok";
  auto r = run_capture({"sh", "-c", probe}, std::chrono::seconds(10));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->output, "ok\n");
  SpawnOptions o;
  o.die_with_parent = true;  // the fork+exec path
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  o.stdout_fd = p[1];
  auto c = Child::spawn({"sh", "-c", probe}, o);
  ASSERT_TRUE(c);
  ::close(p[1]);
  char buf[64] = {};
  ssize_t n = ::read(p[0], buf, sizeof buf - 1);
  EXPECT_EQ(std::string(buf, n > 0 ? static_cast<size_t>(n) : 0), "ok\n");
  (void)c->wait(std::chrono::seconds(10));
  ::close(p[0]);
  ::close(leaky);
}

TEST(Subprocess, FindInPath) {
  EXPECT_FALSE(find_in_path("sh").empty());
  EXPECT_TRUE(find_in_path("forkd-definitely-not-a-command").empty());
}

}  // namespace
}  // namespace forkd

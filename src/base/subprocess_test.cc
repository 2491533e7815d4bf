#include "base/subprocess.h"

#include <gtest/gtest.h>

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

TEST(Subprocess, FindInPath) {
  EXPECT_FALSE(find_in_path("sh").empty());
  EXPECT_TRUE(find_in_path("forkd-definitely-not-a-command").empty());
}

}  // namespace
}  // namespace forkd

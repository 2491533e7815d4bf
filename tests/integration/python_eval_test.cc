// eval in the warm Python worker of the python image (numpy imported before any request).
#include <gtest/gtest.h>

#include "integration/vm_fixture.h"

namespace forkd::test {
namespace {

class PythonEval : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!qemu_missing_reason().empty()) return;
    sb_ = boot("python", 512).release();
  }
  static void TearDownTestSuite() {
    delete sb_;
    sb_ = nullptr;
  }
  void SetUp() override {
    if (auto why = qemu_missing_reason(); !why.empty()) GTEST_SKIP() << why;
    ASSERT_NE(sb_, nullptr) << "sandbox did not boot";
  }
  static engine::Sandbox* sb_;
};
engine::Sandbox* PythonEval::sb_ = nullptr;

TEST_F(PythonEval, PingReportsNumpy) {
  auto p = sb_->ping();
  ASSERT_TRUE(p);
  ASSERT_TRUE((*p)["numpy"].is_string()) << p->dump();
  EXPECT_EQ((*p)["numpy"].get<std::string>().substr(0, 2), "1.");
  EXPECT_TRUE((*p)["python"].get<bool>());
}

TEST_F(PythonEval, ExpressionReturnsRepr) {
  auto r = sb_->eval("numpy.zeros(5).tolist()");
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_FALSE(r->error) << *r->error;
  EXPECT_EQ(r->value.value_or(""), "[0.0, 0.0, 0.0, 0.0, 0.0]");
}

TEST_F(PythonEval, StatementsKeepStateAndCaptureStdout) {
  auto s = sb_->eval("counter = 41\nprint('set')");
  ASSERT_TRUE(s);
  EXPECT_FALSE(s->value.has_value());
  EXPECT_EQ(s->stdout_text, "set\n");
  auto v = sb_->eval("counter + 1");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->value.value_or(""), "42");
}

TEST_F(PythonEval, ErrorsComeBackAsTracebacks) {
  auto r = sb_->eval("1/0");
  ASSERT_TRUE(r);
  ASSERT_TRUE(r->error.has_value());
  EXPECT_NE(r->error->find("ZeroDivisionError"), std::string::npos);
  auto s = sb_->eval("def broken(:");
  ASSERT_TRUE(s);
  ASSERT_TRUE(s->error.has_value());
  EXPECT_NE(s->error->find("SyntaxError"), std::string::npos);
  auto ok = sb_->eval("2**10");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->value.value_or(""), "1024");
}

TEST_F(PythonEval, ExecRunsPythonFromTheRootDisk) {
  engine::ExecOptions o;
  o.argv = {"python3", "-c", "import numpy; print(numpy.arange(4).sum())"};
  auto r = sb_->exec(o);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->exit_code, 0) << r->stderr_data;
  EXPECT_EQ(r->stdout_data, "6\n");
}

}  // namespace
}  // namespace forkd::test

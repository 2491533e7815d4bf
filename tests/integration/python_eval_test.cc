// eval in the warm Python worker of the python image (numpy imported before any request).
#include <gtest/gtest.h>

#include "base/files.h"
#include "engine/fork.h"
#include "engine/gc.h"
#include "engine/overlay_template.h"
#include "engine/registry.h"
#include "engine/snapshot.h"
#include "integration/vm_fixture.h"
#include "store/snapshot_store.h"

namespace forkd::test {
namespace {

struct PythonEvalTraits {
  static constexpr const char* kImage = "python";
  static constexpr int kMemoryMib = 512;
};
class PythonEval : public SharedSandboxTest<PythonEvalTraits> {};

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

// A python tag warmed with numpy and a counter in the worker: children start with both, their
// Python state is isolated, and their pseudo-random generators were reseeded apart.
TEST_F(PythonEval, ForkedChildrenKeepTheWarmWorker) {
  engine::SnapshotOptions so;
  so.tag = "pywarm";
  so.image = "python";
  so.memory_mib = 512;
  so.warmup_eval = {"import random\ncounter = 41\nwarm = numpy.arange(3).tolist()"};
  auto snap = engine::create_snapshot(config(), so);
  ASSERT_TRUE(snap) << snap.error().describe();
  engine::ForkOptions fo;
  fo.tag = "pywarm";
  fo.n = 2;
  auto forked = engine::fork_children(config(), fo);
  ASSERT_TRUE(forked) << forked.error().describe();
  std::vector<std::unique_ptr<engine::Sandbox>> kids;
  for (const auto& c : forked->children) {
    ASSERT_FALSE(c.error) << c.error->describe();
    auto sb = engine::Sandbox::attach(config(), c.id);
    ASSERT_TRUE(sb) << sb.error().describe();
    kids.push_back(std::move(*sb));
  }
  auto value = [](engine::Sandbox& sb, const std::string& code) {
    auto r = sb.eval(code);
    EXPECT_TRUE(r) << r.error().describe();
    if (r && r->error) ADD_FAILURE() << *r->error;
    return r ? r->value.value_or("") : "";
  };
  for (auto& k : kids) {
    EXPECT_EQ(value(*k, "counter"), "41");
    EXPECT_EQ(value(*k, "warm"), "[0, 1, 2]");
    EXPECT_EQ(value(*k, "__import__('sys').modules.get('numpy') is not None"), "True");
  }
  (void)value(*kids[0], "counter += 1");
  EXPECT_EQ(value(*kids[0], "counter"), "42");
  EXPECT_EQ(value(*kids[1], "counter"), "41");
  EXPECT_NE(value(*kids[0], "random.random()"), value(*kids[1], "random.random()"));
  EXPECT_NE(value(*kids[0], "numpy.random.rand()"), value(*kids[1], "numpy.random.rand()"));
  // Each child's disk overlay is its own copy of the tag's template overlay.
  store::SnapshotStore snaps(config().home);
  std::string tpl = engine::overlay_template_path(config(), snaps.dir("pywarm"),
                                                  snap->meta.files.at("disk").sha256);
  EXPECT_TRUE(path_exists(tpl)) << tpl;
  (void)value(*kids[0], "open('/root/mine', 'w').write('0') and None");
  EXPECT_EQ(value(*kids[0], "__import__('os').path.exists('/root/mine')"), "True");
  EXPECT_EQ(value(*kids[1], "__import__('os').path.exists('/root/mine')"), "False");
  // A damaged template is not copied: the next child gets its own overlay, and the one after it
  // a new template.
  ASSERT_TRUE(write_file_atomic(tpl, "not a qcow2 image", 0644));
  for (int i = 0; i < 2; ++i) {
    fo.n = 1;
    auto more = engine::fork_children(config(), fo);
    ASSERT_TRUE(more) << more.error().describe();
    ASSERT_FALSE(more->children[0].error) << more->children[0].error->describe();
    auto sb = engine::Sandbox::attach(config(), more->children[0].id);
    ASSERT_TRUE(sb) << sb.error().describe();
    EXPECT_EQ(value(**sb, "counter"), "41");
    kids.push_back(std::move(*sb));
  }
  auto remade = read_file(tpl);
  ASSERT_TRUE(remade) << remade.error().describe();
  EXPECT_EQ(remade->substr(0, 4), "QFI\xfb");
  for (auto& k : kids) (void)engine::remove_sandbox(config(), k->id());
  // Once the tag is gone, gc removes its template.
  ASSERT_TRUE(snaps.remove("pywarm"));
  (void)engine::gc(config());
  EXPECT_FALSE(path_exists(tpl)) << tpl;
}

}  // namespace
}  // namespace forkd::test

// eval in the warm Python worker of the python image (numpy imported before any request).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <sstream>
#include <thread>
#include <vector>

#include "base/files.h"
#include "engine/fork.h"
#include "engine/gc.h"
#include "engine/overlay_template.h"
#include "engine/registry.h"
#include "engine/snapshot.h"
#include "integration/vm_fixture.h"
#include "store/snapshot_store.h"
#include "vmm/jail.h"

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
  // The tag's base image stays in the host's page cache through its children's restores: the
  // shim drops QEMU's advice to evict it when it activates their disks (vmm/lean/qemu_shim.c).
  const std::string base = store::SnapshotStore(config().home).dir("pywarm") + "/base.img";
  ASSERT_TRUE(read_chunks(base, [](const char*, size_t) {}));  // into the page cache
  const size_t cached = page_cache_pages(base);
  ASSERT_GT(cached, 0u) << base;
  engine::ForkOptions fo;
  fo.tag = "pywarm";
  fo.n = 2;
  auto forked = engine::fork_children(config(), fo);
  ASSERT_TRUE(forked) << forked.error().describe();
  if (!vmm::host_jail().lean.dir.empty()) {
    EXPECT_GE(page_cache_pages(base), cached * 99 / 100) << "a restore emptied the base's cache";
  }
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

// The disk of a child stays untouched while it idles and when it reads files: the tag was
// frozen after a sync (no journal left for every child to commit again), the root is mounted
// with lazytime (no inode write for an access time, /etc/hostname's link included, which
// `resumed` reads) and without ext4's background read of every block bitmap, and the kernel's
// periodic writeback is off.
TEST_F(PythonEval, ChildrenOfATagLeaveItsDiskAlone) {
  engine::SnapshotOptions so;
  so.tag = "pyquiet";
  so.image = "python";
  so.memory_mib = 512;
  so.warmup = {"echo warm > /root/warm"};  // a change on the disk right before the freeze
  auto snap = engine::create_snapshot(config(), so);
  ASSERT_TRUE(snap) << snap.error().describe();
  engine::ForkOptions fo;
  fo.tag = "pyquiet";
  const int64_t fork_started = static_cast<int64_t>(std::time(nullptr));
  auto forked = engine::fork_children(config(), fo);
  ASSERT_TRUE(forked) << forked.error().describe();
  ASSERT_FALSE(forked->children[0].error) << forked->children[0].error->describe();
  struct RemoveChild {  // on every way out, failed assertions included
    std::string id;
    ~RemoveChild() { (void)engine::remove_sandbox(config(), id); }
  } remove_child{forked->children[0].id};
  auto sb = engine::Sandbox::attach(config(), forked->children[0].id);
  ASSERT_TRUE(sb) << sb.error().describe();
  // Reads and writes completed on the root disk (/proc/diskstats' 4th and 8th fields).
  auto disk_ops = [&]() -> std::pair<long, long> {
    auto text = (*sb)->read_file("/proc/diskstats");
    EXPECT_TRUE(text) << text.error().describe();
    std::istringstream in(text ? *text : "");
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string major, minor, name;
      long reads = 0, f2 = 0, f3 = 0, f4 = 0, writes = 0;
      f >> major >> minor >> name >> reads >> f2 >> f3 >> f4 >> writes;
      if (name == "vda") return {reads, writes};
    }
    ADD_FAILURE() << "no vda in /proc/diskstats:\n" << (text ? *text : "");
    return {-1, -1};
  };
  auto mounts = (*sb)->read_file("/proc/mounts");
  ASSERT_TRUE(mounts) << mounts.error().describe();
  std::string root = mounts->substr(0, mounts->find('\n'));
  EXPECT_NE(root.find(" / ext4 "), std::string::npos) << root;
  EXPECT_NE(root.find("lazytime"), std::string::npos) << root;
  EXPECT_NE(root.find("no_prefetch_block_bitmaps"), std::string::npos) << root;
  auto writeback = (*sb)->read_file("/proc/sys/vm/dirty_writeback_centisecs");
  ASSERT_TRUE(writeback) << writeback.error().describe();
  EXPECT_EQ(*writeback, "0\n") << "periodic writeback is on";
  // The guest's kernel commits its journal 5 s after a change, and started the bitmaps' read up
  // to 5 s after the mount: 7 s covers both.
  auto at_fork = disk_ops();
  std::this_thread::sleep_for(std::chrono::seconds(7));
  auto idle = disk_ops();
  EXPECT_EQ(idle.first, at_fork.first) << "the idle child read its disk";
  EXPECT_EQ(idle.second, at_fork.second) << "the idle child wrote its disk";
  // /etc/hostname's link keeps the access time of the parent's boot, where the agent read it once
  // (relatime's update on a first read happens there); `resumed` checks it by lstat (unit test
  // Resumed.HostnameFileBecomesALinkToTheKernelsHostname). stat does not follow the link.
  engine::ExecOptions st;
  st.argv = {"stat", "-c", "%X", "/etc/hostname"};
  auto atime = (*sb)->exec(st);
  ASSERT_TRUE(atime) << atime.error().describe();
  ASSERT_EQ(atime->exit_code, 0) << atime->stderr_data;
  EXPECT_LT(std::atoll(atime->stdout_data.c_str()), fork_started)
      << "the child read /etc/hostname's link at its restore";
  // Files read for the first time since they changed (relatime would write their access time).
  engine::ExecOptions eo;
  eo.argv = {"cat", "/etc/hostname", "/root/warm"};
  auto r = (*sb)->exec(eo);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->exit_code, 0) << r->stderr_data;
  EXPECT_NE(r->stdout_data.find("warm"), std::string::npos) << r->stdout_data;
  std::this_thread::sleep_for(std::chrono::seconds(6));
  EXPECT_EQ(disk_ops().second, at_fork.second) << "reading files wrote the child's disk";
}

}  // namespace
}  // namespace forkd::test

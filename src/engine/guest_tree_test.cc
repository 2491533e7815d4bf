#include "engine/guest_tree.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/files.h"

namespace forkd::engine {
namespace {

class GuestTreeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = TempDir::create("forkd-guest-tree");
    ASSERT_TRUE(t);
    tmp_ = std::make_unique<TempDir>(std::move(*t));
    root_ = tmp_->path() + "/root";
    outside_ = tmp_->path() + "/outside";
    agent_ = tmp_->path() + "/agent";
    ASSERT_TRUE(make_dirs(root_, 0700));
    ASSERT_TRUE(make_dirs(outside_, 0755));
    ASSERT_TRUE(write_file_atomic(agent_, "AGENT-BINARY"));
  }
  void put(const std::string& rel, const std::string& data, mode_t mode = 0644) {
    std::string p = root_ + "/" + rel;
    ASSERT_TRUE(make_dirs(p.substr(0, p.rfind('/')), 0755));
    ASSERT_TRUE(write_file_atomic(p, data, mode));
  }
  void link(const std::string& target, const std::string& rel) {
    ASSERT_EQ(::symlink(target.c_str(), (root_ + "/" + rel).c_str()), 0) << rel;
  }
  std::string read(const std::string& path) { return read_file(path).value_or("<missing>"); }

  std::unique_ptr<TempDir> tmp_;
  std::string root_, outside_, agent_;
};

TEST_F(GuestTreeTest, InstallsAgentAndMountPoints) {
  auto at = prepare_guest_tree(root_, agent_);
  ASSERT_TRUE(at) << at.error().describe();
  EXPECT_EQ(*at, "/sbin/forkd-agent");
  EXPECT_EQ(read(root_ + "/sbin/forkd-agent"), "AGENT-BINARY");
  struct stat st;
  ASSERT_EQ(::stat((root_ + "/sbin/forkd-agent").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  ASSERT_EQ(::stat(root_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);  // mkdtemp's 0700 would lock every other guest user out
  for (const char* d : {"dev", "proc", "sys", "tmp", "run", "root"}) {
    ASSERT_EQ(::stat((root_ + "/" + d).c_str(), &st), 0) << d;
    EXPECT_TRUE(S_ISDIR(st.st_mode)) << d;
  }
  ASSERT_EQ(::stat((root_ + "/tmp").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 01777u);
}

TEST_F(GuestTreeTest, FollowsSbinSymlinkInsideTheTree) {
  ASSERT_TRUE(make_dirs(root_ + "/usr/sbin", 0755));
  link("/usr/sbin", "sbin");  // absolute, as in merged-/usr images: resolved in the tree
  auto at = prepare_guest_tree(root_, agent_);
  ASSERT_TRUE(at) << at.error().describe();
  EXPECT_EQ(*at, "/usr/sbin/forkd-agent");
  EXPECT_EQ(read(root_ + "/usr/sbin/forkd-agent"), "AGENT-BINARY");
}

TEST_F(GuestTreeTest, HostileSymlinksNeverLeadOut) {
  link("..", "sbin");  // ".." of the root is the root
  auto at = prepare_guest_tree(root_, agent_);
  ASSERT_TRUE(at) << at.error().describe();
  EXPECT_EQ(*at, "/forkd-agent");
  EXPECT_EQ(read(root_ + "/forkd-agent"), "AGENT-BINARY");
  EXPECT_FALSE(path_exists(tmp_->path() + "/forkd-agent"));

  // Out of the tree, relatively and by the host's absolute path: resolved in the tree, where
  // neither exists, so nothing is written anywhere.
  for (const std::string& target : {std::string("../outside"), outside_}) {
    ASSERT_EQ(::unlink((root_ + "/sbin").c_str()), 0);
    link(target, "sbin");
    EXPECT_FALSE(prepare_guest_tree(root_, agent_)) << target;
    EXPECT_FALSE(path_exists(outside_ + "/forkd-agent")) << target;
  }
}

TEST_F(GuestTreeTest, ReplacesAPlantedAgentWithoutFollowingIt) {
  ASSERT_TRUE(write_file_atomic(outside_ + "/victim", "precious"));
  ASSERT_TRUE(make_dirs(root_ + "/sbin", 0755));
  link(outside_ + "/victim", "sbin/forkd-agent");
  ASSERT_TRUE(prepare_guest_tree(root_, agent_));
  EXPECT_EQ(read(outside_ + "/victim"), "precious");
  struct stat st;
  ASSERT_EQ(::lstat((root_ + "/sbin/forkd-agent").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
}

TEST_F(GuestTreeTest, DetectsPythonInsideTheTreeOnly) {
  EXPECT_FALSE(tree_has_python(root_));
  ASSERT_TRUE(make_dirs(root_ + "/usr/bin", 0755));
  // A link to the host's python (absolute) is resolved in the tree, where there is none.
  link("/usr/bin/python3.99", "usr/bin/python3");
  EXPECT_FALSE(tree_has_python(root_));
  put("usr/bin/python3.99", "#!", 0755);
  EXPECT_TRUE(tree_has_python(root_));
  ASSERT_EQ(::chmod((root_ + "/usr/bin/python3.99").c_str(), 0644), 0);
  EXPECT_FALSE(tree_has_python(root_));  // not executable
}

TEST_F(GuestTreeTest, MeasuresBlocksAndInodes) {
  put("a", std::string(5000, 'x'));                                         // two blocks
  put("d/b", "y");                                                          // one block, plus d
  ASSERT_EQ(::link((root_ + "/a").c_str(), (root_ + "/d/a2").c_str()), 0);  // counted once
  link("short", "l1");
  link(std::string(100, 'p'), "l2");
  auto u = measure_tree(root_);
  ASSERT_TRUE(u) << u.error().describe();
  EXPECT_EQ(u->inodes, 1u + 5u);                     // root, a, d, d/b, l1, l2
  EXPECT_EQ(u->bytes, 4096u * (1 + 2 + 1 + 1 + 1));  // root, a, d, b, l2
  EXPECT_FALSE(measure_tree(root_, 3));
  EXPECT_FALSE(measure_tree(tmp_->path() + "/missing"));
}

TEST_F(GuestTreeTest, Ext4GeometryFollowsTheFormula) {
  TreeUsage u{100ull << 20, 10000};
  Ext4Geometry g = ext4_geometry(u);
  EXPECT_EQ(g.inodes, 10000u + 2500u + 4096u);
  uint64_t used = (100ull << 20) + g.inodes * 256;
  EXPECT_EQ(g.size_mib, (used + used * 3 / 10 + (64ull << 20) + (1 << 20) - 1) >> 20);
  EXPECT_GE(ext4_geometry({}).size_mib, 64u);
}

}  // namespace
}  // namespace forkd::engine

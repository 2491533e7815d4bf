#include "vmm/cgroup.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <ctime>
#include <optional>

#include "base/files.h"
#include "vmm/fake_root_test.h"
#include "vmm/jail.h"

namespace forkd::vmm {
namespace {

using FakeCgroupRoot = FakeRoot;

TEST_F(FakeCgroupRoot, DetectsV2FromRootControllers) {
  put("cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma\n");
  auto l = detect_cgroups(root_);
  EXPECT_EQ(l.version, CgroupVersion::kV2);
  EXPECT_EQ(l.controllers, (std::vector<std::string>{"memory", "cpu", "pids"}));
  EXPECT_EQ(l.hierarchy("pids"), root_);
}

TEST_F(FakeCgroupRoot, HybridWithOnlyHugetlbInV2IsV1) {
  // These hosts: v2 mounted at unified/ holds only hugetlb; the root lists nothing of ours.
  put("unified/cgroup.controllers", "hugetlb\n");
  put("memory/cgroup.procs", "");
  put("cpu/cgroup.procs", "");
  put("pids/cgroup.procs", "");
  auto l = detect_cgroups(root_);
  EXPECT_EQ(l.version, CgroupVersion::kV1);
  EXPECT_EQ(l.controllers.size(), 3u);
  EXPECT_EQ(l.hierarchy("memory"), root_ + "/memory");
}

TEST_F(FakeCgroupRoot, NothingIsNone) {
  auto l = detect_cgroups(root_);
  EXPECT_EQ(l.version, CgroupVersion::kNone);
  EXPECT_FALSE(l.reason.empty());
  auto cg = SandboxCgroup::create(l, "forkd", "sb-1", {});
  ASSERT_FALSE(cg);
  EXPECT_EQ(cg.error().code(), ErrorCode::kUnavailable);
}

TEST_F(FakeCgroupRoot, V2CreateWritesLimitsAndEnablesControllers) {
  put("cgroup.controllers", "memory cpu pids\n");
  auto l = detect_cgroups(root_);
  Limits lim;
  lim.memory_bytes = 256ull << 20;
  lim.cpus = 0.5;
  lim.pids = 64;
  auto cg = SandboxCgroup::create(l, "forkd", "sb-1", lim);
  ASSERT_TRUE(cg) << cg.error().message();
  EXPECT_EQ(get("cgroup.subtree_control"), "+memory +cpu +pids");
  EXPECT_EQ(get("forkd/cgroup.subtree_control"), "+memory +cpu +pids");
  EXPECT_EQ(get("forkd/sb-1/memory.max"), "268435456");
  EXPECT_EQ(get("forkd/sb-1/cpu.max"), "50000 100000");
  EXPECT_EQ(get("forkd/sb-1/pids.max"), "64");
  EXPECT_EQ(get("forkd/sb-1/memory.swap.max"), "<missing>");  // optional, absent: skipped
  EXPECT_EQ(cg->join_files(), (std::vector<std::string>{root_ + "/forkd/sb-1/cgroup.procs"}));
  put("forkd/sb-1/memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
  EXPECT_EQ(cg->oom_kills(), 1u);
  ASSERT_TRUE(cg->remove());
  EXPECT_FALSE(path_exists(root_ + "/forkd/sb-1"));
  EXPECT_TRUE(cg->remove());  // again: already gone is fine
}

TEST_F(FakeCgroupRoot, V1CreateUsesOneHierarchyPerController) {
  put("memory/cgroup.procs", "");
  put("cpu/cgroup.procs", "");
  put("pids/cgroup.procs", "");
  auto l = detect_cgroups(root_);
  Limits lim;
  lim.memory_bytes = 128ull << 20;
  lim.cpus = 2;
  lim.pids = 100;
  auto cg = SandboxCgroup::create(l, "forkd", "sb-2", lim);
  ASSERT_TRUE(cg) << cg.error().message();
  EXPECT_EQ(get("memory/forkd/sb-2/memory.limit_in_bytes"), "134217728");
  EXPECT_EQ(get("cpu/forkd/sb-2/cpu.cfs_period_us"), "100000");
  EXPECT_EQ(get("cpu/forkd/sb-2/cpu.cfs_quota_us"), "200000");
  EXPECT_EQ(get("pids/forkd/sb-2/pids.max"), "100");
  // v1: each through its tasks file (a one-thread process moves without the global lock).
  EXPECT_EQ(cg->join_files(), (std::vector<std::string>{root_ + "/memory/forkd/sb-2/tasks",
                                                        root_ + "/cpu/forkd/sb-2/tasks",
                                                        root_ + "/pids/forkd/sb-2/tasks"}));
  put("memory/forkd/sb-2/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
  EXPECT_EQ(cg->oom_kills(), 2u);
  auto again = SandboxCgroup::existing(l, "forkd", "sb-2");
  EXPECT_EQ(again.oom_kills(), 2u);
  ASSERT_TRUE(cg->remove());
  EXPECT_FALSE(path_exists(root_ + "/pids/forkd/sb-2"));
}

TEST_F(FakeCgroupRoot, V1WithoutPidsRefusesAPidsLimitAndLeavesNothing) {
  put("memory/cgroup.procs", "");
  auto l = detect_cgroups(root_);
  Limits lim;
  lim.pids = 10;
  auto cg = SandboxCgroup::create(l, "forkd", "sb-3", lim);
  ASSERT_FALSE(cg);
  EXPECT_EQ(cg.error().code(), ErrorCode::kUnavailable);
  EXPECT_NE(cg.error().message().find("pids"), std::string::npos);
  EXPECT_FALSE(path_exists(root_ + "/memory/forkd/sb-3"));
}

TEST_F(FakeCgroupRoot, SweepRemovesOnlyOldLeaves) {
  put("pids/cgroup.procs", "");
  auto l = detect_cgroups(root_);
  ASSERT_TRUE(make_dirs(root_ + "/pids/forkd/old"));
  ASSERT_TRUE(make_dirs(root_ + "/pids/forkd/new"));
  struct timespec times[2] = {{0, UTIME_OMIT}, {std::time(nullptr) - 3600, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (root_ + "/pids/forkd/old").c_str(), times, 0), 0);
  EXPECT_EQ(sweep_stale_leaves(l, "forkd", std::chrono::seconds(120)), 1);
  EXPECT_FALSE(path_exists(root_ + "/pids/forkd/old"));
  EXPECT_TRUE(path_exists(root_ + "/pids/forkd/new")) << "a leaf being set up is left alone";
}

TEST(LimitWrites, TinyCpuQuotaIsRaisedToTheKernelMinimum) {
  Limits lim;
  lim.cpus = 0.001;
  auto w = limit_writes(CgroupVersion::kV2, lim);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].value, "1000 100000");
}

TEST(QemuVersion, Compares) {
  EXPECT_TRUE(version_at_least("10.0.2", 8, 2));
  EXPECT_TRUE(version_at_least("8.2.0", 8, 2));
  EXPECT_FALSE(version_at_least("7.2.22", 8, 2));
  EXPECT_FALSE(version_at_least("", 8, 2));
}

}  // namespace
}  // namespace forkd::vmm

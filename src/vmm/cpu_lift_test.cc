#include "vmm/cpu_lift.h"

#include <gtest/gtest.h>

#include <optional>

#include "base/files.h"
#include "vmm/fake_root_test.h"

namespace forkd::vmm {
namespace {

TEST(V1CpuCgroup, FindsTheCpuLine) {
  EXPECT_EQ(v1_cpu_cgroup("9:name=systemd:/\n4:memory:/forkd/sb-1\n1:cpu:/forkd/sb-1\n0::/\n"),
            "/forkd/sb-1");
  EXPECT_EQ(v1_cpu_cgroup("3:cpu,cpuacct:/system.slice/forkd.service\n"),
            "/system.slice/forkd.service");
  EXPECT_EQ(v1_cpu_cgroup("1:cpu:/"), "/");
  // cpuacct or cpuset alone is not cpu; v2's line names no controller.
  EXPECT_EQ(v1_cpu_cgroup("2:cpuacct:/a\n3:cpuset:/b\n0::/c\n"), std::nullopt);
  EXPECT_EQ(v1_cpu_cgroup(""), std::nullopt);
  EXPECT_EQ(v1_cpu_cgroup("garbage\n1:cpu\n1:cpu:relative\n"), std::nullopt);
  EXPECT_EQ(v1_cpu_cgroup("1:cpu:/forkd/../../etc\n"), std::nullopt);
}

// A fake v1 cpu hierarchy and /proc: process 100 has threads 100 (main) and 101 (vCPU), both
// in /forkd/sb-1.
class FakeLift : public FakeRoot {
 protected:
  void SetUp() override {
    FakeRoot::SetUp();
    if (HasFatalFailure()) return;
    layout_.version = CgroupVersion::kV1;
    layout_.root = root_ + "/cg";
    layout_.controllers = {"cpu"};
    put("cg/cpu/forkd/sb-1/tasks", "");
    for (const char* tid : {"100", "101"}) {
      put(std::string("proc/100/task/") + tid + "/cgroup", "1:cpu:/forkd/sb-1\n4:memory:/x\n");
      put(std::string("proc/") + tid + "/status",
          std::string("Name:\tqemu\nTgid:\t100\nPid:\t") + tid + "\n");
    }
  }
  CgroupLayout layout_;
};

TEST_F(FakeLift, LiftsIntoTheGroupAndPutsBack) {
  {
    CpuLift lift(layout_, "forkd-pause", root_ + "/proc");
    EXPECT_TRUE(lift.lift(100, 100));
    EXPECT_EQ(get("cg/cpu/forkd-pause/tasks"), "100");
    EXPECT_EQ(get("cg/cpu/forkd-pause/cpu.shares"), std::to_string(kLiftShares));
    EXPECT_FALSE(lift.lift(100, 999));  // no such thread
    EXPECT_EQ(lift.lifted(), 1u);
  }  // the destructor puts it back
  EXPECT_EQ(get("cg/cpu/forkd/sb-1/tasks"), "100");
}

TEST_F(FakeLift, LeavesAThreadThatLeftItsProcess) {
  CpuLift lift(layout_, "forkd-pause", root_ + "/proc");
  ASSERT_TRUE(lift.lift(100, 101));
  ASSERT_TRUE(remove_tree(root_ + "/proc/100/task/101"));
  lift.restore();
  EXPECT_EQ(get("cg/cpu/forkd/sb-1/tasks"), "");  // tid 101 may be another process's now
  EXPECT_EQ(lift.lifted(), 0u);
}

TEST_F(FakeLift, NothingWithoutAV1CpuHierarchy) {
  for (CgroupVersion v : {CgroupVersion::kV2, CgroupVersion::kNone}) {
    CgroupLayout l = layout_;
    l.version = v;
    CpuLift lift(l, "forkd-pause", root_ + "/proc");
    EXPECT_FALSE(lift.lift(100, 100));
  }
  CgroupLayout no_cpu = layout_;
  no_cpu.controllers = {"memory"};
  CpuLift lift(no_cpu, "forkd-pause", root_ + "/proc");
  EXPECT_FALSE(lift.lift(100, 100));
  EXPECT_FALSE(path_exists(root_ + "/cg/cpu/forkd-pause"));
}

TEST_F(FakeLift, ReturnsLeftoversToTheirProcessWhenAllowed) {
  // A forkd died mid-copy: thread 100 sits in the group, its vCPU 101 where it always was.
  put("cg/cpu/forkd-pause/tasks", "100\n");
  put("proc/100/task/100/cgroup", "1:cpu:/forkd-pause\n");
  CpuLift lift(layout_, "forkd-pause", root_ + "/proc");
  EXPECT_EQ(lift.return_leftovers([](pid_t) { return false; }), 0);
  EXPECT_EQ(get("cg/cpu/forkd/sb-1/tasks"), "");
  pid_t asked = 0;
  EXPECT_EQ(lift.return_leftovers([&](pid_t p) {
    asked = p;
    return true;
  }),
            1);
  EXPECT_EQ(asked, 100);
  EXPECT_EQ(get("cg/cpu/forkd/sb-1/tasks"), "100");
}

}  // namespace
}  // namespace forkd::vmm

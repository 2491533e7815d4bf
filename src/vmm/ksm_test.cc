#include "vmm/ksm.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "base/files.h"
#include "base/subprocess.h"

namespace forkd::vmm {
namespace {

TEST(Ksm, StateIsReadFromTheKernelsFiles) {
  auto d = TempDir::create("ksm-test");
  ASSERT_TRUE(d);
  const std::string dir = d->path();
  EXPECT_FALSE(read_ksm_state(dir).present) << "no run file: no KSM";
  for (auto [name, value] : {std::pair{"run", "1\n"},
                             {"pages_shared", "7\n"},
                             {"pages_sharing", "9000\n"},
                             {"full_scans", "3\n"},
                             {"pages_to_scan", "100\n"},
                             {"sleep_millisecs", "20\n"}}) {
    ASSERT_TRUE(write_file_atomic(dir + "/" + name, value));
  }
  auto k = read_ksm_state(dir);
  EXPECT_TRUE(k.present);
  EXPECT_TRUE(k.running);
  EXPECT_EQ(k.pages_shared, 7u);
  EXPECT_EQ(k.pages_sharing, 9000u);
  EXPECT_EQ(k.full_scans, 3u);
  EXPECT_EQ(k.pages_to_scan, 100u);
  EXPECT_EQ(k.sleep_ms, 20u);
  ASSERT_TRUE(write_file_atomic(dir + "/run", "0\n"));
  ASSERT_TRUE(write_file_atomic(dir + "/pages_sharing", "junk"));
  k = read_ksm_state(dir);
  EXPECT_TRUE(k.present);
  EXPECT_FALSE(k.running);
  EXPECT_EQ(k.pages_sharing, 0u) << "an unreadable figure counts as 0";
  ASSERT_TRUE(set_ksmd_pages_to_scan(1000, dir));
  EXPECT_EQ(read_ksm_state(dir).pages_to_scan, 1000u);
  ASSERT_TRUE(set_ksmd_running(true, dir));
  EXPECT_TRUE(read_ksm_state(dir).running);
}

// A measurement's changes to ksmd are set back, and only those: a ksmd that was running stays
// running, a rate that was already right is not written.
TEST(Ksm, MeasurementSetsBackWhatItChanged) {
  auto d = TempDir::create("ksm-test");
  ASSERT_TRUE(d);
  const std::string dir = d->path();
  EXPECT_FALSE(run_ksmd_for_measurement(1000, dir)) << "no KSM there";
  restore_ksmd();
  ASSERT_TRUE(write_file_atomic(dir + "/run", "0\n"));
  ASSERT_TRUE(write_file_atomic(dir + "/pages_to_scan", "100\n"));
  auto started = run_ksmd_for_measurement(1000, dir);
  ASSERT_TRUE(started) << started.error().describe();
  EXPECT_TRUE(*started);
  EXPECT_TRUE(read_ksm_state(dir).running);
  EXPECT_EQ(read_ksm_state(dir).pages_to_scan, 1000u);
  restore_ksmd();
  EXPECT_FALSE(read_ksm_state(dir).running);
  EXPECT_EQ(read_ksm_state(dir).pages_to_scan, 100u);
  restore_ksmd();  // twice: nothing left to set back
  EXPECT_EQ(read_ksm_state(dir).pages_to_scan, 100u);

  ASSERT_TRUE(write_file_atomic(dir + "/run", "1\n"));
  started = run_ksmd_for_measurement(0, dir);
  ASSERT_TRUE(started);
  EXPECT_FALSE(*started);
  ASSERT_TRUE(write_file_atomic(dir + "/pages_to_scan", "555\n"));  // the host's own change
  restore_ksmd();
  EXPECT_TRUE(read_ksm_state(dir).running) << "it was running before";
  EXPECT_EQ(read_ksm_state(dir).pages_to_scan, 555u) << "the rate was never the measurement's";
}

// SpawnOptions::memory_merge marks the launched process mergeable, as its own ksm_stat says;
// a process launched without it is not. Where the kernel cannot, the reason says so.
TEST(Ksm, MemoryMergeMarksTheLaunchedProcess) {
  if (std::string why = ksm_unsupported_reason(); !why.empty()) GTEST_SKIP() << why;
  for (bool merge : {false, true}) {
    SpawnOptions o;
    o.memory_merge = merge;
    auto c = Child::spawn({"grep", "-qx", "ksm_merge_any: yes", "/proc/self/ksm_stat"}, o);
    ASSERT_TRUE(c) << c.error().describe();
    auto code = c->wait(std::chrono::seconds(10));
    ASSERT_TRUE(code);
    EXPECT_EQ(*code, merge ? 0 : 1) << "memory_merge " << merge;
  }
  EXPECT_EQ(process_merge_any(::getpid()), std::optional<bool>(false));
  EXPECT_EQ(process_merge_any(-1), std::nullopt);
}

}  // namespace
}  // namespace forkd::vmm

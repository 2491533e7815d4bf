// Runs after every VM test (ctest FIXTURES_CLEANUP): no QEMU started by a test may still run.
#include <gtest/gtest.h>

#include <thread>

#include "integration/vm_fixture.h"

namespace forkd::test {
namespace {

TEST(NoLeftovers, NoQemuProcessRemains) {
  // Every test binary's home is $TMPDIR/forkd-test-home.*; any QEMU whose command line names
  // such a home was left behind by a test.
  // A process killed a moment ago may still be exiting: give it a few seconds.
  auto pids = qemu_pids_matching(kTestHomePrefix);
  for (int i = 0; i < 60 && !pids.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    pids = qemu_pids_matching(kTestHomePrefix);
  }
  std::string list;
  for (int p : pids) list += std::to_string(p) + " ";
  EXPECT_TRUE(pids.empty()) << "QEMU processes left behind: " << list;
}

}  // namespace
}  // namespace forkd::test

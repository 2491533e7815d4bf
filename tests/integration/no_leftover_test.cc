// Runs after every VM test (ctest FIXTURES_CLEANUP): no QEMU of ours may still be running.
#include <gtest/gtest.h>

#include "integration/vm_fixture.h"

namespace forkd::test {
namespace {

TEST(NoLeftovers, NoQemuProcessRemains) {
  auto pids = qemu_pids_for_home(config().home);
  std::string list;
  for (int p : pids) list += std::to_string(p) + " ";
  EXPECT_TRUE(pids.empty()) << "QEMU processes left behind: " << list;
}

}  // namespace
}  // namespace forkd::test

#include "engine/vm_setup.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace forkd::engine {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

vmm::VmConfig config(vmm::MachineType machine, vmm::Accel accel) {
  vmm::VmConfig vc;
  vc.machine = machine;
  vc.accel = accel;
  return vc;
}

// Only microvm under TCG drops the PIT and keeps the TSC; pc and KVM guests keep what they had.
TEST(IdleQuietTcg, MicrovmUnderTcgOnly) {
  EXPECT_TRUE(idle_quiet_tcg(config(vmm::MachineType::kMicrovm, vmm::Accel::kTcg)));
  EXPECT_FALSE(idle_quiet_tcg(config(vmm::MachineType::kMicrovm, vmm::Accel::kKvm)));
  EXPECT_FALSE(idle_quiet_tcg(config(vmm::MachineType::kPc, vmm::Accel::kTcg)));
}

TEST(HostKernelArgs, TscReliableWhereTheGuestIsKeptQuiet) {
  auto tcg = host_kernel_args(config(vmm::MachineType::kMicrovm, vmm::Accel::kTcg));
  EXPECT_THAT(tcg, HasSubstr(" pci=off"));
  EXPECT_THAT(tcg, HasSubstr(" tsc=reliable"));
  EXPECT_THAT(host_kernel_args(config(vmm::MachineType::kMicrovm, vmm::Accel::kKvm)),
              Not(HasSubstr("tsc=")));
  EXPECT_THAT(host_kernel_args(config(vmm::MachineType::kPc, vmm::Accel::kTcg)),
              Not(HasSubstr("tsc=")));
}

}  // namespace
}  // namespace forkd::engine

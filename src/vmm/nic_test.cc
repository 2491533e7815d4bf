#include "vmm/nic.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "vmm/qemu_cmdline.h"

namespace forkd::vmm {
namespace {

TEST(ParseUsernetForwards, ReadsQemuTenOutput) {
  const char* text =
      "Hub -1 (net0):\r\n"
      "  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n"
      "  TCP[HOST_FORWARD]  12       127.0.0.1 34137       10.0.2.15  8080     0     0\r\n"
      "  TCP[ESTABLISHED]   14       10.0.2.15 40000        10.0.2.2    80     0     0\r\n"
      "  TCP[HOST_FORWARD]  13       127.0.0.1 40001       10.0.2.15    22     0     0\r\n";
  auto f = parse_usernet_forwards(text);
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f[0].host, 34137);
  EXPECT_EQ(f[0].guest, 8080);
  EXPECT_EQ(f[0].address, "127.0.0.1");
  EXPECT_EQ(f[1].host, 40001);
  EXPECT_EQ(f[1].guest, 22);
}

TEST(ParseUsernetForwards, SkipsMalformedLines) {
  const char* text =
      "  TCP[HOST_FORWARD]  12       127.0.0.1 99999       10.0.2.15  8080     0     0\n"
      "  TCP[HOST_FORWARD]  12       127.0.0.1 12x       10.0.2.15  8080     0     0\n"
      "  TCP[HOST_FORWARD]  12\n"
      "garbage\n";
  EXPECT_TRUE(parse_usernet_forwards(text).empty());
}

TEST(BuildQemuArgv, NicIsLastAndUserMode) {
  VmConfig c;
  c.kernel = "/k";
  c.qmp_socket = "/q";
  c.agent_socket = "/a";
  auto without = build_qemu_argv(c);
  EXPECT_EQ(std::count(without.begin(), without.end(), "-netdev"), 0);
  c.nic = true;
  auto argv = build_qemu_argv(c);
  auto nd = std::find(argv.begin(), argv.end(), "-netdev");
  ASSERT_NE(nd, argv.end());
  EXPECT_EQ(*(nd + 1), "user,id=net0,net=10.0.2.0/24,ipv6=off");
  auto last_dev = std::find(argv.rbegin(), argv.rend(), "-device");
  EXPECT_EQ(*(last_dev.base()),
            "virtio-net-device,netdev=net0,mac=52:54:00:12:34:56,guest_announce=off");
  c.machine = MachineType::kPc;
  auto pc = build_qemu_argv(c);
  auto pc_dev = std::find(pc.rbegin(), pc.rend(), "-device");
  EXPECT_EQ(*(pc_dev.base()),
            "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,guest_announce=off");
}

}  // namespace
}  // namespace forkd::vmm

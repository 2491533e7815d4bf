#include "vmm/static_qemu.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "base/files.h"
#include "vmm/qemu_cmdline.h"

namespace forkd::vmm {
namespace {

// A build directory as scripts/build-qemu-static.sh leaves it; the binary is a script.
std::string make_build(const TempDir& d, const std::string& version) {
  const std::string dir = d.path() + "/qemu-static";
  EXPECT_EQ(::mkdir(dir.c_str(), 0755), 0);
  EXPECT_EQ(::mkdir((dir + "/bin").c_str(), 0755), 0);
  EXPECT_TRUE(write_file_atomic(dir + "/bin/qemu-system-x86_64", "#!/bin/sh\n"));
  EXPECT_EQ(::chmod((dir + "/bin/qemu-system-x86_64").c_str(), 0755), 0);
  EXPECT_TRUE(write_file_atomic(dir + "/version", version + "\n"));
  EXPECT_EQ(::chmod((dir + "/version").c_str(), 0644), 0);
  return dir;
}

TEST(StaticQemu, UsedOnlyWhenBuiltFromTheInstalledVersionAndNobodyElseMayWriteIt) {
  auto d = TempDir::create("static-qemu-test");
  ASSERT_TRUE(d);
  StaticQemu none = find_static_qemu(d->path() + "/qemu-static", "10.0.2");
  EXPECT_TRUE(none.binary.empty());
  EXPECT_NE(none.reason.find("make qemu-static"), std::string::npos) << none.reason;

  const std::string dir = make_build(*d, "10.0.2");
  StaticQemu s = find_static_qemu(dir, "10.0.2");
  EXPECT_EQ(s.binary, dir + "/bin/qemu-system-x86_64") << s.reason;

  StaticQemu other = find_static_qemu(dir, "10.1.0");
  EXPECT_TRUE(other.binary.empty()) << "a build of another version than the installed QEMU";
  EXPECT_NE(other.reason.find("built from QEMU 10.0.2, but the installed QEMU is 10.1.0"),
            std::string::npos)
      << other.reason;

  ASSERT_EQ(::chmod((dir + "/bin").c_str(), 0777), 0);
  StaticQemu writable = find_static_qemu(dir, "10.0.2");
  EXPECT_TRUE(writable.binary.empty()) << "bin/ writable by others";
  EXPECT_NE(writable.reason.find("bin"), std::string::npos) << writable.reason;
  ASSERT_EQ(::chmod((dir + "/bin").c_str(), 0755), 0);

  ASSERT_EQ(::chmod((dir + "/version").c_str(), 0666), 0);
  EXPECT_TRUE(find_static_qemu(dir, "10.0.2").binary.empty()) << "version writable by others";
}

TEST(StaticQemu, RunsOnlyTheVmsItFits) {
  VmConfig cfg;
  cfg.qemu_binary = "qemu-system-x86_64";
  cfg.library_dir = "/opt/forkd/qemu-lean";
  EXPECT_EQ(qemu_binary_for(cfg), "qemu-system-x86_64") << "not built";
  cfg.static_qemu = "/opt/forkd/qemu-static/bin/qemu-system-x86_64";
  EXPECT_TRUE(fits_static_qemu(cfg));
  EXPECT_EQ(qemu_binary_for(cfg), cfg.static_qemu);
  EXPECT_EQ(build_qemu_argv(cfg).front(), cfg.static_qemu);

  VmConfig nic = cfg;
  nic.nic = true;  // no slirp, no tap in the build
  EXPECT_FALSE(fits_static_qemu(nic));
  EXPECT_EQ(build_qemu_argv(nic).front(), "qemu-system-x86_64");

  VmConfig pc = cfg;
  pc.machine = MachineType::kPc;
  EXPECT_FALSE(fits_static_qemu(pc));

  VmConfig no_shim = cfg;
  no_shim.library_dir.clear();  // FORKD_LEAN_QEMU=0: QEMU's own answers everywhere
  EXPECT_FALSE(fits_static_qemu(no_shim));

  VmConfig dest = cfg;  // a branch's destination skips its RAM sync through the pmem stub
  dest.skip_ram_sync = true;
  dest.memory_share = true;
  dest.memory_file = "/tmp/memory";
  ASSERT_TRUE(skips_ram_sync(dest));
  EXPECT_FALSE(fits_static_qemu(dest));
  dest.skip_ram_sync = false;
  EXPECT_TRUE(fits_static_qemu(dest));
}

}  // namespace
}  // namespace forkd::vmm

#include "vmm/qemu_cmdline.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "vmm/accel.h"
#include "vmm/code_pages.h"

namespace forkd::vmm {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

VmConfig base_config(MachineType machine) {
  VmConfig c;
  c.name = "sb-1";
  c.machine = machine;
  c.kernel = "/img/vmlinuz";
  c.initrd = "/img/initrd";
  c.kernel_append = "console=ttyS0 quiet";
  c.qmp_socket = "/run/sb-1/qmp.sock";
  c.agent_socket = "/run/sb-1/agent.sock";
  c.console_log = "/run/sb-1/console.log";
  c.pid_file = "/run/sb-1/pid";
  return c;
}

// The value following the first occurrence of flag, or "<absent>".
std::string value_of(const std::vector<std::string>& argv, const std::string& flag) {
  auto it = std::find(argv.begin(), argv.end(), flag);
  if (it == argv.end() || it + 1 == argv.end()) return "<absent>";
  return *(it + 1);
}

// Every value passed with flag, in order.
std::vector<std::string> values_of(const std::vector<std::string>& argv, const std::string& flag) {
  std::vector<std::string> out;
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == flag) out.push_back(argv[i + 1]);
  }
  return out;
}

bool has_flag(const std::vector<std::string>& argv, const std::string& flag) {
  return std::find(argv.begin(), argv.end(), flag) != argv.end();
}

TEST(BuildQemuArgv, MicrovmDefaults) {
  auto argv = build_qemu_argv(base_config(MachineType::kMicrovm));
  EXPECT_EQ(argv[0], "qemu-system-x86_64");
  // Thread names: a branch finds QEMU's migration and monitor threads by them.
  EXPECT_EQ(value_of(argv, "-name"), "sb-1,debug-threads=on");
  EXPECT_EQ(value_of(argv, "-machine"),
            "microvm,x-option-roms=off,isa-serial=on,rtc=on,mem-merge=off,suppress-vmdesc=on");
  EXPECT_EQ(value_of(argv, "-accel"), "tcg");
  EXPECT_EQ(value_of(argv, "-cpu"), "max");
  EXPECT_EQ(value_of(argv, "-smp"), "1");
  EXPECT_EQ(value_of(argv, "-m"), "262152K") << "TCG: 256 MiB and the 8 KiB pad";
  EXPECT_EQ(value_of(argv, "-kernel"), "/img/vmlinuz");
  EXPECT_EQ(value_of(argv, "-initrd"), "/img/initrd");
  EXPECT_EQ(value_of(argv, "-append"), "console=ttyS0 quiet");
  EXPECT_TRUE(has_flag(argv, "-nodefaults"));
  EXPECT_TRUE(has_flag(argv, "-no-user-config"));
  EXPECT_TRUE(has_flag(argv, "-no-reboot"));
  EXPECT_EQ(value_of(argv, "-display"), "none");
  EXPECT_FALSE(has_flag(argv, "-vga"));
  EXPECT_FALSE(has_flag(argv, "-nographic"));
  EXPECT_EQ(value_of(argv, "-serial"), "chardev:console");
  EXPECT_EQ(value_of(argv, "-mon"), "chardev=qmp,mode=control");
  EXPECT_THAT(values_of(argv, "-chardev"),
              testing::ElementsAre("file,id=console,path=/run/sb-1/console.log",
                                   "socket,id=qmp,path=/run/sb-1/qmp.sock,server=on,wait=off",
                                   "socket,id=agent,path=/run/sb-1/agent.sock,server=on,wait=off"));
  auto devices = values_of(argv, "-device");
  EXPECT_THAT(devices, Contains("virtio-serial-device,id=vser"));
  EXPECT_THAT(devices, Contains("virtserialport,bus=vser.0,chardev=agent,name=org.forkd.agent"));
  EXPECT_THAT(devices, Contains("virtio-rng-device,rng=rng"));
  EXPECT_THAT(devices, Not(Contains(HasSubstr("vmgenid"))));
  EXPECT_THAT(devices, Not(Contains(HasSubstr("virtio-blk"))));
  EXPECT_THAT(values_of(argv, "-object"), Contains("rng-random,id=rng,filename=/dev/urandom"));
  EXPECT_FALSE(has_flag(argv, "-drive"));
  EXPECT_FALSE(has_flag(argv, "-incoming"));
  EXPECT_FALSE(has_flag(argv, "-S"));
  EXPECT_FALSE(has_flag(argv, "-daemonize"));
  EXPECT_EQ(value_of(argv, "-pidfile"), "/run/sb-1/pid");
  EXPECT_EQ(value_of(argv, "-sandbox"),
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
}

TEST(BuildQemuArgv, PcUsesPciDevicesAndVmgenid) {
  VmConfig c = base_config(MachineType::kPc);
  c.disk = "/run/sb-1/disk.qcow2";
  auto argv = build_qemu_argv(c);
  EXPECT_THAT(value_of(argv, "-machine"), testing::StartsWith("pc"));
  EXPECT_EQ(value_of(argv, "-vga"), "none");
  auto devices = values_of(argv, "-device");
  EXPECT_THAT(devices, Contains("virtio-serial-pci,id=vser"));
  EXPECT_THAT(devices, Contains("virtio-rng-pci,rng=rng"));
  EXPECT_THAT(devices, Contains("virtio-blk-pci,drive=root"));
  EXPECT_THAT(devices, Contains("vmgenid,guid=auto"));
}

TEST(BuildQemuArgv, DiskOnMicrovm) {
  VmConfig c = base_config(MachineType::kMicrovm);
  c.disk = "/d/root.raw";
  c.disk_format = "raw";
  auto argv = build_qemu_argv(c);
  EXPECT_EQ(value_of(argv, "-drive"),
            "file=/d/root.raw,format=raw,if=none,id=root,cache=writeback");
  EXPECT_THAT(values_of(argv, "-device"), Contains("virtio-blk-device,drive=root"));
}

TEST(BuildQemuArgv, MemoryFileSharedAndPrivate) {
  VmConfig c = base_config(MachineType::kMicrovm);
  c.memory_mib = 512;
  c.memory_file = "/dev/shm/t/memory";
  c.memory_share = true;
  auto argv = build_qemu_argv(c);
  EXPECT_EQ(value_of(argv, "-machine"),
            "microvm,x-option-roms=off,isa-serial=on,rtc=on,memory-backend=mem,mem-merge=off,"
            "suppress-vmdesc=on");
  EXPECT_EQ(value_of(argv, "-m"), "524296K");
  EXPECT_THAT(
      values_of(argv, "-object"),
      Contains("memory-backend-file,id=mem,size=524296K,mem-path=/dev/shm/t/memory,share=on"));
  c.memory_share = false;
  argv = build_qemu_argv(c);
  EXPECT_THAT(values_of(argv, "-object"), Contains(HasSubstr(",share=off")));
}

// A branch destination's memory file is not synced by QEMU: pmem=on, only with share=on and only
// with forkd's stub libraries (whose pmem_persist can skip it).
TEST(BuildQemuArgv, SkipRamSyncMarksTheBackendPmemOnlyWithTheStubs) {
  VmConfig c = base_config(MachineType::kMicrovm);
  c.memory_file = "/d/memory";
  c.memory_share = true;
  c.skip_ram_sync = true;
  EXPECT_THAT(values_of(build_qemu_argv(c), "-object"), Not(Contains(HasSubstr("pmem"))))
      << "QEMU's own libpmem would flush the CPU caches over the whole memory";
  c.library_dir = "/opt/forkd/qemu-lean";
  EXPECT_THAT(values_of(build_qemu_argv(c), "-object"), Contains(HasSubstr(",share=on,pmem=on")));
  EXPECT_TRUE(skips_ram_sync(c)) << "what the environment's FORKD_PMEM_PERSIST follows too";
  c.memory_share = false;
  EXPECT_THAT(values_of(build_qemu_argv(c), "-object"), Not(Contains(HasSubstr("pmem"))));
  EXPECT_FALSE(skips_ram_sync(c));
  c.memory_share = true;
  c.skip_ram_sync = false;
  EXPECT_THAT(values_of(build_qemu_argv(c), "-object"), Not(Contains(HasSubstr("pmem"))));
}

// The code buffer's window (vmm/code_pages.h) needs what the collapse needs: TCG, one vCPU, huge
// pages and the shim; FORKD_COLLAPSE_CODE_PAGES wins over it, and K stays in the shim's range.
TEST(CodePagesSettings, AWindowOnlyWhereTheShimCanKeepOne) {
  VmConfig c = base_config(MachineType::kMicrovm);
  c.accel = Accel::kTcg;
  c.cpus = 1;
  c.library_dir = "/opt/forkd/qemu-lean";
  c.code_window = 2;
  EXPECT_TRUE(can_window_code_pages(c));
  EXPECT_TRUE(windows_code_pages(c));
  EXPECT_FALSE(collapses_code_pages(c));
  c.collapse_code_pages = true;
  EXPECT_FALSE(windows_code_pages(c));
  EXPECT_TRUE(collapses_code_pages(c));
  c.collapse_code_pages = false;
  for (int k : {-1, kMaxCodeWindow}) {
    c.code_window = k;
    EXPECT_FALSE(windows_code_pages(c)) << k;
  }
  c.code_window = kMaxCodeWindow - 1;
  EXPECT_TRUE(windows_code_pages(c));
  auto without = [&](auto change) {
    VmConfig d = c;
    change(d);
    return !can_window_code_pages(d) && !windows_code_pages(d);
  };
  EXPECT_TRUE(without([](VmConfig& d) { d.accel = Accel::kKvm; }));
  EXPECT_TRUE(without([](VmConfig& d) { d.cpus = 2; }));
  EXPECT_TRUE(without([](VmConfig& d) { d.huge_pages = false; }));
  EXPECT_TRUE(without([](VmConfig& d) { d.library_dir.clear(); }));
}

TEST(BuildQemuArgv, PreallocBringsASharedMemoryFileInAtStart) {
  VmConfig c = base_config(MachineType::kMicrovm);
  c.memory_file = "/d/memory";
  c.memory_share = true;
  EXPECT_THAT(values_of(build_qemu_argv(c), "-object"), Not(Contains(HasSubstr("prealloc"))));
  c.prealloc_threads = 2;
  EXPECT_THAT(values_of(build_qemu_argv(c), "-object"),
              Contains(HasSubstr(",share=on,prealloc=on,prealloc-threads=2")));
  c.memory_share = false;  // a child's copy-on-write mapping of a tag: never brought in whole
  EXPECT_THAT(values_of(build_qemu_argv(c), "-object"), Not(Contains(HasSubstr("prealloc"))));
}

// Upstream stopped syncing volatile file-backed RAM in 10.1, and in the 10.0.3 and 7.2.19 stable
// releases.
TEST(QemuVersion, VolatileRamSyncEndsWithUpstreamsFixAndItsBackports) {
  EXPECT_TRUE(qemu_syncs_volatile_ram("10.0.2"));
  EXPECT_FALSE(qemu_syncs_volatile_ram("10.0.3"));
  EXPECT_FALSE(qemu_syncs_volatile_ram("10.1.0"));
  EXPECT_FALSE(qemu_syncs_volatile_ram("11.0.0"));
  EXPECT_TRUE(qemu_syncs_volatile_ram("7.2.18"));
  EXPECT_FALSE(qemu_syncs_volatile_ram("7.2.22"));
  EXPECT_TRUE(qemu_syncs_volatile_ram("9.2.4"));
  EXPECT_TRUE(qemu_syncs_volatile_ram("8.2"));
  EXPECT_TRUE(qemu_syncs_volatile_ram("")) << "unknown";
}

// Under TCG with a QEMU before 9.0 a new VM's RAM is not a multiple of 256 KiB (so the migration
// dirty sync re-arms TCG's write tracking, see guest_ram_bytes); 9.0+ and KVM get the plain size;
// an explicit size (a restore of a tag) is used as it is, in M when it is whole MiB.
TEST(GuestRamBytes, PadOnlyUnderTcgBeforeQemu9) {
  EXPECT_EQ(guest_ram_bytes(256, Accel::kTcg), (256u << 20) + kTcgRamPadBytes);
  EXPECT_NE(guest_ram_bytes(1024, Accel::kTcg) % (256u << 10), 0u);
  EXPECT_EQ(guest_ram_bytes(1024, Accel::kTcg) % 8192, 0u) << "QEMU's -m granularity";
  EXPECT_EQ(guest_ram_bytes(256, Accel::kKvm), 256u << 20);
  EXPECT_EQ(guest_ram_bytes(256, Accel::kTcg, false), 256u << 20);
  EXPECT_EQ(guest_ram_bytes(256, Accel::kKvm, true), 256u << 20);
  EXPECT_TRUE(needs_tcg_ram_pad("7.2.22"));
  EXPECT_TRUE(needs_tcg_ram_pad("8.2.2"));
  EXPECT_TRUE(needs_tcg_ram_pad("")) << "unknown: padded, the safe side";
  EXPECT_FALSE(needs_tcg_ram_pad("9.0.0"));
  EXPECT_FALSE(needs_tcg_ram_pad("10.0.2"));
}

TEST(QemuVersion, SwitchoverAckFrom81) {
  EXPECT_FALSE(has_switchover_ack("7.2.22"));
  EXPECT_FALSE(has_switchover_ack("8.0.5"));
  EXPECT_FALSE(has_switchover_ack("")) << "unknown: no gate";
  EXPECT_TRUE(has_switchover_ack("8.1.0"));
  EXPECT_TRUE(has_switchover_ack("10.0.2"));
}

TEST(BuildQemuArgv, ExplicitRamBytes) {
  VmConfig c = base_config(MachineType::kMicrovm);
  c.memory_file = "/m";
  c.ram_bytes = 256u << 20;  // a tag saved before the pad existed
  auto argv = build_qemu_argv(c);
  EXPECT_EQ(value_of(argv, "-m"), "256M");
  EXPECT_THAT(values_of(argv, "-object"), Contains(HasSubstr("size=256M,")));
  c.ram_bytes = (256u << 20) + 16384;
  argv = build_qemu_argv(c);
  EXPECT_EQ(value_of(argv, "-m"), "262160K");
  EXPECT_THAT(values_of(argv, "-object"), Contains(HasSubstr("size=262160K,")));
}

TEST(BuildQemuArgv, NoMemoryBackendWithoutFile) {
  auto argv = build_qemu_argv(base_config(MachineType::kPc));
  EXPECT_THAT(value_of(argv, "-machine"), Not(HasSubstr("memory-backend")));
  EXPECT_THAT(values_of(argv, "-object"), Not(Contains(HasSubstr("memory-backend-file"))));
}

TEST(BuildQemuArgv, CommasInPathsAreEscaped) {
  VmConfig c = base_config(MachineType::kMicrovm);
  c.memory_file = "/tmp/a,share=on/mem";
  c.console_log = "/x,y/console.log";
  auto argv = build_qemu_argv(c);
  EXPECT_THAT(values_of(argv, "-object"), Contains(HasSubstr("mem-path=/tmp/a,,share=on/mem,")));
  EXPECT_THAT(values_of(argv, "-chardev"), Contains("file,id=console,path=/x,,y/console.log"));
}

TEST(BuildQemuArgv, PitOffOnlyOnMicrovm) {
  VmConfig c = base_config(MachineType::kMicrovm);
  EXPECT_THAT(value_of(build_qemu_argv(c), "-machine"), Not(HasSubstr("pit")));
  c.pit = false;
  EXPECT_THAT(value_of(build_qemu_argv(c), "-machine"), HasSubstr(",pit=off"));
  c.machine = MachineType::kPc;  // pc always has its PIT
  EXPECT_THAT(value_of(build_qemu_argv(c), "-machine"), Not(HasSubstr("pit")));
}

TEST(BuildQemuArgv, SecondIoapicOffOnlyOnMicrovm) {
  VmConfig c = base_config(MachineType::kMicrovm);
  EXPECT_THAT(value_of(build_qemu_argv(c), "-machine"), Not(HasSubstr("ioapic2")));
  c.ioapic2 = false;
  EXPECT_THAT(value_of(build_qemu_argv(c), "-machine"), HasSubstr(",ioapic2=off"));
  c.machine = MachineType::kPc;
  EXPECT_THAT(value_of(build_qemu_argv(c), "-machine"), Not(HasSubstr("ioapic2")));
}

TEST(BuildQemuArgv, IncomingAndPaused) {
  VmConfig c = base_config(MachineType::kMicrovm);
  c.incoming_defer = true;
  c.start_paused = true;
  auto argv = build_qemu_argv(c);
  EXPECT_EQ(value_of(argv, "-incoming"), "defer");
  EXPECT_TRUE(has_flag(argv, "-S"));
}

TEST(BuildQemuArgv, TcgTbSize) {
  VmConfig c = base_config(MachineType::kMicrovm);
  c.tb_size_mib = 4;
  EXPECT_EQ(value_of(build_qemu_argv(c), "-accel"), "tcg,tb-size=4");
}

TEST(BuildQemuArgv, NoIoeventfdsForMicrovmUnderTcgOnly) {
  VmConfig c = base_config(MachineType::kMicrovm);
  EXPECT_THAT(values_of(build_qemu_argv(c), "-global"), Contains("virtio-mmio.ioeventfd=off"));
  c.accel = Accel::kKvm;
  EXPECT_FALSE(has_flag(build_qemu_argv(c), "-global"));
  VmConfig pc = base_config(MachineType::kPc);
  EXPECT_FALSE(has_flag(build_qemu_argv(pc), "-global"));
}

TEST(BuildQemuArgv, KvmUsesHostCpuAndIgnoresTbSize) {
  VmConfig c = base_config(MachineType::kMicrovm);
  c.accel = Accel::kKvm;
  c.tb_size_mib = 4;
  c.cpus = 2;
  c.memory_mib = 1024;
  auto argv = build_qemu_argv(c);
  EXPECT_EQ(value_of(argv, "-accel"), "kvm");
  EXPECT_EQ(value_of(argv, "-cpu"), "host");
  EXPECT_EQ(value_of(argv, "-smp"), "2");
  EXPECT_EQ(value_of(argv, "-m"), "1024M");
}

TEST(BuildQemuArgv, OptionalPieces) {
  VmConfig c = base_config(MachineType::kMicrovm);
  c.initrd.clear();
  c.kernel_append.clear();
  c.seccomp_sandbox = false;
  c.qemu_binary = "/opt/qemu/bin/qemu-system-x86_64";
  auto argv = build_qemu_argv(c);
  EXPECT_EQ(argv[0], "/opt/qemu/bin/qemu-system-x86_64");
  EXPECT_FALSE(has_flag(argv, "-initrd"));
  EXPECT_FALSE(has_flag(argv, "-append"));
  EXPECT_FALSE(has_flag(argv, "-sandbox"));
}

TEST(BuildQemuArgv, DaemonizeKeepsOnlyCompatibleSandbox) {
  VmConfig c = base_config(MachineType::kMicrovm);
  c.daemonize = true;
  auto argv = build_qemu_argv(c);
  EXPECT_TRUE(has_flag(argv, "-daemonize"));
  EXPECT_EQ(value_of(argv, "-pidfile"), "/run/sb-1/pid");
  EXPECT_EQ(value_of(argv, "-sandbox"), "on,obsolete=deny,resourcecontrol=deny");
}

TEST(MachineName, Names) {
  EXPECT_EQ(machine_name(MachineType::kMicrovm), "microvm");
  EXPECT_EQ(machine_name(MachineType::kPc), "pc");
  EXPECT_EQ(accel_name(Accel::kKvm), "kvm");
  EXPECT_EQ(accel_name(Accel::kTcg), "tcg");
}

// ---- accel ----

TEST(CpuinfoHasVirt, FindsWholeWordsOnFlagsLines) {
  EXPECT_TRUE(cpuinfo_has_virt("processor\t: 0\nflags\t\t: fpu vme vmx sse\n"));
  EXPECT_TRUE(cpuinfo_has_virt("flags\t\t: fpu svm\n"));
  EXPECT_TRUE(cpuinfo_has_virt("flags : vmx"));                             // no trailing newline
  EXPECT_TRUE(cpuinfo_has_virt("flags\t\t: fpu\n\nflags\t\t: fpu vmx\n"));  // second CPU
}

TEST(CpuinfoHasVirt, RejectsPartialWordsAndOtherLines) {
  EXPECT_FALSE(cpuinfo_has_virt(""));
  EXPECT_FALSE(cpuinfo_has_virt("flags\t\t: fpu vme sse4_2 hypervisor\n"));
  EXPECT_FALSE(cpuinfo_has_virt("flags\t\t: vmxe svmx xvmx\n"));
  EXPECT_FALSE(cpuinfo_has_virt("vmx flags\t: vnmi preemption_timer\n"));
  EXPECT_FALSE(cpuinfo_has_virt("model name\t: vmx svm\nflags\t\t: fpu\n"));
  EXPECT_FALSE(cpuinfo_has_virt("flags vmx\n"));  // no colon
}

TEST(ChooseAccel, TcgAndInvalid) {
  auto tcg = choose_accel("tcg");
  ASSERT_TRUE(tcg);
  EXPECT_EQ(tcg->accel, Accel::kTcg);
  EXPECT_EQ(tcg->reason, "requested");
  for (const char* bad : {"", "KVM", "hvf", "auto "}) {
    auto r = choose_accel(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  }
}

TEST(ChooseAccel, AutoAlwaysDecidesWithAReason) {
  // Host dependent: whichever accelerator auto picks, it must say why.
  auto r = choose_accel("auto");
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_THAT(r->reason, HasSubstr("auto:"));
}

TEST(BuildQemuArgv, GuestRamIsMergeableOnlyWhenKsmIsAskedFor) {
  VmConfig c = base_config(MachineType::kMicrovm);
  EXPECT_THAT(value_of(build_qemu_argv(c), "-machine"), HasSubstr(",mem-merge=off"));
  c.memory_merge = true;
  EXPECT_THAT(value_of(build_qemu_argv(c), "-machine"), Not(HasSubstr("mem-merge")));
  c = base_config(MachineType::kPc);
  EXPECT_THAT(value_of(build_qemu_argv(c), "-machine"), HasSubstr(",mem-merge=off"));
}

}  // namespace
}  // namespace forkd::vmm

// Snapshot and fork with real VMs (minimal image): state carried into children, isolation,
// identity after restore, and the failure modes of bad tags.
#include "engine/fork.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/files.h"
#include "base/subprocess.h"
#include "engine/code_window.h"
#include "engine/registry.h"
#include "engine/snapshot.h"
#include "integration/vm_fixture.h"
#include "store/snapshot_store.h"
#include "vmm/accel.h"
#include "vmm/code_pages.h"
#include "vmm/jail.h"
#include "vmm/ksm.h"
#include "vmm/lean_qemu.h"

namespace forkd::test {
namespace {

// A plain tag of the minimal image.
Status snap(const std::string& tag, bool force = false) {
  engine::SnapshotOptions so;
  so.tag = tag;
  so.force = force;
  auto r = engine::create_snapshot(config(), so);
  if (!r) return tl::unexpected(r.error());
  return {};
}

class Fork : public ForkingTest {
 protected:
  // State in guest RAM: a tmpfs file, and a running process.
  static void SetUpTestSuite() {
    create_base_tag({"echo 41 > /tmp/counter", "sleep 100000 >/dev/null 2>&1 &"});
  }
  // cfg: the engine's settings for these children's QEMUs (FORKD_KSM and such).
  static std::vector<std::unique_ptr<engine::Sandbox>> fork(
      int n, const std::string& tag = "base", const engine::EngineConfig& cfg = config()) {
    engine::ForkOptions fo;
    fo.tag = tag;
    fo.n = n;
    auto r = engine::fork_children(cfg, fo);
    EXPECT_TRUE(r) << r.error().describe();
    std::vector<std::unique_ptr<engine::Sandbox>> out;
    if (!r) return out;
    for (const auto& c : r->children) {
      EXPECT_FALSE(c.error) << c.error->describe();
      if (c.error) continue;
      auto sb = engine::Sandbox::attach(config(), c.id);
      EXPECT_TRUE(sb) << sb.error().describe();
      if (sb) out.push_back(std::move(*sb));
    }
    return out;
  }
  static std::string sh(engine::Sandbox& sb, const std::string& cmd) {
    engine::ExecOptions o;
    o.shell = cmd;
    auto r = sb.exec(o);
    EXPECT_TRUE(r) << r.error().describe();
    return r ? r->stdout_data : "";
  }
};

TEST_F(Fork, ChildrenContinueTheParentsState) {
  auto kids = fork(2);
  ASSERT_EQ(kids.size(), 2u);
  // A new tag's microvm has a single IO-APIC (vmm::VmConfig::ioapic2): 8 virtio-mmio transports
  // in each child's QEMU instead of 24.
  EXPECT_EQ(kids[0]->record().value("ioapic2", true), false);
  if (config().machine == vmm::MachineType::kMicrovm) {
    EXPECT_EQ(sh(*kids[0], "dmesg | grep -c 'IOAPIC\\['"), "1\n");
  }
  for (auto& k : kids) {
    EXPECT_EQ(sh(*k, "cat /tmp/counter"), "41\n");
    EXPECT_EQ(sh(*k, "ps -o args | grep -c '^sleep 100000'"), "1\n")
        << "the process started before the snapshot runs on in the child";
  }
}

// A tag's template is frozen once its guest is idle (engine::settle_guest): a warm-up that leaves
// a loop running for a second is waited for; an idle one costs about one window.
TEST_F(Fork, SnapshotWaitsForTheGuestToGoIdle) {
  engine::SnapshotOptions so;
  so.tag = "settle-busy";
  so.image = "minimal";
  so.warmup = {"timeout 1 sh -c 'while :; do :; done' >/dev/null 2>&1 &"};
  auto busy = engine::create_snapshot(config(), so);
  ASSERT_TRUE(busy) << busy.error().describe();
  EXPECT_GE(busy->settle_ms, 700);
  EXPECT_LT(busy->settle_ms, 3500);
  so.tag = "settle-idle";
  so.warmup = {"true"};
  auto idle = engine::create_snapshot(config(), so);
  ASSERT_TRUE(idle) << idle.error().describe();
  EXPECT_GE(idle->settle_ms, 100);  // one whole window
  EXPECT_LT(idle->settle_ms, busy->settle_ms);
}

// An idle child under TCG on microvm is tickless: its clocksource stays the TSC (with refined
// jiffies the guest ticks 250 times a second, ~500 in the 2 s below) and it has no PIT. Under
// KVM or on pc it keeps its PIT.
TEST_F(Fork, IdleChildrenAreTickless) {
  auto accel = vmm::choose_accel(config().accel);
  ASSERT_TRUE(accel);
  bool quiet = accel->accel == vmm::Accel::kTcg && config().machine == vmm::MachineType::kMicrovm;
  auto kids = fork(1);
  ASSERT_EQ(kids.size(), 1u);
  EXPECT_EQ(kids[0]->record().value("pit", true), !quiet);
  if (!quiet) return;
  // A tag saved within about a second of its guest's boot still has the kernel's TSC refinement
  // pending (it runs a second after the TSC's init call, and until then the clocksource is
  // tsc-early): seen on a host where the fixture's tag was saved at 1.2 s of guest uptime, the
  // child switching to tsc within 2 s of its restore. The watchdog falling back to jiffies would
  // show as refined-jiffies here instead.
  std::string clocksource;
  for (int i = 0; i < 50; ++i) {
    clocksource =
        sh(*kids[0], "cat /sys/devices/system/clocksource/clocksource0/current_clocksource");
    if (clocksource != "tsc-early\n") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(clocksource, "tsc\n");
  std::string ticks = sh(*kids[0],
                         "a=$(awk '/LOC:/{print $2}' /proc/interrupts); sleep 2; "
                         "b=$(awk '/LOC:/{print $2}' /proc/interrupts); echo $((b - a))");
  EXPECT_LT(std::stol("0" + ticks), 100) << "local timer interrupts in 2 idle seconds";
}

// FORKD_KSM=1: every child's QEMU has all of its memory mergeable (the kernel's own
// /proc/PID/ksm_stat says so). Without it none has, and QEMU is told not to offer guest RAM
// either (mem-merge=off), so that a host running ksmd does not merge guest pages across
// sandboxes unasked. Either way the child works.
TEST_F(Fork, KsmMergesChildrenOnlyWhenAskedFor) {
  const std::string unsupported = vmm::ksm_unsupported_reason();
  engine::EngineConfig with_ksm = config();
  with_ksm.ksm = true;
  for (bool ksm : {false, true}) {
    SCOPED_TRACE(ksm ? "FORKD_KSM=1" : "no KSM");
    if (ksm && !unsupported.empty()) GTEST_SKIP() << "KSM unavailable: " << unsupported;
    auto kids = fork(1, "base", ksm ? with_ksm : config());
    ASSERT_EQ(kids.size(), 1u);
    engine::Sandbox& sb = *kids[0];
    const pid_t pid = sb.qemu_pid();
    auto cmdline = read_file("/proc/" + std::to_string(pid) + "/cmdline");
    ASSERT_TRUE(cmdline);
    EXPECT_EQ(cmdline->find("mem-merge=off") != std::string::npos, !ksm);
    if (unsupported.empty()) {
      EXPECT_EQ(vmm::process_merge_any(pid), std::optional<bool>(ksm));
    }
    EXPECT_EQ(sh(sb, "cat /tmp/counter"), "41\n");
  }
}

// The areas of /proc/PID/smaps, with what the tests below read of them.
struct SmapsArea {
  unsigned long start = 0, end = 0, inode = 1;
  std::string perms;
  long rss_kib = 0;
  long huge_kib = 0;  // AnonHugePages
  std::string flags;  // VmFlags, with a blank at both ends
  bool has(const char* flag) const {
    return flags.find(std::string(" ") + flag + " ") != std::string::npos;
  }
};
std::optional<std::vector<SmapsArea>> smaps_areas(pid_t pid) {
  auto smaps = read_file("/proc/" + std::to_string(pid) + "/smaps");
  if (!smaps) return std::nullopt;
  std::vector<SmapsArea> out;
  std::istringstream in(*smaps);
  std::string line;
  while (std::getline(in, line)) {
    SmapsArea a;
    char perms[8] = "";
    if (std::sscanf(line.c_str(), "%lx-%lx %7s %*s %*s %lu", &a.start, &a.end, perms, &a.inode) ==
        4) {  // an area's first line
      a.perms = perms;
      out.push_back(a);
    } else if (out.empty()) {
      continue;
    } else if (line.rfind("Rss:", 0) == 0) {
      out.back().rss_kib = std::atol(line.c_str() + 4);
    } else if (line.rfind("AnonHugePages:", 0) == 0) {
      out.back().huge_kib = std::atol(line.c_str() + 14);
    } else if (line.rfind("VmFlags:", 0) == 0) {
      out.back().flags = line.substr(8) + " ";
    }
  }
  return out;
}

// What /proc/PID/smaps says of a process's writable areas of at most 2 MiB: how many are marked
// "no huge pages" (VmFlags nh), and the KiB of huge pages they hold. (glibc marks thread stacks'
// guard pages nh, but those are neither readable nor writable.)
struct SmallAreas {
  int marked_no_huge = 0;
  long huge_kib = 0;
};
std::optional<SmallAreas> small_areas(pid_t pid) {
  auto areas = smaps_areas(pid);
  if (!areas) return std::nullopt;
  SmallAreas out;
  for (const SmapsArea& a : *areas) {
    // The TCG code buffer (executable) is not one of them: with a window of one step its advised
    // part is a 2 MiB area of its own, huge on purpose (vmm/code_pages.h).
    if (a.end - a.start > (2ul << 20) || !a.has("rd") || !a.has("wr") || a.has("ex")) continue;
    out.huge_kib += a.huge_kib;
    if (a.has("nh")) ++out.marked_no_huge;
  }
  return out;
}

// The version scripts/build-qemu-static.sh builds, from the source tree.
std::string pinned_static_qemu_version() {
  auto text = read_file(std::string(FORKD_SOURCE_DIR) + "/src/vmm/lean/qemu-static/source.txt");
  if (!text) return "";
  std::istringstream in(*text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("version ", 0) == 0) return line.substr(8);
  }
  return "";
}

// By default a child runs forkd's static QEMU build (make test builds it), which maps no
// library and answers as the shim does. With FORKD_STATIC_QEMU=0 it runs the installed QEMU,
// which maps forkd's stubs instead of libcapstone and libpmem (vmm/lean_qemu.h), none of what the
// real libpmem loads (libcrypto among them), and the shim; with FORKD_LEAN_QEMU=0 the installed
// QEMU maps the real ones. All three children come from the same tag, and each works.
TEST_F(Fork, ChildQemuRunsWithTheStubLibraries) {
  const vmm::LeanQemuProbe& lean = vmm::host_jail().lean;
  ASSERT_FALSE(lean.dir.empty()) << "this host's QEMU should start with the stubs: " << lean.reason;
  const std::string pinned = pinned_static_qemu_version();
  ASSERT_FALSE(pinned.empty());
  const bool static_built = vmm::host_jail().qemu_version == pinned;
  if (static_built) {
    ASSERT_FALSE(vmm::host_jail().static_qemu.binary.empty())
        << "make test builds it (scripts/build-qemu-static.sh): "
        << vmm::host_jail().static_qemu.reason;
  }
  enum Setting { kStatic, kStubs, kOwnLibraries };
  for (Setting setting : {kStatic, kStubs, kOwnLibraries}) {
    if (setting == kStatic && !static_built) continue;  // the script skips another version
    SCOPED_TRACE(setting == kStatic  ? "static build"
                 : setting == kStubs ? "FORKD_STATIC_QEMU=0"
                                     : "FORKD_LEAN_QEMU=0");
    const bool stubs = setting == kStubs;
    engine::EngineConfig cfg = config();
    cfg.lean_qemu = setting != kOwnLibraries;
    cfg.static_qemu = setting == kStatic;
    auto kids = fork(1, "base", cfg);
    ASSERT_EQ(kids.size(), 1u);
    engine::Sandbox& sb = *kids[0];
    const std::string proc = "/proc/" + std::to_string(sb.qemu_pid());
    std::error_code ec;
    EXPECT_EQ(std::filesystem::read_symlink(proc + "/exe", ec).string() ==
                  vmm::host_jail().static_qemu.binary,
              setting == kStatic);
    auto maps = read_file(proc + "/maps");
    ASSERT_TRUE(maps);
    auto mapped = [&](const std::string& what) { return maps->find(what) != std::string::npos; };
    EXPECT_EQ(mapped("/libc.so"), setting != kStatic) << "the static build maps no library";
    EXPECT_EQ(mapped(lean.dir + "/libcapstone.so.4"), stubs);
    EXPECT_EQ(mapped(lean.dir + "/libpmem.so.1"), stubs);
    EXPECT_EQ(mapped("/libcapstone.so"), setting != kStatic) << "the real one or the stub";
    EXPECT_EQ(mapped("/libcrypto.so"), setting == kOwnLibraries)
        << "loaded by the real libpmem's libkmod";
    // The shim (preloaded with the stubs, linked into the static build) turns QEMU's request for
    // huge pages on its small areas (the ACPI tables' 2 MiB block) into "no huge pages" (VmFlags
    // nh), and none of them holds one. QEMU itself never asks for nh.
    EXPECT_EQ(mapped(lean.dir + "/libforkd-qemu-shim.so"), stubs);
    auto areas = small_areas(sb.qemu_pid());
    ASSERT_TRUE(areas);
    EXPECT_EQ(areas->marked_no_huge > 0, setting != kOwnLibraries) << areas->marked_no_huge;
    if (setting != kOwnLibraries) {
      EXPECT_EQ(areas->huge_kib, 0) << "huge pages in areas of at most 2 MiB";
    }
    EXPECT_EQ(sh(sb, "cat /tmp/counter"), "41\n");
  }
}

// The TCG code buffer of a child's QEMU in /proc/PID/smaps: its writable, executable anonymous
// areas of 64 MiB or more in all, adjacent (the shim's window splits it by advice, in three).
std::vector<SmapsArea> code_buffer(pid_t pid) {
  auto areas = smaps_areas(pid);
  if (!areas) return {};
  std::vector<SmapsArea> run, best;
  auto size = [](const std::vector<SmapsArea>& r) {
    return r.empty() ? 0ul : r.back().end - r.front().start;
  };
  for (const SmapsArea& a : *areas) {
    if (a.perms != "rwxp" || a.inode != 0) continue;
    if (run.empty() || run.back().end != a.start) run.clear();
    run.push_back(a);
    if (size(run) >= (64ul << 20) && size(run) > size(best)) best = run;
  }
  return best;
}
long total(const std::vector<SmapsArea>& areas, long SmapsArea::*field) {
  long sum = 0;
  for (const SmapsArea& a : areas) sum += a.*field;
  return sum;
}

// The three ways a child's code buffer gets its pages (vmm/code_pages.h), each after the restore
// and after calls. Either way the child works.
// - FORKD_COLLAPSE_CODE_PAGES=1: not advised huge pages; forkd collapses the 2 MiB steps TCG
//   filled, so only the step being filled is in small pages.
// - by default: huge pages up to the step an earlier child of the tag stood at after its restore
//   (engine/code_window.h, noted by the first child below). Idle, the buffer from that step on
//   holds only what TCG wrote, in small pages; before a call the rest is advised huge pages and
//   what TCG wrote there collapsed.
// - FORKD_CODE_WINDOW=0: QEMU's advice stands, the buffer is whole huge pages.
TEST_F(Fork, CodeBufferPagesFollowTheSettings) {
  auto thp = read_file("/sys/kernel/mm/transparent_hugepage/enabled");
  if (!thp || thp->find("[madvise]") == std::string::npos) {
    GTEST_SKIP() << "needs the THP mode madvise";
  }
  if (vmm::host_jail().lean.dir.empty() || !vmm::can_collapse_other_processes()) {
    GTEST_SKIP() << "needs the shim and CAP_SYS_NICE";
  }
  enum Mode { kCollapse, kWindow, kNoWindow };
  for (Mode mode : {kCollapse, kWindow, kNoWindow}) {
    SCOPED_TRACE(mode == kCollapse ? "FORKD_COLLAPSE_CODE_PAGES=1"
                 : mode == kWindow ? "default"
                                   : "FORKD_CODE_WINDOW=0");
    engine::EngineConfig cfg = config();
    cfg.collapse_code_pages = mode == kCollapse;
    cfg.code_window = mode != kNoWindow;
    // The step the first child noted, which the next child starts with (that child notes its
    // own step in turn: near a step's end two children of a tag can differ by one).
    std::optional<int> noted;
    if (mode == kWindow) {
      ASSERT_EQ(fork(1, "base", cfg).size(), 1u) << "notes the tag's step";
      store::SnapshotStore snaps(cfg.home);
      auto meta = snaps.load("base");
      ASSERT_TRUE(meta);
      noted = engine::read_code_window(engine::code_window_path(cfg, snaps.dir("base"), *meta));
      ASSERT_TRUE(noted) << "the first child noted where TCG stood";
    }
    auto kids = fork(1, "base", cfg);
    ASSERT_EQ(kids.size(), 1u);
    engine::Sandbox& sb = *kids[0];
    EXPECT_EQ(sb.record().value("collapse_code_pages", mode != kCollapse), mode == kCollapse);
    const int window = sb.record().value("code_window", -2);
    if (mode == kWindow) {
      EXPECT_EQ(window, *noted);
    } else {
      EXPECT_EQ(window, -1);
    }
    for (int round = 0; round < 2; ++round) {  // after the restore, then after calls
      auto buffer = code_buffer(sb.qemu_pid());
      ASSERT_FALSE(buffer.empty());
      const long rss = total(buffer, &SmapsArea::rss_kib);
      const long huge = total(buffer, &SmapsArea::huge_kib);
      EXPECT_GE(huge, 2048) << "the restore alone fills more than one step";
      EXPECT_EQ(huge % 2048, 0);
      if (mode == kCollapse) {
        ASSERT_EQ(buffer.size(), 1u);
        EXPECT_FALSE(buffer[0].has("hg"));
        // The step being filled when forkd collapsed, and the next one when TCG crossed into it
        // before this read (the child goes on translating after its restore: 2056 KiB seen once).
        EXPECT_LT(rss - huge, 2 * 2048) << "only the steps filled since the collapse";
      } else if (mode == kNoWindow) {
        ASSERT_EQ(buffer.size(), 1u);
        EXPECT_TRUE(buffer[0].has("hg"));
        EXPECT_EQ(rss, huge);
      } else {
        const unsigned long first_step =
            (buffer[0].start + vmm::kHugeStep - 1) / vmm::kHugeStep * vmm::kHugeStep;
        if (round == 0) {
          // Idle: advised huge pages up to the window step, and from it on only what TCG wrote,
          // in small pages.
          ASSERT_EQ(buffer.size(), 2u);
          const SmapsArea& rest = buffer[1];
          EXPECT_EQ(rest.start, first_step + static_cast<unsigned long>(window) * vmm::kHugeStep);
          EXPECT_TRUE(buffer[0].has("hg"));
          EXPECT_FALSE(rest.has("hg"));
          EXPECT_EQ(rest.huge_kib, 0);
          EXPECT_LT(rest.rss_kib, 2 * 2048) << "past the window, only what TCG wrote there";
          EXPECT_EQ(buffer[0].rss_kib, buffer[0].huge_kib);
        } else {
          // After calls: all of it advised (the areas merged again), what TCG wrote huge. The
          // collapse is best effort (a step the kernel will not take at that moment stays small:
          // slower, not wrong), and with a window of one step below where this child stood two
          // steps were collapsed: at most one of them may have stayed small (seen once).
          for (const SmapsArea& a : buffer) EXPECT_TRUE(a.has("hg"));
          EXPECT_LE(rss - huge, 2048);
        }
      }
      EXPECT_EQ(sh(sb, "cat /tmp/counter; ls -R /usr > /dev/null"), "41\n");
    }
  }
}

// FORKD_QEMU_HUGE_PAGES=0 forbids transparent huge pages to the child's QEMU (the kernel's
// /proc/PID/status says so); by default QEMU may use them. Either way the child works.
TEST_F(Fork, HugePagesAreForbiddenOnlyWhenAskedFor) {
  for (bool huge : {true, false}) {
    SCOPED_TRACE(huge ? "default" : "FORKD_QEMU_HUGE_PAGES=0");
    engine::EngineConfig cfg = config();
    cfg.qemu_huge_pages = huge;
    auto kids = fork(1, "base", cfg);
    ASSERT_EQ(kids.size(), 1u);
    engine::Sandbox& sb = *kids[0];
    auto status = read_file("/proc/" + std::to_string(sb.qemu_pid()) + "/status");
    ASSERT_TRUE(status);
    EXPECT_NE(status->find(huge ? "THP_enabled:\t1" : "THP_enabled:\t0"), std::string::npos)
        << *status;
    EXPECT_EQ(sh(sb, "cat /tmp/counter"), "41\n");
  }
}

TEST_F(Fork, ChildrenAreIsolated) {
  auto kids = fork(2);
  ASSERT_EQ(kids.size(), 2u);
  sh(*kids[0], "echo mine > /tmp/only-in-a; echo 99 > /tmp/counter");
  EXPECT_EQ(sh(*kids[0], "cat /tmp/counter"), "99\n");
  EXPECT_EQ(sh(*kids[1], "cat /tmp/counter"), "41\n");
  EXPECT_EQ(sh(*kids[1], "test -e /tmp/only-in-a && echo yes || echo no"), "no\n");
  auto later = fork(1);
  ASSERT_EQ(later.size(), 1u);
  EXPECT_EQ(sh(*later[0], "cat /tmp/counter"), "41\n") << "the tag itself must be untouched";
}

TEST_F(Fork, EachChildGetsItsOwnIdentity) {
  auto kids = fork(5);
  ASSERT_EQ(kids.size(), 5u);
  std::set<std::string> randoms, hostnames;
  for (auto& k : kids) {
    std::string out = sh(*k,
                         "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; "
                         "hostname; echo $FORKD_SANDBOX_ID; date +%s; cat /etc/hostname; "
                         "readlink /etc/hostname");
    std::istringstream in(out);
    std::string rnd, host, sid, secs, etc_hostname, link;
    in >> rnd >> host >> sid >> secs >> etc_hostname >> link;
    EXPECT_EQ(rnd.size(), 32u) << out;
    randoms.insert(rnd);
    hostnames.insert(host);
    EXPECT_EQ(host, k->id());
    EXPECT_EQ(etc_hostname, k->id()) << "/etc/hostname follows the kernel's hostname";
    // A link, so that no child writes the file (an ext4 write in every child's first wake-up).
    EXPECT_EQ(link, "/proc/sys/kernel/hostname");
    EXPECT_EQ(sid, k->id());
    int64_t guest = std::atoll(secs.c_str());
    int64_t host_now = static_cast<int64_t>(std::time(nullptr));
    EXPECT_LE(std::llabs(guest - host_now), 2) << "guest clock " << guest << " host " << host_now;
  }
  EXPECT_EQ(randoms.size(), 5u) << "two children produced the same random bytes";
  EXPECT_EQ(hostnames.size(), 5u);
}

TEST_F(Fork, CorruptTagIsRefusedNamingTheFile) {
  ASSERT_TRUE(snap("corrupt"));
  store::SnapshotStore snaps(config().home);
  std::string mem = snaps.dir("corrupt") + "/memory";
  ASSERT_EQ(::truncate(mem.c_str(), 4096), 0);
  auto r = run_cli({"fork", "--tag", "corrupt", "-n", "1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("checksum_mismatch"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("memory"), std::string::npos) << r.err;

  ASSERT_TRUE(snap("corrupt", true));
  std::string vmstate = snaps.dir("corrupt") + "/vmstate";
  auto fd = open_file(vmstate, O_WRONLY);
  ASSERT_TRUE(fd);
  ASSERT_EQ(::pwrite(fd->get(), "garbage", 7, 100), 7);
  fd->reset();
  r = run_cli({"fork", "--tag", "corrupt", "-n", "1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("vmstate"), std::string::npos) << r.err;
  EXPECT_TRUE(engine::list_sandboxes(config()).empty());
  EXPECT_TRUE(qemu_pids_for_home(config().home).empty());
}

TEST_F(Fork, QemuFailingDuringRestoreReportsItsLogAndLeaksNothing) {
  ASSERT_TRUE(snap("wrongmachine"));
  store::SnapshotStore snaps(config().home);
  std::string json_path = snaps.dir("wrongmachine") + "/snapshot.json";
  auto text = read_file(json_path);
  ASSERT_TRUE(text);
  auto j = nlohmann::json::parse(*text);
  j["machine"] = "pc";  // the device state of a microvm cannot load into a pc
  ASSERT_TRUE(write_file_atomic(json_path, j.dump()));
  auto r = run_cli({"fork", "--tag", "wrongmachine", "-n", "2", "--json"});
  EXPECT_EQ(r.exit_code, 1);
  auto out = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(out.is_discarded()) << r.out << r.err;
  EXPECT_EQ(out["failed"], 2);
  for (const auto& c : out["children"]) {
    EXPECT_EQ(c["status"], "failed");
    EXPECT_NE(c["error"]["message"].get<std::string>().find("qemu"), std::string::npos) << c;
  }
  EXPECT_TRUE(qemu_pids_for_home(config().home).empty());
  EXPECT_TRUE(engine::list_sandboxes(config()).empty());
}

TEST_F(Fork, BadRequestsGetClearErrors) {
  auto unknown = run_cli({"fork", "--tag", "nope", "-n", "1"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("unknown tag 'nope'"), std::string::npos) << unknown.err;
  EXPECT_NE(unknown.err.find("base"), std::string::npos) << "lists the known tags";
  EXPECT_EQ(run_cli({"fork", "--tag", "base", "-n", "0"}).exit_code, 2);
  EXPECT_EQ(run_cli({"fork", "--tag", "base", "-n", "1001"}).exit_code, 2);
  EXPECT_EQ(run_cli({"fork", "--tag", "../x", "-n", "1"}).exit_code, 2);
  auto exists = run_cli({"snapshot", "--tag", "base"});
  EXPECT_EQ(exists.exit_code, 1);
  EXPECT_NE(exists.err.find("--force"), std::string::npos) << exists.err;

  store::SnapshotStore snaps(config().home);
  ASSERT_TRUE(snap("future"));
  std::string json_path = snaps.dir("future") + "/snapshot.json";
  auto j = nlohmann::json::parse(*read_file(json_path));
  j["schema"] = 99;
  ASSERT_TRUE(write_file_atomic(json_path, j.dump()));
  auto newer = run_cli({"fork", "--tag", "future", "-n", "1"});
  EXPECT_EQ(newer.exit_code, 2);
  EXPECT_NE(newer.err.find("newer"), std::string::npos) << newer.err;
}

TEST_F(Fork, KilledSnapshotLeavesNoTagAndNoQemu) {
  SpawnOptions o;
  int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  o.stdout_fd = devnull;
  o.stderr_fd = devnull;
  auto child = Child::spawn({forkd_cli(), "snapshot", "--tag", "killed", "--exec", "sleep 60"}, o);
  ::close(devnull);
  ASSERT_TRUE(child);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (qemu_pids_for_home(config().home).empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(qemu_pids_for_home(config().home).empty());
  std::this_thread::sleep_for(std::chrono::seconds(3));  // inside the warm-up
  child->kill(SIGKILL);
  ASSERT_TRUE(child->wait(std::chrono::seconds(10)));
  for (int i = 0; i < 100 && !qemu_pids_for_home(config().home).empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(qemu_pids_for_home(config().home).empty()) << "the template QEMU outlived the CLI";
  store::SnapshotStore snaps(config().home);
  EXPECT_FALSE(snaps.exists("killed"));
  EXPECT_FALSE(snaps.load("killed"));
  auto r = run_cli({"fork", "--tag", "killed", "-n", "1"});
  EXPECT_NE(r.exit_code, 0);
  // The next snapshot sweeps the dead staging directory.
  ASSERT_TRUE(snap("after"));
  bool stale = false;
  for (const auto& e : std::filesystem::directory_iterator(snaps.root())) {
    stale |= e.path().filename().string().find("killed") != std::string::npos;
  }
  EXPECT_FALSE(stale);
}

TEST_F(Fork, PoolMembersAreUsedAndRmAllStopsEverything) {
  auto fill = run_cli({"pool", "fill", "--tag", "base", "--size", "2"});
  ASSERT_EQ(fill.exit_code, 0) << fill.err;
  auto r = run_cli({"fork", "--tag", "base", "-n", "3", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto out = nlohmann::json::parse(r.out);
  int pooled = 0;
  for (const auto& c : out["children"]) pooled += c["from_pool"].get<bool>() ? 1 : 0;
  EXPECT_EQ(pooled, 2);
  auto ps = nlohmann::json::parse(run_cli({"ps", "--json"}).out);
  EXPECT_EQ(ps["sandboxes"].size(), 3u) << "pool members are not sandboxes";
  // The background refill brings the pool back to 2; then rm --all stops children and pool.
  for (int i = 0; i < 100; ++i) {
    auto ls = nlohmann::json::parse(run_cli({"pool", "ls", "--json"}).out);
    if (!ls["pools"].empty() && ls["pools"][0]["members"] == 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto rm = run_cli({"rm", "--all"});
  EXPECT_EQ(rm.exit_code, 0) << rm.err;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_TRUE(qemu_pids_for_home(config().home).empty());
  (void)run_cli({"pool", "drain", "--tag", "base"});
}

TEST_F(Fork, DiskFullWhileSnapshottingLeavesNoTag) {
  FORKD_REQUIRE("root", root_missing_reason("mount a small tmpfs"));
  auto dir = TempDir::create("forkd-full-home");
  ASSERT_TRUE(dir);
  ASSERT_EQ(::mount("tmpfs", dir->path().c_str(), "tmpfs", 0, "size=16m"), 0);
  // Images and cache from the real home; tags, sandboxes and staging on the 16 MiB tmpfs.
  std::string real = std::filesystem::read_symlink(config().home + "/images").string();
  ASSERT_EQ(::symlink(real.c_str(), (dir->path() + "/images").c_str()), 0);
  // The test home's cache: the shared entries, without its assembled chain memory.
  std::string cache = config().home + "/cache";
  ASSERT_EQ(::symlink(cache.c_str(), (dir->path() + "/cache").c_str()), 0);
  auto r = run_cli({"snapshot", "--tag", "full"}, {{"FORKD_HOME", dir->path()}});
  std::error_code ec;
  bool leftovers = std::filesystem::exists(dir->path() + "/snapshots", ec) &&
                   !std::filesystem::is_empty(dir->path() + "/snapshots", ec);
  bool qemu_left = !qemu_pids_for_home(dir->path()).empty();
  ::umount2(dir->path().c_str(), MNT_DETACH);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no_space"), std::string::npos) << r.err;
  EXPECT_FALSE(leftovers) << "a partial tag or staging dir was left";
  EXPECT_FALSE(qemu_left);
}

// Warm members ran briefly past the snapshot point with a provisional identity; a claimed child
// must still get its own identity and the tag's state.
TEST_F(Fork, WarmPoolChildrenGetTheirOwnIdentity) {
  auto fill = run_cli({"pool", "fill", "--tag", "base", "--size", "2", "--warm"});
  ASSERT_EQ(fill.exit_code, 0) << fill.err;
  engine::ForkOptions fo;
  fo.tag = "base";
  fo.n = 2;
  auto r = engine::fork_children(config(), fo);
  ASSERT_TRUE(r) << r.error().describe();
  (void)run_cli({"pool", "drain", "--tag", "base"});
  std::set<std::string> randoms;
  for (const auto& c : r->children) {
    ASSERT_FALSE(c.error) << c.error->describe();
    EXPECT_TRUE(c.from_pool);
    auto sb = engine::Sandbox::attach(config(), c.id);
    ASSERT_TRUE(sb) << sb.error().describe();
    EXPECT_EQ(sh(**sb, "hostname; echo $FORKD_SANDBOX_ID; cat /tmp/counter /etc/hostname"),
              c.id + "\n" + c.id + "\n41\n" + c.id + "\n");
    randoms.insert(sh(**sb, "head -c 16 /dev/urandom | od -An -tx1"));
    int64_t guest = std::atoll(sh(**sb, "date +%s").c_str());
    EXPECT_LE(std::llabs(guest - static_cast<int64_t>(std::time(nullptr))), 2);
  }
  EXPECT_EQ(randoms.size(), 2u);
}

}  // namespace
}  // namespace forkd::test

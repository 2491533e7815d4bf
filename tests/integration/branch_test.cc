// BRANCH and chains with real VMs (minimal image): the consistency of a branch (memory state
// at the paused instant, source carrying on), full and live modes, chain links (depth,
// ancestors, dependents, rmi refusal/cascade/force, compact), and the fault cases.
#include "engine/branch.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <sstream>
#include <thread>

#include "base/files.h"
#include "base/proc_stat.h"
#include "base/scoped_env.h"
#include "engine/chain_ops.h"
#include "engine/fork.h"
#include "engine/gc.h"
#include "engine/migration.h"
#include "engine/registry.h"
#include "engine/sandbox_jail.h"
#include "engine/snapshot.h"
#include "integration/vm_fixture.h"
#include "store/chain.h"
#include "store/snapshot_store.h"
#include "vmm/accel.h"
#include "vmm/cpu_lift.h"
#include "vmm/jail.h"
#include "vmm/qemu_cmdline.h"

namespace forkd::test {
namespace {

// A guest shell loop counting in memory (the loop's own variable, published to a tmpfs file by
// rename so a reader never sees it half-written), 100 times a second: a busy guest, forking
// and writing kernel memory all the time. (Under QEMU 7.2 without the TCG RAM pad, see
// vmm::guest_ram_bytes, about one live branch in two of such a guest saved stale pages and its
// children hung; QEMU 9.0+ needs no pad, and this test is what shows it.)
constexpr const char* kCounter =
    "(i=0; while true; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/counter; "
    "sleep 0.01; done) >/dev/null 2>&1 &";

// Children are handled by id, and each command attaches and detaches again.
std::string fork_one(const std::string& tag) {
  engine::ForkOptions fo;
  fo.tag = tag;
  fo.n = 1;
  auto r = engine::fork_children(config(), fo);
  EXPECT_TRUE(r) << r.error().describe();
  if (!r || r->children[0].error) {
    ADD_FAILURE() << (r ? r->children[0].error->describe() : "fork failed");
    return "";
  }
  return r->children[0].id;
}

std::string sh(const std::string& id, const std::string& cmd) {
  auto sb = engine::Sandbox::attach(config(), id);
  EXPECT_TRUE(sb) << sb.error().describe();
  if (!sb) return "";
  engine::ExecOptions o;
  o.shell = cmd;
  auto r = (*sb)->exec(o);
  EXPECT_TRUE(r) << r.error().describe();
  return r ? r->stdout_data : "";
}

long counter(const std::string& id) { return std::stol("0" + sh(id, "cat /tmp/counter")); }

// Branches id; callers hold no agent connection to it at that moment (see branch.h).
Result<engine::BranchResult> branch(const std::string& id, const std::string& tag,
                                    engine::BranchMode mode = engine::BranchMode::kLive) {
  engine::BranchOptions bo;
  bo.sandbox_id = id;
  bo.tag = tag;
  bo.mode = mode;
  return engine::branch_sandbox(config(), bo);
}

// A branch, with the command line and environment its destination QEMU ran with (read from
// /proc while the branch runs).
struct WatchedBranch {
  Result<engine::BranchResult> result;
  std::string cmdline;
  std::string environ_text;
};

WatchedBranch branch_watching_destination(const engine::EngineConfig& cfg,
                                          const engine::BranchOptions& bo) {
  auto running = std::async(std::launch::async, [&] { return engine::branch_sandbox(cfg, bo); });
  std::string cmdline, environ_text;
  const std::string root = cfg.home + "/branching";
  while (running.wait_for(std::chrono::milliseconds(1)) != std::future_status::ready &&
         cmdline.empty()) {
    for (const auto& name : list_dir_names(root)) {
      auto pid = read_file(root + "/" + name + "/qemu.pid", 64);
      if (!pid || pid->empty()) continue;
      const std::string proc = "/proc/" + std::to_string(std::atoi(pid->c_str()));
      auto c = read_file(proc + "/cmdline", 1 << 16);
      auto e = read_file(proc + "/environ", 1 << 16);
      if (c && e && !c->empty()) {
        cmdline = *c;
        environ_text = *e;
      }
    }
  }
  return WatchedBranch{running.get(), cmdline, environ_text};
}

// Whether the sandbox's QEMU is forkd's static build, which starts a live branch's source again
// itself when the copy completes (x-resume-on-completion, src/vmm/lean/qemu-static/patches).
bool runs_static_qemu(const std::string& id) {
  const std::string& binary = vmm::host_jail().static_qemu.binary;
  auto pid = read_file(config().sandboxes_dir() + "/" + id + "/qemu.pid", 64);
  if (binary.empty() || !pid || pid->empty()) return false;
  std::error_code ec;
  auto exe = std::filesystem::read_symlink(
      "/proc/" + std::to_string(std::atoi(pid->c_str())) + "/exe", ec);
  return !ec && exe == std::filesystem::canonical(binary, ec);
}

class Branch : public ForkingTest {
 protected:
  static void SetUpTestSuite() { create_base_tag({"echo base > /tmp/origin"}); }
};

// The child holds the state of the paused instant; the source carries on from it.
void check_consistency(engine::BranchMode mode, const std::string& tag) {
  auto src = fork_one("base");
  ASSERT_FALSE(src.empty());
  sh(src, kCounter);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  long before = counter(src);
  ASSERT_GT(before, 0);
  const bool static_qemu = runs_static_qemu(src);
  double pause_ms = -1;
  engine::BranchOptions bo;
  bo.sandbox_id = src;
  bo.tag = tag;
  bo.mode = mode;
  long at_resume = 0;
  engine::BranchMode reported = engine::BranchMode::kFull;
  bo.on_resumed = [&](const std::string&, double p, engine::BranchMode used) {
    pause_ms = p;
    reported = used;
  };
  auto r = engine::branch_sandbox(config(), bo);
  ASSERT_TRUE(r) << r.error().describe();
  at_resume = counter(src);
  EXPECT_EQ(r->meta.status, "ready");
  EXPECT_EQ(r->pause_ms, pause_ms) << "on_resumed reports the same pause";
  EXPECT_EQ(reported, mode) << "and the mode used (as asked: the tag has the RAM pad)";
  EXPECT_EQ(r->mode, mode);
  EXPECT_GE(r->pause_ms, 0);
  // Started again by QEMU itself in a live branch of a source without a disk, where QEMU can;
  // by forkd's `cont` after a full one (the source was stopped before the copy).
  EXPECT_EQ(r->resumed_by_qemu, static_qemu && mode == engine::BranchMode::kLive);
  ASSERT_TRUE(r->meta.parent_tag);
  EXPECT_EQ(*r->meta.parent_tag, "base");
  EXPECT_EQ(r->meta.branched_from.value_or(""), src);

  // The source keeps running: its counter advances past the branch.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  long after = counter(src);
  EXPECT_GT(after, at_resume);

  auto child = fork_one(tag);
  ASSERT_FALSE(child.empty());
  long c0 = counter(child);
  EXPECT_GE(c0, before) << "the child starts from the source's state at the pause";
  // Both loops carry on from the paused value, the source's since its resume, the child's since
  // its restore (later). So the source, read after the child, is ahead of it. (Against the
  // source's value at the branch's return instead, the child once won: its loop ran through its
  // fork and this read while the source's was starved by the branch's ready path, 46 against 41
  // in a clean-clone ctest -j2.)
  EXPECT_LE(c0, counter(src));
  EXPECT_EQ(sh(child, "cat /tmp/origin"), "base\n");
  // Its copy of the loop carries on from that value.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_GT(counter(child), c0);
  // And the two diverge: a write in the child does not reach the source.
  sh(child, "echo child > /tmp/origin");
  EXPECT_EQ(sh(src, "cat /tmp/origin"), "base\n");
}

TEST_F(Branch, LiveBranchHoldsThePausedInstantAndTheSourceCarriesOn) {
  check_consistency(engine::BranchMode::kLive, "live1");
}

TEST_F(Branch, FullBranchHoldsThePausedInstantAndTheSourceCarriesOn) {
  check_consistency(engine::BranchMode::kFull, "full1");
}

// Every live branch of a busy guest holds a whole, consistent memory: each child of a series
// of branches answers (a stale page in the tag leaves a child spinning on a lock forever). The
// test holds an agent connection to the source throughout, which a caller may (see branch.h).
TEST_F(Branch, EveryLiveBranchOfABusyGuestGivesALiveChild) {
  auto src = fork_one("base");
  ASSERT_FALSE(src.empty());
  auto held = engine::Sandbox::attach(config(), src);
  ASSERT_TRUE(held) << held.error().describe();
  auto run = [&](const std::string& cmd) {
    engine::ExecOptions o;
    o.shell = cmd;
    auto r = (*held)->exec(o);
    EXPECT_TRUE(r) << r.error().describe();
    return r ? r->stdout_data : "";
  };
  run(kCounter);
  run("(while true; do dd if=/dev/urandom of=/tmp/churn bs=64k count=16 2>/dev/null; "
      "sleep 0.02; done) >/dev/null 2>&1 &");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  for (int i = 0; i < 5; ++i) {
    std::string tag = "busy" + std::to_string(i);
    auto r = branch(src, tag);
    ASSERT_TRUE(r) << r.error().describe();
    EXPECT_EQ(r->gate_ms > 0, vmm::host_jail().switchover_ack) << "the switch-over was gated";
    auto child = fork_one(tag);
    ASSERT_FALSE(child.empty()) << "branch " << i << " of a busy guest gave no live child";
    EXPECT_GT(counter(child), 0);
    ASSERT_TRUE(engine::remove_sandbox(config(), child));
  }
  EXPECT_GT(std::stol("0" + run("cat /tmp/counter")), 0)
      << "the source runs on after five branches, its agent connection too";
}

// A guest writer that rewrites 4 KiB blocks of a tmpfs file in turn, block i % kBlocks holding
// i, and publishes each i it finished by rename (/tmp/last). Every block it rewrites during a
// live copy is a page the copy must send again; one it missed shows up as a block a whole
// round (or more) older than its neighbours.
constexpr int kBlocks = 256;
const std::string kBlockWriter =
    "(n=" + std::to_string(kBlocks) +
    "; awk -v n=$n 'BEGIN { for (k = 0; k < n; k++) printf \"%-4095s\\n\", 0 }' > /tmp/blocks; "
    "i=0; while true; do i=$((i+1)); printf '%-4095s\\n' $i | dd of=/tmp/blocks bs=4096 "
    "seek=$((i % n)) conv=notrunc 2>/dev/null; echo $i > /tmp/l.new; mv /tmp/l.new /tmp/last; "
    "done) >/dev/null 2>&1 & echo $! > /tmp/writer.pid";

// What a sandbox of kBlockWriter holds, once its writer is stopped: "" when it is whole, else
// the first block that is not. A pause holds last = L and every block of 1..L, and perhaps
// that of L + 1 (written, not yet published).
std::string block_writer_damage(const std::string& id) {
  std::string out = sh(id,
                       "kill -STOP $(cat /tmp/writer.pid); sleep 0.3; cat /tmp/last; "
                       "awk '{ print $1 }' /tmp/blocks");
  std::istringstream in(out);
  long last = -1;
  in >> last;
  if (last < 0) return "no /tmp/last in: " + out.substr(0, 200);
  const long next = last + 1;
  for (long k = 0; k < kBlocks; ++k) {
    long v = -1;
    if (!(in >> v)) return "block " + std::to_string(k) + " unreadable";
    // The newest i <= next with i % kBlocks == k (0: none yet).
    long want = next - ((next - k) % kBlocks + kBlocks) % kBlocks;
    if (want < 1) want = 0;
    bool ok = v == want || (want == next && v == std::max(0L, want - kBlocks));
    if (!ok) {
      return "block " + std::to_string(k) + " holds " + std::to_string(v) + ", not " +
             std::to_string(want) + " (last " + std::to_string(last) + ")";
    }
  }
  return "";
}

// Every page the guest wrote during a live copy reaches the tag: the children of a series of
// branches of a guest rewriting memory hold every block as of the paused instant. (QEMU's
// dirty tracking under TCG, and forkd's change to it: no wait for the stopped vCPU in the last
// round, src/vmm/lean/qemu-static/patches.)
TEST_F(Branch, EveryPageWrittenDuringALiveCopyReachesTheTag) {
  auto src = fork_one("base");
  ASSERT_FALSE(src.empty());
  sh(src, kBlockWriter);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  for (int i = 0; i < 3; ++i) {
    std::string tag = "blocks" + std::to_string(i);
    auto r = branch(src, tag);
    ASSERT_TRUE(r) << r.error().describe();
    EXPECT_EQ(r->mode, engine::BranchMode::kLive);
    auto child = fork_one(tag);
    ASSERT_FALSE(child.empty());
    EXPECT_EQ(block_writer_damage(child), "") << "branch " << i;
    ASSERT_TRUE(engine::remove_sandbox(config(), child));
  }
  // The source's writer went on throughout; its own blocks are whole too.
  EXPECT_EQ(block_writer_damage(src), "");
}

// A VM whose RAM is whole MiB (as every VM of a tag saved before the RAM pad, or by a QEMU that
// needs none): under TCG with a QEMU before 9.0 it cannot be copied live safely, so its branch
// is made in full mode and says so; with 9.0+ (or KVM) it is branched live.
TEST_F(Branch, LiveBranchOfAnUnpaddedVmFallsBackToFull) {
  engine::SnapshotOptions so;
  so.tag = "unpadded";
  so.image = "minimal";
  so.memory_mib = 128;
  so.ram_bytes = 128u << 20;  // as forkd wrote tags before the pad
  so.warmup = {"echo unpadded > /tmp/origin"};
  auto tag = engine::create_snapshot(config(), so);
  ASSERT_TRUE(tag) << tag.error().describe();
  EXPECT_EQ(tag->meta.guest_ram_bytes(), 128u << 20);
  auto src = fork_one("unpadded");
  ASSERT_FALSE(src.empty());
  auto r = branch(src, "unpadded-b");
  ASSERT_TRUE(r) << r.error().describe();
  auto accel = vmm::choose_accel(config().accel);
  ASSERT_TRUE(accel);
  if (accel->accel == vmm::Accel::kKvm || !vmm::host_jail().tcg_ram_pad) {
    EXPECT_EQ(r->mode, engine::BranchMode::kLive) << "QEMU " << vmm::host_jail().qemu_version;
  } else {
    EXPECT_EQ(r->mode, engine::BranchMode::kFull) << "TCG before QEMU 9.0: live would miss pages";
  }
  EXPECT_EQ(r->meta.guest_ram_bytes(), 128u << 20);
  auto child = fork_one("unpadded-b");
  ASSERT_FALSE(child.empty());
  EXPECT_EQ(sh(child, "cat /tmp/origin"), "unpadded\n");
}

// A tag made before microvm under TCG dropped the PIT (engine::idle_quiet_tcg) and its second
// IO-APIC has them in its device state: its children and their branches keep them, or the
// restore would refuse the state.
TEST_F(Branch, TagsWithAPitAndASecondIoapicForkAndBranchWithThem) {
  engine::SnapshotOptions so;
  so.tag = "with-pit";
  so.image = "minimal";
  so.memory_mib = 128;
  so.with_pit = true;
  so.with_ioapic2 = true;
  so.warmup = {"echo pit > /tmp/origin"};
  auto tag = engine::create_snapshot(config(), so);
  ASSERT_TRUE(tag) << tag.error().describe();
  EXPECT_TRUE(tag->meta.pit);
  EXPECT_TRUE(tag->meta.ioapic2);
  auto src = fork_one("with-pit");
  ASSERT_FALSE(src.empty());
  auto sb = engine::Sandbox::attach(config(), src);
  ASSERT_TRUE(sb) << sb.error().describe();
  EXPECT_EQ((*sb)->record().value("pit", false), true);
  EXPECT_EQ((*sb)->record().value("ioapic2", false), true);
  sb->reset();
  auto r = branch(src, "with-pit-b");
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_TRUE(r->meta.pit);
  EXPECT_TRUE(r->meta.ioapic2);
  auto child = fork_one("with-pit-b");
  ASSERT_FALSE(child.empty());
  EXPECT_EQ(sh(child, "cat /tmp/origin"), "pit\n");
  EXPECT_EQ(sh(child, "dmesg | grep -c 'IOAPIC\\['"), "2\n");
}

// A booted VM (not forked from a tag) is refused with a clear error, and keeps running.
TEST_F(Branch, ABootedSandboxIsRefused) {
  engine::BootOptions bo;
  bo.memory_mib = 128;
  auto sb = engine::Sandbox::boot(config(), bo);
  ASSERT_TRUE(sb) << sb.error().describe();
  std::string id = (*sb)->id();
  (*sb)->release();
  sb->reset();
  auto r = branch(id, "booted");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(r.error().message().find("not forked from a tag"), std::string::npos)
      << r.error().message();
  EXPECT_EQ(sh(id, "echo alive"), "alive\n");
  EXPECT_FALSE(store::SnapshotStore(config().home).load("booted"));
}

// A branch's destination QEMU leaves its memory file to forkd: with the stub libraries and a
// QEMU that would sync the whole file when the copy ends, its backend has pmem=on and it runs
// with FORKD_PMEM_PERSIST=skip (seen in /proc while it runs); with FORKD_LEAN_QEMU=0 neither.
// Either way the branch gives a working child (a stub refusing the sync would abort the
// destination and fail the branch).
TEST_F(Branch, TheDestinationSkipsItsMemorySyncOnlyWithTheStubs) {
  ScopedEnv destination("FORKD_BRANCH_RECEIVER", "0");  // a live link has none otherwise
  const vmm::HostJail& host = vmm::host_jail();
  ASSERT_FALSE(host.lean.dir.empty()) << host.lean.reason;
  const bool qemu_syncs = vmm::qemu_syncs_volatile_ram(host.qemu_version);
  for (bool stubs : {true, false}) {
    SCOPED_TRACE(stubs ? "stubs" : "FORKD_LEAN_QEMU=0");
    engine::EngineConfig cfg = config();
    cfg.lean_qemu = stubs;
    auto src = fork_one("base");
    ASSERT_FALSE(src.empty());
    engine::BranchOptions bo;
    bo.sandbox_id = src;
    bo.tag = stubs ? "nosync1" : "nosync0";
    auto w = branch_watching_destination(cfg, bo);
    ASSERT_TRUE(w.result) << w.result.error().describe();
    ASSERT_FALSE(w.cmdline.empty()) << "the destination was not seen running";
    const bool skipped = stubs && host.lean.pmem_stub && qemu_syncs;
    EXPECT_EQ(w.cmdline.find(",pmem=on") != std::string::npos, skipped);
    EXPECT_EQ(w.environ_text.find("FORKD_PMEM_PERSIST=skip") != std::string::npos, skipped);
    auto child = fork_one(bo.tag);
    ASSERT_FALSE(child.empty());
    EXPECT_EQ(sh(child, "cat /tmp/origin"), "base\n");
  }
}

// A full branch's destination brings its memory file in at start, so that the paused copy takes
// no page faults; a live one leaves that to forkd's prefault beside the copy.
TEST_F(Branch, OnlyAFullBranchsDestinationPreallocatesItsMemory) {
  ScopedEnv destination("FORKD_BRANCH_RECEIVER", "0");  // a live link has none otherwise
  for (auto mode : {engine::BranchMode::kFull, engine::BranchMode::kLive}) {
    const bool full = mode == engine::BranchMode::kFull;
    SCOPED_TRACE(full ? "full" : "live");
    auto src = fork_one("base");
    ASSERT_FALSE(src.empty());
    engine::BranchOptions bo;
    bo.sandbox_id = src;
    bo.tag = full ? "prealloc-full" : "prealloc-live";
    bo.mode = mode;
    auto w = branch_watching_destination(config(), bo);
    ASSERT_TRUE(w.result) << w.result.error().describe();
    ASSERT_FALSE(w.cmdline.empty()) << "the destination was not seen running";
    EXPECT_EQ(w.result->mode, mode);
    EXPECT_EQ(w.cmdline.find(",prealloc=on,prealloc-threads=") != std::string::npos, full);
    auto child = fork_one(bo.tag);
    ASSERT_FALSE(child.empty());
    EXPECT_EQ(sh(child, "cat /tmp/origin"), "base\n");
  }
}

// A live branch into a link reads the source's stream itself: no destination QEMU runs, and
// the link's memory is assembled by its first spawn (a destination's memory file used to be
// adopted as it), which also records the link's content hash: the tag was ready before it.
// FORKD_BRANCH_RECEIVER=0 brings the destination back.
TEST_F(Branch, ALiveLinkIsReadFromTheStreamWithoutADestination) {
  for (bool receiver : {true, false}) {
    SCOPED_TRACE(receiver ? "receiver" : "FORKD_BRANCH_RECEIVER=0");
    ScopedEnv env("FORKD_BRANCH_RECEIVER", receiver ? nullptr : "0");
    auto src = fork_one("base");
    ASSERT_FALSE(src.empty());
    sh(src,
       "dd if=/dev/urandom of=/tmp/blob bs=1M count=4 2>/dev/null; md5sum /tmp/blob > /tmp/sum");
    engine::BranchOptions bo;
    bo.sandbox_id = src;
    bo.tag = receiver ? "received" : "via-destination";
    auto w = branch_watching_destination(config(), bo);
    ASSERT_TRUE(w.result) << w.result.error().describe();
    EXPECT_EQ(w.cmdline.empty(), receiver) << "a destination QEMU ran: " << !w.cmdline.empty();
    EXPECT_EQ(w.result->mode, engine::BranchMode::kLive);
    // The reader let the source switch over (engine/switchover_gate.h) where QEMU can wait for it.
    EXPECT_EQ(w.result->gate_ms > 0, receiver && vmm::host_jail().switchover_ack)
        << "QEMU " << vmm::host_jail().qemu_version << ", gate at " << w.result->gate_ms << " ms";
    ASSERT_TRUE(w.result->meta.parent_tag.has_value());
    EXPECT_EQ(*w.result->meta.parent_tag, "base");
    store::SnapshotStore snaps(config().home);
    store::MemoryResolver resolver(snaps, config().home + "/cache/assembled");
    EXPECT_EQ(w.result->meta.content_pending, receiver);
    EXPECT_EQ(w.result->meta.content_hash().empty(), receiver);
    EXPECT_EQ(path_exists(resolver.assembled_path(w.result->meta)), !receiver);
    // The source carries on; a child of the link has the paused instant, its 4 MiB included.
    sh(src, "echo after > /tmp/origin");
    auto child = fork_one(bo.tag);
    ASSERT_FALSE(child.empty());
    auto settled = snaps.load(bo.tag);
    ASSERT_TRUE(settled);
    EXPECT_FALSE(settled->content_pending);
    const std::string assembled = resolver.assembled_path(*settled);
    ASSERT_TRUE(path_exists(assembled));
    auto sha = store::hash_file_entry(assembled);
    ASSERT_TRUE(sha);
    EXPECT_EQ(sha->sha256, settled->content_hash());
    EXPECT_EQ(sh(child, "cat /tmp/origin"), "base\n");
    EXPECT_EQ(sh(child, "md5sum -c /tmp/sum"), "/tmp/blob: OK\n");
    EXPECT_EQ(sh(src, "cat /tmp/origin"), "after\n");
    // A plain save of the source afterwards (a workspace's suspend): a file has no return path,
    // so the gate's capabilities must be off again.
    auto saved = engine::save_device_state(config().sandboxes_dir() + "/" + src + "/qmp.sock",
                                           config().home + "/plain-" + bo.tag + ".state");
    EXPECT_TRUE(saved) << saved.error().describe();
    (void)engine::remove_sandbox(config(), child);
    (void)engine::remove_sandbox(config(), src);
  }
}

// The threads the pause passes through (vmm/cpu_lift.h, engine/branch_source.cc) sit in the
// pause's CPU cgroup, at a raised priority, while the copy runs, and are back after it: in the
// sandbox's own cgroup (its CPU limit counts them again) and at their own priority.
TEST_F(Branch, ThePausesThreadsAreLiftedForTheCopyAndPutBackAfter) {
  auto src = fork_one("base");
  ASSERT_FALSE(src.empty());
  pid_t qemu = 0;
  {
    auto sb = engine::Sandbox::attach(config(), src);
    ASSERT_TRUE(sb) << sb.error().describe();
    qemu = (*sb)->qemu_pid();
  }
  const std::string task = "/proc/" + std::to_string(qemu) + "/task/";
  auto cpu_cgroup = [&](pid_t tid) {
    auto text = read_file(task + std::to_string(tid) + "/cgroup");
    return text ? vmm::v1_cpu_cgroup(*text).value_or("-") : "-";
  };
  const std::string home = cpu_cgroup(qemu);
  const bool v1_cpu = vmm::host_jail().cgroups.version == vmm::CgroupVersion::kV1 &&
                      vmm::host_jail().cgroups.has("cpu") && home != "-";
  std::string during;
  int nice_during = 0;
  engine::BranchOptions bo;
  bo.sandbox_id = src;
  bo.tag = "lifted";
  bo.on_resumed = [&](const std::string&, double, engine::BranchMode) {
    // Still inside the copy: the source runs again, its threads not yet put back.
    during = cpu_cgroup(qemu);
    nice_during = ::getpriority(PRIO_PROCESS, static_cast<id_t>(qemu));
  };
  auto r = engine::branch_sandbox(config(), bo);
  ASSERT_TRUE(r) << r.error().describe();
  if (v1_cpu) {
    EXPECT_EQ(during, std::string("/") + engine::kPauseCgroup);
    EXPECT_EQ(nice_during, -10);
    // The lift's group has a real-time budget, so the migration thread ran at a real-time
    // priority from the gate's opening until the source ran again (base/rt_window.h).
    if (vmm::host_jail().switchover_ack) {
      EXPECT_GT(r->rt_window_ms, 0.0);
    }
  }
  // After: every thread of the source where the sandbox's cgroup is, at nice 0, none at a
  // real-time priority.
  for (const auto& e : std::filesystem::directory_iterator(task)) {
    pid_t tid = std::atoi(e.path().filename().c_str());
    EXPECT_EQ(cpu_cgroup(tid), home) << "thread " << tid;
    EXPECT_EQ(::getpriority(PRIO_PROCESS, static_cast<id_t>(tid)), 0) << "thread " << tid;
    EXPECT_EQ(::sched_getscheduler(tid), SCHED_OTHER) << "thread " << tid;
  }
  EXPECT_EQ(sh(src, "echo alive"), "alive\n");
  if (!v1_cpu) return;
  // A forkd killed mid-copy leaves the main thread lifted, here with its pause's window open (at
  // a real-time priority, which the sandbox's group, without a real-time budget, refuses): gc
  // puts it back beside its vCPU, at the normal policy.
  const std::string group = vmm::host_jail().cgroups.hierarchy("cpu") + "/" + engine::kPauseCgroup;
  ASSERT_TRUE(write_control_file(group + "/tasks", std::to_string(qemu)));
  ASSERT_EQ(cpu_cgroup(qemu), std::string("/") + engine::kPauseCgroup);
  const sched_param fifo{1};
  ASSERT_EQ(::sched_setscheduler(qemu, SCHED_FIFO, &fifo), 0) << std::strerror(errno);
  auto swept = engine::gc(config());
  EXPECT_GE(swept.lifted_threads, 1);
  EXPECT_EQ(cpu_cgroup(qemu), home);
  EXPECT_EQ(::sched_getscheduler(qemu), SCHED_OTHER);
}

// The threads of this process whose scheduling policy is SCHED_BATCH.
int batch_threads() {
  int n = 0;
  for (int tid : process_threads(::getpid()).value_or(std::vector<int>{})) {
    if (::sched_getscheduler(tid) == SCHED_BATCH) ++n;
  }
  return n;
}

// The reader of a live link's stream runs as a batch thread while it reads, so that a wake-up
// never takes the core from the source's migration thread in the pause; it ends with the copy.
TEST_F(Branch, TheStreamReaderIsABatchThread) {
  auto src = fork_one("base");
  ASSERT_FALSE(src.empty());
  ASSERT_EQ(batch_threads(), 0);
  std::atomic<bool> done{false};
  std::atomic<int> seen{0};
  std::thread watch([&] {
    while (!done) {
      seen = std::max(seen.load(), batch_threads());
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  auto r = branch(src, "batch");
  done = true;
  watch.join();
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(seen.load(), 1) << "one batch thread during the copy: the reader";
  EXPECT_EQ(batch_threads(), 0) << "and none after it";
  (void)engine::remove_tag(config(), "batch", engine::RemoveMode::kForce);
  (void)engine::remove_sandbox(config(), src);
}

// The same on the pc machine, whose firmware and ROM blocks (BIOS, option ROMs, ACPI tables)
// travel in the stream beside the main memory and go into the link's device state.
TEST_F(Branch, ALivePcLinkIsReadFromTheStream) {
  engine::EngineConfig cfg = config();
  cfg.machine = vmm::MachineType::kPc;
  engine::SnapshotOptions so;
  so.tag = "pc-base";
  so.warmup = {"echo pc > /tmp/origin"};
  ASSERT_TRUE(engine::create_snapshot(cfg, so));
  auto src = fork_one("pc-base");
  ASSERT_FALSE(src.empty());
  sh(src, "dd if=/dev/urandom of=/tmp/blob bs=1M count=2 2>/dev/null; md5sum /tmp/blob > /tmp/sum");
  engine::BranchOptions bo;
  bo.sandbox_id = src;
  bo.tag = "pc-link";
  auto w = branch_watching_destination(config(), bo);
  ASSERT_TRUE(w.result) << w.result.error().describe();
  EXPECT_TRUE(w.cmdline.empty()) << "a destination QEMU ran";
  EXPECT_EQ(w.result->meta.machine, "pc");
  auto child = fork_one("pc-link");
  ASSERT_FALSE(child.empty());
  EXPECT_EQ(sh(child, "cat /tmp/origin; md5sum -c /tmp/sum"), "pc\n/tmp/blob: OK\n");
  EXPECT_EQ(sh(src, "echo alive"), "alive\n");
}

TEST_F(Branch, ALinkStoresOnlyTheDirtyPages) {
  auto src = fork_one("base");
  ASSERT_FALSE(src.empty());
  sh(src, "dd if=/dev/urandom of=/tmp/blob bs=1M count=8 2>/dev/null");
  auto r = branch(src, "dirty8");
  ASSERT_TRUE(r) << r.error().describe();
  auto detail = engine::snapshot_detail_json(config(), "dirty8");
  ASSERT_TRUE(detail) << detail.error().describe();
  uint64_t stored = (*detail)["memory_physical_bytes"].get<uint64_t>();
  uint64_t logical = (*detail)["memory_logical_bytes"].get<uint64_t>();
  EXPECT_EQ(logical, r->meta.guest_ram_bytes());
  EXPECT_GE(logical, 256ull << 20);
  EXPECT_GE(stored, 8ull << 20) << "the 8 MiB the guest wrote are in the link";
  EXPECT_LT(stored, 64ull << 20) << "but not the untouched rest of its memory";
  uint64_t bitmap_blocks = ((logical / 4096 + 7) / 8 + 4095) / 4096 * 4096;
  EXPECT_EQ(r->link_bytes, stored - bitmap_blocks) << "memory.diff plus the page bitmap's blocks";
}

TEST_F(Branch, ChainsRecordAncestorsAndRefuseToOrphan) {
  auto a = fork_one("base");
  ASSERT_FALSE(a.empty());
  sh(a, "echo one > /tmp/level");
  ASSERT_TRUE(branch(a, "l1"));
  auto b = fork_one("l1");
  ASSERT_FALSE(b.empty());
  EXPECT_EQ(sh(b, "cat /tmp/level"), "one\n");
  sh(b, "echo two > /tmp/level");
  auto l2 = branch(b, "l2");
  ASSERT_TRUE(l2) << l2.error().describe();
  auto base_meta = store::SnapshotStore(config().home).load("base");
  auto l1_meta = store::SnapshotStore(config().home).load("l1");
  ASSERT_TRUE(base_meta && l1_meta);
  EXPECT_EQ(l2->meta.parent_tag.value_or(""), "l1");
  EXPECT_EQ(l2->meta.parent_content_hash.value_or(""), l1_meta->content_hash());
  EXPECT_EQ(l1_meta->parent_content_hash.value_or(""), base_meta->content_hash());

  auto d = engine::snapshot_detail_json(config(), "l2");
  ASSERT_TRUE(d);
  EXPECT_EQ((*d)["chain_depth"], 2);
  EXPECT_EQ((*d)["ancestors"], nlohmann::json({"base", "l1"}));
  auto d1 = engine::snapshot_detail_json(config(), "l1");
  ASSERT_TRUE(d1);
  EXPECT_EQ((*d1)["dependents"], nlohmann::json({"l2"}));

  // A depth-2 child has the state of its own branch.
  auto c = fork_one("l2");
  ASSERT_FALSE(c.empty());
  EXPECT_EQ(sh(c, "cat /tmp/level"), "two\n");

  // rmi refuses to orphan, naming the dependents.
  auto refused = engine::remove_tag(config(), "l1", engine::RemoveMode::kRefuse);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(refused.error().message().find("l2"), std::string::npos) << refused.error().message();

  // compact flattens l2 into a base that no longer needs l1.
  auto flat = engine::compact_tag(config(), "l2", "l2flat");
  ASSERT_TRUE(flat) << flat.error().describe();
  EXPECT_FALSE(flat->parent_tag);
  EXPECT_EQ(flat->branched_from.value_or(""), "compact:l2");
  auto l2_now = store::SnapshotStore(config().home).load("l2");  // settled by c's fork
  ASSERT_TRUE(l2_now);
  EXPECT_FALSE(l2_now->content_hash().empty());
  EXPECT_EQ(flat->content_hash(), l2_now->content_hash());
  auto again = engine::compact_tag(config(), "l2", "l2flat");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(engine::compact_tag(config(), "l2", "l2").error().code(), ErrorCode::kInvalidArgument);

  // force removes l1 and orphans l2: it reports the missing parent; c keeps running.
  auto forced = engine::remove_tag(config(), "l1", engine::RemoveMode::kForce);
  ASSERT_TRUE(forced) << forced.error().describe();
  auto orphan = engine::snapshot_detail_json(config(), "l2");
  ASSERT_TRUE(orphan);
  EXPECT_NE(orphan->value("chain_warning", "").find("l1"), std::string::npos) << orphan->dump();
  EXPECT_EQ(sh(c, "cat /tmp/level"), "two\n") << "children keep running from a removed tag";
  auto flat_child = fork_one("l2flat");
  ASSERT_FALSE(flat_child.empty());
  EXPECT_EQ(sh(flat_child, "cat /tmp/level"), "two\n");

  // cascade removes a tag with everything built on it.
  ASSERT_TRUE(branch(flat_child, "l3"));
  auto cascaded = engine::remove_tag(config(), "l2flat", engine::RemoveMode::kCascade);
  ASSERT_TRUE(cascaded) << cascaded.error().describe();
  EXPECT_EQ(*cascaded, std::vector<std::string>({"l3", "l2flat"}));
  store::SnapshotStore snaps(config().home);
  EXPECT_FALSE(snaps.exists("l3"));
  EXPECT_FALSE(snaps.exists("l2flat"));
  (void)engine::remove_tag(config(), "l2", engine::RemoveMode::kForce);
}

TEST_F(Branch, SnapshotFromBuildsALinkAndRemovesItsChild) {
  auto r = run_cli({"snapshot", "--from", "base", "--tag", "from1", "--exec",
                    "echo built > /tmp/built", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.out;
  EXPECT_EQ(j["parent_tag"], "base");
  EXPECT_TRUE(engine::list_sandboxes(config()).empty()) << "the building child must be gone";
  auto child = fork_one("from1");
  ASSERT_FALSE(child.empty());
  EXPECT_EQ(sh(child, "cat /tmp/built /tmp/origin"), "built\nbase\n");
  auto bad = run_cli({"snapshot", "--from", "nope", "--tag", "from2"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("nope"), std::string::npos) << bad.err;
  auto failing = run_cli({"snapshot", "--from", "base", "--tag", "from3", "--exec", "false"});
  EXPECT_NE(failing.exit_code, 0);
  EXPECT_TRUE(engine::list_sandboxes(config()).size() == 1u) << "only `child` is left";
  EXPECT_FALSE(store::SnapshotStore(config().home).exists("from3"));
}

// A sandbox with a disk (python image): the tag's disk is the source's disk at the paused
// instant, read back from the disk itself (the child's page cache dropped), and the source goes
// on writing to its own disk; so in a live branch and in a full one (whose copy takes several
// channels on QEMU 9.0+), and the source still saves to a file on one channel afterwards.
TEST_F(Branch, DiskIsFrozenAtThePausedInstant) {
  engine::SnapshotOptions so;
  so.tag = "pybase";
  so.image = "python";
  ASSERT_TRUE(engine::create_snapshot(config(), so));
  auto src = fork_one("pybase");
  ASSERT_FALSE(src.empty());
  sh(src, "echo before > /root/before; sync");
  auto r = branch(src, "pylink");
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_TRUE(r->meta.has_disk);
  EXPECT_FALSE(r->resumed_by_qemu) << "the disk's snapshot comes before `cont`";
  sh(src, "echo after > /root/after; sync");
  EXPECT_EQ(sh(src, "cat /root/before /root/after"), "before\nafter\n");
  auto child = fork_one("pylink");
  ASSERT_FALSE(child.empty());
  EXPECT_EQ(sh(child,
               "sync; echo 3 > /proc/sys/vm/drop_caches; cat /root/before; "
               "test -e /root/after && echo leaked || echo absent"),
            "before\nabsent\n");

  // The first branch froze the sandbox's first overlay, above the tag's disk: nothing to fold.
  EXPECT_FALSE(r->folded);
  auto overlays = [&] {
    int n = 0;
    for (const auto& e :
         std::filesystem::directory_iterator(config().sandboxes_dir() + "/" + src)) {
      if (e.path().extension() == ".qcow2") ++n;
    }
    return n;
  };
  EXPECT_EQ(overlays(), 2);

  auto full = branch(src, "pyfull", engine::BranchMode::kFull);
  ASSERT_TRUE(full) << full.error().describe();
  EXPECT_EQ(full->mode, engine::BranchMode::kFull);
  // The second froze the first branch's overlay, which went into the sandbox's first one: the
  // chain is as deep as after the first branch, and what the guest wrote still reads back.
  EXPECT_TRUE(full->folded);
  EXPECT_EQ(overlays(), 2);
  EXPECT_EQ(sh(src, "sync; echo 3 > /proc/sys/vm/drop_caches; cat /root/before /root/after"),
            "before\nafter\n");
  sh(src, "echo later > /root/later; sync");
  auto child2 = fork_one("pyfull");
  ASSERT_FALSE(child2.empty());
  EXPECT_EQ(sh(child2,
               "sync; echo 3 > /proc/sys/vm/drop_caches; cat /root/before /root/after; "
               "test -e /root/later && echo leaked || echo absent"),
            "before\nafter\nabsent\n");
  // A plain save of the source after both branches (what a workspace suspend does).
  auto saved = engine::save_device_state(config().sandboxes_dir() + "/" + src + "/qmp.sock",
                                         config().home + "/plain.state", false);
  EXPECT_TRUE(saved) << saved.error().describe();
  (void)engine::remove_tag(config(), "pyfull", engine::RemoveMode::kForce);
  (void)engine::remove_sandbox(config(), child2);
  (void)engine::remove_tag(config(), "pylink", engine::RemoveMode::kForce);
  (void)engine::remove_sandbox(config(), child);
  (void)engine::remove_sandbox(config(), src);
  (void)engine::remove_tag(config(), "pybase", engine::RemoveMode::kCascade);
}

TEST_F(Branch, FaultCases) {
  // A dead sandbox.
  auto gone = fork_one("base");
  ASSERT_FALSE(gone.empty());
  std::string id = gone;
  ASSERT_TRUE(engine::remove_sandbox(config(), id));
  auto dead = branch(id, "never");
  ASSERT_FALSE(dead);
  EXPECT_EQ(dead.error().code(), ErrorCode::kNotFound);

  auto src = fork_one("base");
  ASSERT_FALSE(src.empty());
  // An existing tag, and an unsafe one.
  auto exists = branch(src, "base");
  ASSERT_FALSE(exists);
  EXPECT_EQ(exists.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(branch(src, "../x").error().code(), ErrorCode::kInvalidArgument);
  EXPECT_FALSE(store::SnapshotStore(config().home).exists("never"));

  // A generated tag fits the contract's pattern.
  auto gen = branch(src, "");
  ASSERT_TRUE(gen) << gen.error().describe();
  EXPECT_EQ(gen->meta.tag.rfind("branch-" + src + "-", 0), 0u) << gen->meta.tag;
  EXPECT_LE(gen->meta.tag.size(), 64u);
  EXPECT_EQ(sh(src, "echo alive"), "alive\n");
}

TEST_F(Branch, DiskFullResumesTheSourceAndLeavesNoTag) {
  FORKD_REQUIRE("root", root_missing_reason("mount a small tmpfs"));
  auto dir = TempDir::create("forkd-full-home");
  ASSERT_TRUE(dir);
  // Room for a 128 MiB tag and its child, not for a branch's 128 MiB memory file.
  ASSERT_EQ(::mount("tmpfs", dir->path().c_str(), "tmpfs", 0, "size=200m"), 0);
  struct Unmount {
    std::string p;
    ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); }
  } unmount{dir->path()};
  std::string real = std::filesystem::read_symlink(config().home + "/images").string();
  ASSERT_EQ(::symlink(real.c_str(), (dir->path() + "/images").c_str()), 0);
  // The test home's cache: the shared entries, without its assembled chain memory.
  std::string cache = config().home + "/cache";
  ASSERT_EQ(::symlink(cache.c_str(), (dir->path() + "/cache").c_str()), 0);
  engine::EngineConfig cfg = config();
  cfg.home = dir->path();
  engine::SnapshotOptions so;
  so.tag = "small";
  so.memory_mib = 128;
  ASSERT_TRUE(engine::create_snapshot(cfg, so));
  engine::ForkOptions fo;
  fo.tag = "small";
  auto forked = engine::fork_children(cfg, fo);
  ASSERT_TRUE(forked && !forked->children[0].error);
  struct RemoveSource {  // also when an assertion below ends the test early
    const engine::EngineConfig& cfg;
    std::string id;
    ~RemoveSource() { (void)engine::remove_sandbox(cfg, id); }
  } remove_source{cfg, forked->children[0].id};
  auto src = engine::Sandbox::attach(cfg, forked->children[0].id);
  ASSERT_TRUE(src);
  // Through a destination QEMU (its memory file does not fit), then read from the stream into a
  // link (its changed pages do not fit: the rest of the file system is filled first).
  for (bool receiver : {false, true}) {
    SCOPED_TRACE(receiver ? "receiver" : "FORKD_BRANCH_RECEIVER=0");
    ScopedEnv env("FORKD_BRANCH_RECEIVER", receiver ? nullptr : "0");
    const std::string filler = dir->path() + "/filler";
    if (receiver) {
      engine::ExecOptions dirty;
      dirty.shell = "dd if=/dev/urandom of=/tmp/blob bs=1M count=24 2>/dev/null; echo ok";
      ASSERT_TRUE((*src)->exec(dirty));
      struct statvfs vfs {};
      ASSERT_EQ(::statvfs(dir->path().c_str(), &vfs), 0);
      const uint64_t leave = 4ull << 20;
      const uint64_t avail = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
      ASSERT_GT(avail, leave);
      ASSERT_TRUE(write_file_atomic(filler, std::string(avail - leave, 'f')));
    }
    engine::BranchOptions bo;
    bo.sandbox_id = (*src)->id();
    bo.tag = "nospace";
    auto r = engine::branch_sandbox(cfg, bo);
    ::unlink(filler.c_str());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), ErrorCode::kNoSpace) << r.error().describe();
    engine::ExecOptions eo;
    eo.shell = "echo running";
    auto ran = (*src)->exec(eo);
    ASSERT_TRUE(ran) << ran.error().describe();
    EXPECT_EQ(ran->stdout_data, "running\n") << "the source runs on";
    store::SnapshotStore snaps(cfg.home);
    EXPECT_FALSE(snaps.exists("nospace"));
    EXPECT_FALSE(snaps.pending("nospace"));
    for (const auto& name : list_dir_names(snaps.root())) {
      EXPECT_EQ(name.find("staging"), std::string::npos) << "left behind: " << name;
    }
  }
}

}  // namespace
}  // namespace forkd::test

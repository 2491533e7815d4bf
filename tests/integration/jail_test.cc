// The jail on real VMs (minimal image): every QEMU runs as its own unprivileged uid with no
// capabilities, no_new_privs and seccomp, in its own cgroup with the requested limits; a child
// over its memory limit is killed by the kernel and reported failed (oom) while a sibling keeps
// answering; cgroups go with their sandboxes; the CLI and `ps --json` carry the fields.
#include "vmm/jail.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <set>
#include <sstream>

#include "base/files.h"
#include "engine/fork.h"
#include "engine/registry.h"
#include "engine/sandbox_jail.h"
#include "integration/vm_fixture.h"

namespace forkd::test {
namespace {

// "Key:\tvalue" from /proc/<pid>/status.
std::string status_field(int pid, const std::string& key) {
  auto text = read_file("/proc/" + std::to_string(pid) + "/status", 1 << 16);
  if (!text) return "<gone>";
  size_t at = text->find("\n" + key + ":");
  if (at == std::string::npos) return "<missing>";
  size_t start = text->find_first_not_of(" \t", at + key.size() + 2);
  return text->substr(start, text->find('\n', start) - start);
}

std::string control(const std::string& hierarchy, const std::string& id, const std::string& file) {
  auto t = read_file("/sys/fs/cgroup/" + hierarchy + "/forkd/" + id + "/" + file, 4096);
  if (!t) return "<missing>";
  std::string s = *t;
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

class Jail : public ForkingTest {
 protected:
  static void SetUpTestSuite() { create_base_tag({"echo base > /tmp/who"}); }
  void SetUp() override {
    ForkingTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    FORKD_REQUIRE("root", root_missing_reason("run QEMU as another uid and make cgroups"));
    ASSERT_TRUE(vmm::host_jail().active) << "jail off: " << vmm::host_jail().reason;
    ASSERT_EQ(vmm::host_jail().cgroups.version, vmm::CgroupVersion::kV1)
        << "these hosts are hybrid v1; the v2 code is unit-tested over a fake tree";
  }
  static std::vector<std::string> fork(int n, const vmm::Limits& limits) {
    engine::ForkOptions fo;
    fo.tag = "base";
    fo.n = n;
    fo.use_pool = false;
    fo.limits = limits;
    return fork_ok(fo);
  }
  static std::optional<engine::SandboxInfo> info(const std::string& id) {
    for (auto& s : engine::list_sandboxes(config())) {
      if (s.id == id) return s;
    }
    return std::nullopt;
  }
};

TEST_F(Jail, QemuRunsAsItsOwnUnprivilegedUidInItsCgroup) {
  vmm::Limits lim;
  lim.memory_bytes = 300ull << 20;
  lim.cpus = 0.5;
  lim.pids = 64;
  // forkd itself allowed real-time priorities up to 5, where it may raise its limit (root without
  // CAP_SYS_RESOURCE, as on these hosts, may not: its limit is 0 then): its QEMUs must not
  // inherit that.
  struct rlimit own {};
  ASSERT_EQ(::getrlimit(RLIMIT_RTPRIO, &own), 0);
  const struct rlimit raised = {5, 5};
  const bool was_raised = ::setrlimit(RLIMIT_RTPRIO, &raised) == 0;
  auto ids = fork(2, lim);
  if (was_raised) {
    ASSERT_EQ(::setrlimit(RLIMIT_RTPRIO, &own), 0);
  }
  ASSERT_EQ(ids.size(), 2u);
  std::set<std::string> uids;
  for (const auto& id : ids) {
    auto s = info(id);
    ASSERT_TRUE(s);
    int pid = s->pid;
    std::string uid_line = status_field(pid, "Uid");
    std::string uid = uid_line.substr(0, uid_line.find('\t'));
    EXPECT_NE(uid, "0") << id;
    EXPECT_GE(std::stoull(uid), vmm::kJailUidBase) << id;
    EXPECT_EQ(uid_line, uid + "\t" + uid + "\t" + uid + "\t" + uid) << "real, effective, saved, fs";
    uids.insert(uid);
    EXPECT_EQ(status_field(pid, "Gid").substr(0, status_field(pid, "Gid").find('\t')),
              std::to_string(vmm::host_jail().gid));
    EXPECT_EQ(status_field(pid, "Groups"), "") << "no supplementary groups";
    EXPECT_EQ(status_field(pid, "CapEff"), "0000000000000000");
    EXPECT_EQ(status_field(pid, "CapPrm"), "0000000000000000");
    EXPECT_EQ(status_field(pid, "NoNewPrivs"), "1");
    EXPECT_EQ(status_field(pid, "Seccomp"), "2") << "QEMU's -sandbox filter";
    // No real-time priority it could give itself (a branch's window, base/rt_window.h, is set by
    // forkd): soft and hard limit 0, whatever forkd's were when it started QEMU.
    auto limits = read_file("/proc/" + std::to_string(pid) + "/limits", 1 << 16);
    ASSERT_TRUE(limits);
    const std::string rt_key = "Max realtime priority";
    const size_t rt = limits->find(rt_key);
    ASSERT_NE(rt, std::string::npos);
    const size_t from = rt + rt_key.size();
    std::istringstream rt_line(limits->substr(from, limits->find('\n', rt) - from));
    std::string soft, hard;
    rt_line >> soft >> hard;
    EXPECT_EQ(soft + " " + hard, "0 0");
    // Its cgroups hold it, with the limits asked for.
    auto cg = read_file("/proc/" + std::to_string(pid) + "/cgroup", 1 << 16);
    ASSERT_TRUE(cg);
    EXPECT_NE(cg->find(":memory:/forkd/" + id + "\n"), std::string::npos) << *cg;
    EXPECT_NE(cg->find(":pids:/forkd/" + id + "\n"), std::string::npos) << *cg;
    EXPECT_EQ(control("memory", id, "memory.limit_in_bytes"), std::to_string(300 << 20));
    EXPECT_EQ(control("cpu", id, "cpu.cfs_quota_us"), "50000");
    EXPECT_EQ(control("cpu", id, "cpu.cfs_period_us"), "100000");
    EXPECT_EQ(control("pids", id, "pids.max"), "64");
    // QEMU cannot fork (seccomp spawn=deny), so a fork bomb is its threads: they count here.
    EXPECT_LE(std::stoi(control("pids", id, "pids.current")), 64);
    // What ps and SandboxInfo show.
    auto iso = engine::isolation_info(s->record);
    EXPECT_EQ(iso["uid"].get<uint64_t>(), std::stoull(uid));
    EXPECT_EQ(iso["jailed"], true);
    EXPECT_EQ(iso["limits"]["memory_mib"], 300);
    EXPECT_EQ(iso["limits"]["cpus"], 0.5);
    EXPECT_EQ(iso["limits"]["pids"], 64);
    EXPECT_EQ(iso["network"], "none");
    // The run dir: QEMU owns nothing there but its pid file; no file is open to others.
    for (const auto& name : list_dir_names(config().sandboxes_dir() + "/" + id)) {
      struct stat st {};
      ASSERT_EQ(::lstat((config().sandboxes_dir() + "/" + id + "/" + name).c_str(), &st), 0);
      EXPECT_EQ(st.st_mode & 0007, 0u) << name;
      if (name != "qemu.pid") {
        EXPECT_EQ(st.st_uid, 0u) << name;
      }
    }
  }
  EXPECT_EQ(uids.size(), 2u) << "each sandbox has its own uid";
  for (const auto& id : ids) {
    ASSERT_TRUE(engine::remove_sandbox(config(), id));
    for (const char* h : {"memory", "cpu", "pids"}) {
      EXPECT_FALSE(path_exists(std::string("/sys/fs/cgroup/") + h + "/forkd/" + id))
          << h << " cgroup of " << id << " outlived its sandbox";
    }
  }
}

TEST_F(Jail, AChildOverItsMemoryLimitEndsOomWhileASiblingAnswers) {
  auto sibling = fork(1, {});
  vmm::Limits lim;
  lim.memory_bytes = 100ull << 20;  // the guest has 256 MiB and fills 200 of it
  auto doomed = fork(1, lim);
  ASSERT_EQ(sibling.size(), 1u);
  ASSERT_EQ(doomed.size(), 1u);
  {
    auto sb = engine::Sandbox::attach(config(), doomed[0]);
    ASSERT_TRUE(sb) << sb.error().describe();
    engine::ExecOptions o;
    o.shell = "dd if=/dev/zero of=/tmp/big bs=1M count=200";
    o.timeout = std::chrono::seconds(60);
    auto r = (*sb)->exec(o);
    ASSERT_FALSE(r) << "a guest filling 200 MiB under a 100 MiB limit kept running";
    EXPECT_NE(r.error().message().find("memory limit"), std::string::npos) << r.error().describe();
  }
  auto s = info(doomed[0]);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->state, "failed");
  EXPECT_EQ(s->failure_reason, "oom");
  // The sibling is untouched.
  auto sib = engine::Sandbox::attach(config(), sibling[0]);
  ASSERT_TRUE(sib) << sib.error().describe();
  engine::ExecOptions o;
  o.shell = "cat /tmp/who";
  auto r = (*sib)->exec(o);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->stdout_data, "base\n");
  // `forkd ps --json` says it too.
  auto ps = run_cli({"ps", "--json"});
  ASSERT_EQ(ps.exit_code, 0) << ps.err;
  auto j = nlohmann::json::parse(ps.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << ps.out;
  bool seen = false;
  for (const auto& e : j["sandboxes"]) {
    if (e["id"] != doomed[0]) continue;
    seen = true;
    EXPECT_EQ(e["state"], "failed");
    EXPECT_EQ(e["reason"], "oom");
    EXPECT_EQ(e["limits"]["memory_mib"], 100);
  }
  EXPECT_TRUE(seen) << ps.out;
}

TEST_F(Jail, CliForkTakesLimitsAndRefusesWhatItCannotDo) {
  auto r = run_cli({"fork", "--tag", "base", "--memory-limit", "400", "--cpus", "1.5", "--pids",
                    "100", "--no-pool", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.out;
  std::string id = j["children"][0]["id"];
  EXPECT_EQ(control("memory", id, "memory.limit_in_bytes"), std::to_string(400 << 20));
  EXPECT_EQ(control("cpu", id, "cpu.cfs_quota_us"), "150000");
  EXPECT_EQ(control("pids", id, "pids.max"), "100");
  auto bad = run_cli({"fork", "--tag", "base", "--network", "outbound"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("network"), std::string::npos) << bad.err;
  auto low = run_cli({"fork", "--tag", "base", "--memory-limit", "1"});
  EXPECT_NE(low.exit_code, 0) << "a 1 MiB limit is refused before anything starts";
  auto doctor = run_cli({"doctor", "--json"});
  auto d = nlohmann::json::parse(doctor.out, nullptr, false);
  ASSERT_TRUE(d.is_object()) << doctor.out;
  EXPECT_EQ(d["boundary"]["jailed"], true);
  EXPECT_EQ(d["boundary"]["cgroups"]["version"], "v1");
  EXPECT_EQ(d["boundary"]["user"], vmm::kJailUser);
}

}  // namespace
}  // namespace forkd::test

// Concurrent operations never destroy each other's work (issue 11): 10 branches of 4 sandboxes
// at once through one daemon, 4 `forkd snapshot` processes at once, two creates of one tag, and
// kill -9 in the middle of each. Afterwards every tag is either ready and forkable or absent (at
// most a record saying why it failed), and no QEMU, staging dir, branch dir or unsettled pending
// record is left behind.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/files.h"
#include "base/subprocess.h"
#include "engine/fork.h"
#include "engine/gc.h"
#include "engine/registry.h"
#include "integration/daemon_fixture.h"
#include "integration/vm_fixture.h"
#include "store/snapshot_store.h"

namespace forkd::test {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

class Concurrency : public ForkingTest {
 protected:
  static void SetUpTestSuite() { create_base_tag({}); }
  void TearDown() override {
    (void)daemon_.stop(SIGTERM, std::chrono::seconds(60));
    ForkingTest::TearDown();
  }

  // Everything a crashed or racing writer could leave: staging/old/removing dirs and unsettled
  // pending records beside the tags, branch destination dirs, run dirs without a record.
  static std::vector<std::string> leftovers() {
    std::vector<std::string> out;
    std::string home = config().home;
    for (const auto& n : list_dir_names(home + "/snapshots")) {
      for (const char* p : {".staging-", ".old-", ".removing-"}) {
        if (n.rfind(p, 0) == 0) out.push_back("snapshots/" + n);
      }
      // A record that says "failed" is the answer to whoever polls that tag; one still saying
      // "writing" once every writer is gone is a leftover.
      if (n.rfind(".pending-", 0) == 0) {
        auto text = read_file(home + "/snapshots/" + n, 1 << 16);
        auto j = Json::parse(text ? *text : "", nullptr, false);
        if (!j.is_object() || j.value("status", "") != "failed") out.push_back("snapshots/" + n);
      }
    }
    for (const auto& n : list_dir_names(home + "/branching")) {
      if (n[0] != '.') out.push_back("branching/" + n);
    }
    for (const auto& n : list_dir_names(home + "/sandboxes")) {
      if (n[0] != '.' && !path_exists(home + "/sandboxes/" + n + "/sandbox.json")) {
        out.push_back("sandboxes/" + n + " (no record)");
      }
    }
    return out;
  }

  // Each tag is absent (or a failed record), or ready, verified and forkable (a child answers).
  // Returns how many were ready.
  static int expect_ready_or_absent(const std::vector<std::string>& tags) {
    store::SnapshotStore snaps(config().home);
    int ready = 0;
    for (const auto& tag : tags) {
      if (!snaps.exists(tag)) {
        // At most a record that says why the write failed; never one still "writing".
        auto p = snaps.pending(tag);
        EXPECT_TRUE(!p || p->status == "failed")
            << tag << ": a record of a write that is not running";
        continue;
      }
      auto meta = snaps.load(tag);
      EXPECT_TRUE(meta) << tag << ": " << meta.error().describe();
      if (!meta) continue;
      EXPECT_EQ(meta->status, "ready") << tag;
      for (const auto& [role, f] : meta->files) {
        struct stat st {};
        std::string path = snaps.dir(tag) + "/" + store::snapshot_file_name(role);
        EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
        EXPECT_EQ(st.st_mode & 0007, 0u) << path << ": readable by others (guest RAM)";
        EXPECT_EQ(st.st_mode & 0222, 0u) << path << ": writable";
      }
      engine::ForkOptions fo;
      fo.tag = tag;
      fo.use_pool = false;
      auto forked = engine::fork_children(config(), fo);
      EXPECT_TRUE(forked) << tag << ": " << (forked ? "" : forked.error().describe());
      if (!forked) continue;
      const auto& child = forked->children[0];
      EXPECT_FALSE(child.error) << tag << ": " << (child.error ? child.error->describe() : "");
      if (!child.error) {
        auto sb = engine::Sandbox::attach(config(), child.id);
        EXPECT_TRUE(sb && (*sb)->ping()) << tag << ": child does not answer";
        sb = tl::unexpected(Error(ErrorCode::kCancelled, "drop"));
        (void)engine::remove_sandbox(config(), child.id);
        ++ready;
      }
    }
    return ready;
  }

  static int count_qemus() { return static_cast<int>(qemu_pids_for_home(config().home).size()); }

  std::vector<std::string> fork_via(httplib::Client& c, int n) {
    auto r = post_json(c, "/v1/sandboxes", {{"snapshot_tag", "base"}, {"n", n}});
    EXPECT_TRUE(r && r->status == 201) << (r ? r->body : "no response");
    std::vector<std::string> ids;
    for (const auto& s : body_json(r)) ids.push_back(s.value("id", ""));
    return ids;
  }

  TestDaemon daemon_;
};

TEST_F(Concurrency, TenBranchesOfFourSandboxesThroughOneDaemon) {
  ASSERT_TRUE(daemon_.start(config().home, "token", {"--max-branches", "10"}));
  auto c = daemon_.client();
  auto src = fork_via(c, 4);
  ASSERT_EQ(src.size(), 4u);
  std::vector<int> status(10, 0);
  std::vector<std::string> tags;
  {
    std::vector<std::jthread> threads;
    for (int i = 0; i < 10; ++i) {
      tags.push_back("cb" + std::to_string(i));
      threads.emplace_back([&, i] {
        auto cl = daemon_.client();
        auto r = post_json(cl, "/v1/sandboxes/" + src[i % 4] + "/branch",
                           {{"tag", "cb" + std::to_string(i)}, {"mode", "live"}});
        status[i] = r ? r->status : -1;
      });
    }
  }
  std::map<int, int> by_status;
  for (int s : status) ++by_status[s];
  std::printf(
      "10 concurrent branches of 4 sandboxes: %d x 201, %d x 409 (branch of that source "
      "in flight), %d other\n",
      by_status[201], by_status[409], 10 - by_status[201] - by_status[409]);
  EXPECT_EQ(by_status[201] + by_status[409], 10) << "only 201 or 409 (in flight) are right";
  EXPECT_GE(by_status[201], 4) << "each source can be branched";
  int ready = expect_ready_or_absent(tags);
  EXPECT_EQ(ready, by_status[201]);
  // The sources ran on and still answer.
  for (const auto& id : src) {
    auto r = post_json(c, "/v1/sandboxes/" + id + "/exec", {{"args", {"true"}}});
    EXPECT_TRUE(r && r->status == 200) << id;
  }
  EXPECT_EQ(leftovers(), std::vector<std::string>{});
}

TEST_F(Concurrency, KillNineDuringBranchesLeavesReadyOrAbsent) {
  ASSERT_TRUE(daemon_.start(config().home, "token", {"--max-branches", "10"}));
  auto c = daemon_.client();
  auto src = fork_via(c, 4);
  ASSERT_EQ(src.size(), 4u);
  std::vector<std::string> tags;
  int accepted = 0;
  // wait:false answers as soon as each source runs again: the daemon dies while the tags are
  // being written.
  for (int i = 0; i < 10; ++i) {
    tags.push_back("kb" + std::to_string(i));
    auto r = post_json(c, "/v1/sandboxes/" + src[i % 4] + "/branch",
                       {{"tag", tags.back()}, {"mode", "live"}, {"wait", false}});
    if (r && r->status == 202) ++accepted;
  }
  EXPECT_GE(accepted, 1);
  auto code = daemon_.stop(SIGKILL, std::chrono::seconds(20));
  EXPECT_EQ(code.value_or(0), 128 + SIGKILL);
  // A new daemon resumes sources left stopped and collects what the dead one left.
  ASSERT_TRUE(daemon_.restart());
  int ready = expect_ready_or_absent(tags);
  std::printf(
      "kill -9 during %d accepted branches: %d tags ready and forkable, %zu absent or failed\n",
      accepted, ready, tags.size() - static_cast<size_t>(ready));
  EXPECT_EQ(leftovers(), std::vector<std::string>{});
  // Only the 4 sources run, and each answers.
  EXPECT_EQ(count_qemus(), 4);
  for (const auto& id : src) {
    auto r = post_json(c, "/v1/sandboxes/" + id + "/exec", {{"args", {"true"}}});
    EXPECT_TRUE(r && r->status == 200) << id << ": " << (r ? r->body : "no response");
  }
}

TEST_F(Concurrency, TwoCreatesOfOneTagOneWinsOneIs409) {
  ASSERT_TRUE(daemon_.start(config().home, "token"));
  std::vector<int> status(2, 0);
  {
    std::vector<std::jthread> threads;
    for (int i = 0; i < 2; ++i) {
      threads.emplace_back([&, i] {
        auto cl = daemon_.client();
        auto r = post_json(cl, "/v1/snapshots",
                           {{"tag", "twice"}, {"image", "minimal"}, {"memory_mib", 128}});
        status[i] = r ? r->status : -1;
      });
    }
  }
  std::sort(status.begin(), status.end());
  EXPECT_EQ(status, (std::vector<int>{201, 409}));
  EXPECT_EQ(expect_ready_or_absent({"twice"}), 1);
  EXPECT_EQ(leftovers(), std::vector<std::string>{});
}

TEST_F(Concurrency, KillNineDuringASnapshotCreateLeavesNothing) {
  ASSERT_TRUE(daemon_.start(config().home, "token"));
  std::jthread creator([&] {
    auto cl = daemon_.client();
    (void)post_json(cl, "/v1/snapshots", {{"tag", "doomed"}, {"image", "minimal"}});
  });
  // Mid-boot of the template.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  (void)daemon_.stop(SIGKILL, std::chrono::seconds(20));
  creator = {};
  ASSERT_TRUE(daemon_.restart());
  EXPECT_EQ(expect_ready_or_absent({"doomed"}), 0);
  EXPECT_EQ(leftovers(), std::vector<std::string>{});
  EXPECT_EQ(count_qemus(), 0) << "the template outlived its daemon";
}

TEST_F(Concurrency, FourSnapshotProcessesAtOnceThenFourKilled) {
  auto run_four = [&](const std::string& prefix, bool kill_them) {
    std::vector<Child> procs;
    for (int i = 0; i < 4; ++i) {
      SpawnOptions o;
      int null_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
      o.stdout_fd = null_fd;
      o.stderr_fd = null_fd;
      auto p = Child::spawn({forkd_cli(), "snapshot", "--tag", prefix + std::to_string(i),
                             "--image", "minimal", "--memory", "128"},
                            o);
      ::close(null_fd);
      EXPECT_TRUE(p);
      if (p) procs.push_back(std::move(*p));
    }
    std::vector<int> codes;
    if (kill_them) std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    for (auto& p : procs) {
      if (kill_them) p.kill(SIGKILL);
      auto code = p.wait(std::chrono::seconds(300));
      codes.push_back(code ? *code : -1);
    }
    return codes;
  };
  auto ok = run_four("par", false);
  EXPECT_EQ(ok, (std::vector<int>{0, 0, 0, 0}));
  EXPECT_EQ(expect_ready_or_absent({"par0", "par1", "par2", "par3"}), 4);

  auto killed = run_four("dead", true);
  for (int c : killed) EXPECT_TRUE(c == 128 + SIGKILL || c == 0) << c;
  // The templates die with their `forkd snapshot` (parent-death signal); gc removes the rest.
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (count_qemus() > 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(count_qemus(), 0);
  auto r = run_cli({"gc", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  int ready = expect_ready_or_absent({"dead0", "dead1", "dead2", "dead3"});
  std::printf(
      "4 snapshot processes at once: 4 ready; 4 killed after 2.5 s: %d ready, %d absent or "
      "failed\n",
      ready, 4 - ready);
  EXPECT_EQ(leftovers(), std::vector<std::string>{});
}

// Ctrl-C in the middle of a fork: the children already recorded keep running, and every QEMU
// the CLI had started without a record yet dies with it (nothing for gc to find).
TEST_F(Concurrency, CtrlCDuringAForkLeavesOnlyRecordedChildren) {
  SpawnOptions o;
  int null_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  o.stdout_fd = null_fd;
  o.stderr_fd = null_fd;
  auto p = Child::spawn({forkd_cli(), "fork", "--tag", "base", "-n", "8", "--no-pool"}, o);
  ::close(null_fd);
  ASSERT_TRUE(p);
  // Interrupt as soon as the first child is recorded: the others are still starting.
  const std::string dir = config().home + "/sandboxes";
  auto deadline = Clock::now() + std::chrono::seconds(30);
  while (Clock::now() < deadline) {
    auto names = list_dir_names(dir);
    if (std::any_of(names.begin(), names.end(), [&](const auto& n) {
          return n[0] != '.' && path_exists(dir + "/" + n + "/sandbox.json");
        })) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  p->kill(SIGINT);
  auto code = p->wait(std::chrono::seconds(60));
  ASSERT_TRUE(code);
  auto recorded = engine::list_sandboxes(config());
  int alive = 0;
  for (const auto& s : recorded) alive += s.alive() ? 1 : 0;
  std::printf("Ctrl-C during a fork of 8 (exit %d): %d recorded children running, %d QEMUs\n",
              *code, alive, count_qemus());
  std::string seen;
  for (int pid : qemu_pids_for_home(config().home)) {
    auto cmd = read_file("/proc/" + std::to_string(pid) + "/cmdline", 1 << 20).value_or("");
    std::replace(cmd.begin(), cmd.end(), '\0', ' ');
    auto at = cmd.find("/sandboxes/");
    std::string id = at == std::string::npos ? cmd : cmd.substr(at + 11);
    id = id.substr(0, id.find('/'));
    seen += "\n  qemu " + std::to_string(pid) + " in " + id;
    for (const auto& s : recorded) {
      if (id == s.id) seen += " recorded pid " + std::to_string(s.pid) + " " + s.state;
    }
  }
  EXPECT_EQ(count_qemus(), alive) << "a QEMU without a record outlived its launcher" << seen;
  auto gc = engine::gc(config());
  EXPECT_EQ(gc.orphan_qemus, 0);
  EXPECT_EQ(leftovers(), std::vector<std::string>{});
}

// Long work never takes every worker: with one sandbox at its exec cap, and then every long slot
// taken, /healthz and GET /v1/sandboxes still answer at once (the figures are printed; the
// assertion is only that nothing waits behind the 20 s execs).
TEST_F(Concurrency, ShortRequestsNeverWaitBehindLongOnes) {
  ASSERT_TRUE(daemon_.start(config().home, "token",
                            {"--max-execs-per-sandbox", "4", "--max-long-requests", "8"}));
  auto c = daemon_.client();
  auto ids = fork_via(c, 3);
  ASSERT_EQ(ids.size(), 3u);
  std::atomic<int> ok{0}, throttled{0}, busy{0};
  auto sleeper = [&](const std::string& id) {
    return std::jthread([&, id] {
      auto cl = daemon_.client();
      auto r = post_json(cl, "/v1/sandboxes/" + id + "/exec", {{"args", {"sleep", "20"}}});
      int st = r ? r->status : -1;
      if (st == 200) ++ok;
      if (st == 429) ++throttled;
      if (st == 503) ++busy;
    });
  };
  auto measure = [&](const char* what) {
    std::vector<double> ms;
    for (int i = 0; i < 100; ++i) {
      for (const char* path : {"/healthz", "/v1/sandboxes"}) {
        auto t0 = Clock::now();
        auto r = c.Get(path);
        ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        EXPECT_TRUE(r && r->status == 200) << path;
      }
    }
    std::sort(ms.begin(), ms.end());
    double p50 = ms[ms.size() / 2], p99 = ms[ms.size() * 99 / 100];
    std::printf(
        "%s: healthz + GET /v1/sandboxes, 200 calls: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", what,
        p50, p99, ms.back());
    EXPECT_LT(ms.back(), 2000) << what << ": a short request waited behind the long ones";
  };
  std::vector<std::jthread> first;
  for (int i = 0; i < 6; ++i) first.push_back(sleeper(ids[0]));  // 4 run, 2 refused (429)
  std::this_thread::sleep_for(std::chrono::seconds(2));
  measure("one sandbox at its exec cap (4)");
  std::vector<std::jthread> second;
  for (int i = 0; i < 6; ++i) second.push_back(sleeper(ids[1]));  // 4 more: the long cap (8)
  std::this_thread::sleep_for(std::chrono::seconds(2));
  measure("every long slot taken (8)");
  // One long request more is refused at once, not queued.
  auto t0 = Clock::now();
  auto r = post_json(c, "/v1/sandboxes/" + ids[0] + "/ping", Json::object());
  EXPECT_TRUE(r && (r->status == 503 || r->status == 429)) << (r ? r->body : "no response");
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(2));
  // Removing a sandbox still works: it is how a user frees the slots.
  auto del = c.Delete("/v1/sandboxes/" + ids[2]);
  EXPECT_TRUE(del && del->status == 204) << (del ? del->body : "no response");
  first.clear();
  second.clear();
  EXPECT_EQ(ok.load(), 8);
  EXPECT_EQ(throttled.load() + busy.load(), 4);
}

}  // namespace
}  // namespace forkd::test

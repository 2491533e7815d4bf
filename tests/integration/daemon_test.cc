// `forkd serve` as a client sees it: a real daemon process on a free loopback port, with a strong
// token, driven over HTTP (httplib::Client) against real VMs. Covers the contract's routes and
// error codes (shared/reference/forkd-rest-v1.md) that this daemon implements so far.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "base/files.h"
#include "base/subprocess.h"
#include "daemon/server.h"
#include "integration/daemon_fixture.h"
#include "integration/vm_fixture.h"

namespace forkd::test {
namespace {

using Json = nlohmann::json;

class Daemon : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!qemu_missing_reason().empty()) return;
    home_ = config().home;
    audit_ = home_ + "/audit.log";
    ASSERT_TRUE(
        daemon_.start(home_, "token", {"--audit-log", audit_, "--max-body-bytes", "65536"}));
  }
  static void TearDownTestSuite() {
    if (daemon_.running()) {
      auto code = daemon_.stop();
      EXPECT_TRUE(code && *code == 0) << "daemon did not stop cleanly on SIGTERM";
    }
    (void)run_cli({"rm", "--all"});
  }
  void SetUp() override {
    FORKD_REQUIRE("qemu", qemu_missing_reason());
    ASSERT_TRUE(daemon_.running());
  }

  // A client with the token, and long timeouts (snapshot creation boots a VM).
  httplib::Client client(bool auth = true) { return daemon_.client(auth); }
  static httplib::Result post(httplib::Client& c, const std::string& path, const Json& body) {
    return post_json(c, path, body);
  }

  // Creates the suite's tag once.
  void ensure_tag() {
    if (tag_ready_) return;
    auto c = client();
    auto r = post(c, "/v1/snapshots", {{"tag", "dt"}, {"image", "minimal"}, {"memory_mib", 128}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 201) << r->body;
    tag_ready_ = true;
  }

  static inline TestDaemon daemon_;
  static inline std::string home_, audit_;
  static inline bool tag_ready_ = false;
};

TEST_F(Daemon, HealthzNeedsNoToken) {
  auto c = client(false);
  auto r = c.Get("/healthz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(body_json(r)["ok"], true);
}

TEST_F(Daemon, AuthRequired) {
  auto none = client(false);
  expect_error(none.Get("/version"), 401);
  expect_error(none.Get("/v1/sandboxes"), 401);
  httplib::Client wrong("127.0.0.1", daemon_.port());
  wrong.set_bearer_token_auth(daemon_.token().substr(0, daemon_.token().size() - 1) + "x");
  expect_error(wrong.Get("/version"), 401);
  // The right token in the wrong header is still unauthorized.
  expect_error(none.Get("/version", {{"X-Auth-Token", daemon_.token()}}), 401);
  expect_error(none.Get("/version", {{"Authorization", daemon_.token()}}), 401);
}

TEST_F(Daemon, Version) {
  auto c = client();
  auto r = c.Get("/version");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  auto j = body_json(r);
  EXPECT_EQ(j["api"], "v1");
  EXPECT_TRUE(j["version"].is_string());
}

TEST_F(Daemon, SnapshotCreateListInfo) {
  ensure_tag();
  auto c = client();
  auto list = body_json(c.Get("/v1/snapshots"));
  ASSERT_TRUE(list.is_array());
  bool found = false;
  for (const auto& s : list) {
    if (s["tag"] == "dt") {
      found = true;
      EXPECT_EQ(s["status"], "ready");
      EXPECT_EQ(s["bootable"], true);
      EXPECT_TRUE(s["created_at_unix"].is_number_integer());
    }
  }
  EXPECT_TRUE(found) << list.dump();
  auto info = body_json(c.Get("/v1/snapshots/dt/info"));
  // 128 MiB, and under TCG with QEMU before 9.0 the RAM pad (vmm::guest_ram_bytes).
  EXPECT_GE(info["memory_logical_bytes"].get<uint64_t>(), 128ull << 20);
  EXPECT_LT(info["memory_logical_bytes"].get<uint64_t>(), 129ull << 20);
  EXPECT_GT(info["memory_physical_bytes"].get<uint64_t>(), 0u);
  EXPECT_GT(info["vmstate_bytes"].get<uint64_t>(), 0u);
  EXPECT_EQ(info["chain_depth"], 0);
  EXPECT_EQ(info["ancestors"], Json::array());
  EXPECT_EQ(info["dependents"], Json::array());
  // An existing tag is 400 (contract), forkd's kernel/rootfs are refused naming `image`.
  expect_error(post(c, "/v1/snapshots", {{"tag", "dt"}}), 400, "force");
  expect_error(post(c, "/v1/snapshots", {{"tag", "k"}, {"kernel", "/vmlinux"}, {"rootfs", "/r"}}),
               400, "image");
}

TEST_F(Daemon, SandboxLifecycle) {
  ensure_tag();
  auto c = client();
  auto r = post(c, "/v1/sandboxes", {{"snapshot_tag", "dt"}, {"n", 2}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 201) << r->body;
  auto made = body_json(r);
  ASSERT_EQ(made.size(), 2u) << r->body;
  std::string id = made[0]["id"];
  EXPECT_EQ(made[0]["snapshot_tag"], "dt");
  EXPECT_GT(made[0]["pid"].get<int>(), 0);

  auto list = body_json(c.Get("/v1/sandboxes"));
  EXPECT_GE(list.size(), 2u);
  auto one = body_json(c.Get("/v1/sandboxes/" + id));
  EXPECT_EQ(one["id"], id);

  auto ping = c.Post("/v1/sandboxes/" + id + "/ping", "", "application/json");
  ASSERT_TRUE(ping);
  EXPECT_EQ(ping->status, 200) << ping->body;
  EXPECT_EQ(body_json(ping)["pong"], true);

  auto ex = post(c, "/v1/sandboxes/" + id + "/exec",
                 {{"args", {"sh", "-c", "echo out; echo err >&2; exit 3"}}, {"timeout_secs", 30}});
  ASSERT_TRUE(ex);
  ASSERT_EQ(ex->status, 200) << ex->body;
  auto ej = body_json(ex);
  EXPECT_EQ(ej["stdout"], "out\n");
  EXPECT_EQ(ej["stderr"], "err\n");
  EXPECT_EQ(ej["exit_code"], 3);
  auto sh = body_json(post(c, "/v1/sandboxes/" + id + "/exec", {{"shell", "echo $((6*7))"}}));
  EXPECT_EQ(sh["stdout"], "42\n");
  // Twice on the same sandbox: the daemon keeps one agent connection and reuses it.
  auto again = body_json(post(c, "/v1/sandboxes/" + made[1]["id"].get<std::string>() + "/exec",
                              {{"args", {"hostname"}}}));
  EXPECT_EQ(again["exit_code"], 0);

  // The minimal image has no Python: a conflict with what the sandbox can do, not a gateway error.
  expect_error(post(c, "/v1/sandboxes/" + id + "/eval", {{"code", "1+1"}}), 409, "python3");

  for (const auto& m : made) {
    auto d = c.Delete("/v1/sandboxes/" + m["id"].get<std::string>());
    ASSERT_TRUE(d);
    EXPECT_EQ(d->status, 204);
  }
  expect_error(c.Get("/v1/sandboxes/" + id), 404);
  expect_error(c.Delete("/v1/sandboxes/" + id), 404);
}

TEST_F(Daemon, BadInput) {
  auto c = client();
  expect_error(c.Post("/v1/sandboxes", "{not json", "application/json"), 400, "JSON");
  expect_error(c.Post("/v1/sandboxes", "[1,2]", "application/json"), 400);
  expect_error(post(c, "/v1/sandboxes", {{"snapshot_tag", 5}}), 400, "snapshot_tag");
  expect_error(post(c, "/v1/sandboxes", {{"snapshot_tag", "dt"}, {"n", "2"}}), 400, "'n'");
  expect_error(post(c, "/v1/sandboxes", {{"snapshot_tag", "dt"}, {"n", 0}}), 400);
  expect_error(post(c, "/v1/sandboxes", {{"snapshot_tag", "dt"}, {"n", 1001}}), 400);
  expect_error(post(c, "/v1/sandboxes", {{"snapshot_tag", "../x"}}), 400);
  expect_error(post(c, "/v1/sandboxes", {{"snapshot_tag", "no-such-tag"}, {"n", 1}}), 404);
  expect_error(post(c, "/v1/snapshots", {{"tag", std::string(65, 'a')}}), 400);
  expect_error(post(c, "/v1/snapshots", {{"tag", ""}}), 400);
  expect_error(post(c, "/v1/snapshots", {{"tag", "a/b"}}), 400);
  expect_error(post(c, "/v1/snapshots", {{"tag", "ok"}, {"memory_mib", "big"}}), 400);
  expect_error(c.Delete("/v1/snapshots/..%2Fx"), 400);
  expect_error(c.Delete("/v1/snapshots/a%2Fb"), 400);
  expect_error(c.Delete("/v1/snapshots/" + std::string(65, 'a')), 400);
  expect_error(c.Delete("/v1/snapshots/"), 400);
  expect_error(c.Delete("/v1/snapshots/no-such-tag"), 404);
  expect_error(c.Delete("/v1/snapshots/dt?cascade=true&force=true"), 400);
  expect_error(c.Get("/v1/snapshots/no-such-tag/info"), 404);
  expect_error(c.Get("/v1/sandboxes/sb-nope"), 404);
  expect_error(c.Get("/v1/sandboxes/..%2Fetc"), 400);
  expect_error(c.Get("/v1/sandboxes/" + std::string(65, 'b')), 400);
  expect_error(post(c, "/v1/sandboxes/sb-nope/exec", {{"args", {"true"}}}), 404);
  expect_error(post(c, "/v1/sandboxes/sb-nope/exec", {{"args", "true"}}), 400);
  expect_error(post(c, "/v1/sandboxes/sb-nope/eval", {{"code", 1}}), 400);
  expect_error(c.Get("/no/such/route"), 404);
  // Over the daemon's 64 KiB cap.
  expect_error(c.Post("/v1/sandboxes", std::string(100000, ' '), "application/json"), 413);
  expect_error(post(c, "/v1/sandboxes/sb-nope/branch", Json::object()), 404);
  expect_error(post(c, "/v1/sandboxes/sb-nope/branch", {{"mode", "live"}, {"diff", true}}), 400);
  expect_error(post(c, "/v1/sandboxes/sb-nope/branch", {{"mode", "fast"}}), 400);
  expect_error(post(c, "/v1/sandboxes/sb-nope/branch", {{"tag", "../x"}}), 400);
  expect_error(post(c, "/v1/sandboxes/sb-nope/branch", {{"wait", "no"}}), 400);
  expect_error(post(c, "/v1/sandboxes/..%2Fx/branch", Json::object()), 400);
  expect_error(post(c, "/v1/snapshots/no-such-tag/compact", {{"to", "x"}}), 404);
  expect_error(post(c, "/v1/snapshots/dt/compact", {{"to", "dt"}}), 400);
  expect_error(post(c, "/v1/snapshots/dt/compact", {{"to", "a/b"}}), 400);
  expect_error(post(c, "/v1/snapshots/dt/compact", Json::object()), 400);
  // Still up after all of that.
  EXPECT_EQ(c.Get("/healthz")->status, 200);
}

TEST_F(Daemon, MetricsAndAuditLog) {
  auto c = client();
  ASSERT_TRUE(c.Get("/version"));
  auto m = c.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 200);
  for (const char* name :
       {"forkd_snapshots_total", "forkd_sandboxes_active", "forkd_branches_in_flight",
        "forkd_branch_concurrency_cap", "forkd_branch_seconds_bucket",
        "forkd_branch_pause_seconds_count",
        "forkd_build_info{version=", "forkd_requests_total{route=\"/version\""}) {
    EXPECT_NE(m->body.find(name), std::string::npos) << name;
  }
  auto text = read_file(audit_);
  ASSERT_TRUE(text) << text.error().describe();
  std::istringstream in(*text);
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    ++lines;
    auto j = Json::parse(line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << line;
    for (const char* k : {"ts", "method", "path", "status", "latency_us", "user_agent", "remote"}) {
      EXPECT_TRUE(j.contains(k)) << k << " missing in " << line;
    }
    EXPECT_EQ(line.find(daemon_.token()), std::string::npos) << "token leaked into the audit log";
  }
  EXPECT_GE(lines, 2);
}

TEST_F(Daemon, RefusesWeakTokenAndOpenAddress) {
  for (const std::string& weak :
       std::vector<std::string>{"changeme", "token", "secret", std::string(40, 'a'),
                                "changeme-changeme-changeme-changeme"}) {
    ASSERT_TRUE(write_file_atomic(home_ + "/weak", weak, 0600));
    auto r = run_cli({"serve", "--listen", "127.0.0.1:0", "--token-file", home_ + "/weak"}, {}, 30);
    EXPECT_NE(r.exit_code, 0) << weak;
    EXPECT_NE(r.err.find("token"), std::string::npos) << r.err;
  }
  auto r = run_cli({"serve", "--listen", "0.0.0.0:0"}, {}, 30);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("non-loopback"), std::string::npos) << r.err;
}

TEST_F(Daemon, UnixSocketIsPrivate) {
  std::string sock = home_ + "/api.sock";
  auto c =
      Child::spawn({forkd_cli(), "serve", "--socket", sock, "--token-file", daemon_.token_file()});
  ASSERT_TRUE(c) << c.error().describe();
  httplib::Client cli(sock);
  cli.set_address_family(AF_UNIX);
  cli.set_bearer_token_auth(daemon_.token());
  for (int i = 0; i < 100 && !path_exists(sock); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto r = cli.Get("/version");
  ASSERT_TRUE(r) << "no answer on " << sock;
  EXPECT_EQ(r->status, 200);
  struct stat st;
  ASSERT_EQ(::stat(sock.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  c->kill(SIGTERM);
  auto code = c->wait(std::chrono::seconds(20));
  EXPECT_TRUE(code && *code == 0);
  EXPECT_FALSE(path_exists(sock)) << "socket left behind";
}

// Sandboxes outlive the daemon: after kill -9 and a restart both are listed and drivable; a
// sandbox whose QEMU died while no daemon ran is reaped at the next start; nothing leaks.
TEST_F(Daemon, ReadoptsAfterKill9) {
  ensure_tag();
  int port = free_port();
  ASSERT_GT(port, 0);
  auto d = start_daemon(port, daemon_.token_file());
  ASSERT_TRUE(d);
  auto c = client();
  httplib::Client mine("127.0.0.1", port);
  mine.set_read_timeout(300, 0);
  mine.set_bearer_token_auth(daemon_.token());
  auto r = post(mine, "/v1/sandboxes", {{"snapshot_tag", "dt"}, {"n", 2}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 201) << r->body;
  auto made = body_json(r);
  ASSERT_EQ(made.size(), 2u);
  std::string a = made[0]["id"], b = made[1]["id"];
  auto exec_ok = [&](const std::string& id) {
    auto e = post(mine, "/v1/sandboxes/" + id + "/exec", {{"args", {"echo", id}}});
    return e && e->status == 200 && body_json(e)["stdout"] == id + "\n";
  };
  ASSERT_TRUE(exec_ok(a));  // the daemon now holds both agent connections
  ASSERT_TRUE(exec_ok(b));

  d->kill(SIGKILL);
  (void)d->wait();
  d = start_daemon(port, daemon_.token_file());
  ASSERT_TRUE(d);
  auto ids = [&] {
    std::set<std::string> out;
    for (const auto& s : body_json(mine.Get("/v1/sandboxes"))) out.insert(s["id"]);
    return out;
  };
  EXPECT_TRUE(ids().count(a) && ids().count(b));
  EXPECT_TRUE(exec_ok(a)) << "not drivable after restart: " << a;
  EXPECT_TRUE(exec_ok(b)) << "not drivable after restart: " << b;

  // QEMU of a dies while no daemon runs.
  int pid_a = body_json(mine.Get("/v1/sandboxes/" + a))["pid"];
  ASSERT_GT(pid_a, 0);
  d->kill(SIGKILL);
  (void)d->wait();
  ASSERT_EQ(::kill(pid_a, SIGKILL), 0);
  for (int i = 0; i < 100 && ::kill(pid_a, 0) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  d = start_daemon(port, daemon_.token_file());
  ASSERT_TRUE(d);
  EXPECT_FALSE(ids().count(a)) << "dead sandbox not reaped";
  EXPECT_TRUE(ids().count(b));
  EXPECT_TRUE(exec_ok(b));
  auto del = mine.Delete("/v1/sandboxes/" + b);
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 204);
  d->kill(SIGTERM);
  (void)d->wait(std::chrono::seconds(20));
  EXPECT_TRUE(qemu_pids_matching(a).empty()) << "QEMU of " << a << " leaked";
  EXPECT_TRUE(qemu_pids_matching(b).empty()) << "QEMU of " << b << " leaked";
}

// 500 execs at once over 5 sandboxes from 50 threads: each is served (200) or refused at once
// by a cap (429 per sandbox, 503 in flight); the daemon stays up; nothing leaks.
TEST_F(Daemon, ConcurrentExecsAreServedOrRefused) {
  ensure_tag();
  auto c = client();
  auto r = post(c, "/v1/sandboxes", {{"snapshot_tag", "dt"}, {"n", 5}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 201) << r->body;
  std::vector<std::string> ids;
  for (const auto& s : body_json(r)) ids.push_back(s["id"]);
  ASSERT_EQ(ids.size(), 5u);

  constexpr int kThreads = 50, kPerThread = 10;
  std::atomic<int> ok{0}, throttled{0}, busy{0}, other{0};
  std::mutex mu;
  std::string first_other;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      httplib::Client cl("127.0.0.1", daemon_.port());
      cl.set_read_timeout(60, 0);
      cl.set_bearer_token_auth(daemon_.token());
      for (int i = 0; i < kPerThread; ++i) {
        const std::string& id = ids[(t + i) % ids.size()];
        auto e =
            cl.Post("/v1/sandboxes/" + id + "/exec", R"({"args":["true"]})", "application/json");
        int st = e ? e->status : -1;
        if (st == 200 && body_json(e)["exit_code"] == 0) {
          ++ok;
        } else if (st == 429 || st == 503) {
          ++(st == 429 ? throttled : busy);
          EXPECT_TRUE(body_json(e)["error"].is_string());
        } else {
          ++other;
          std::lock_guard g(mu);
          if (first_other.empty()) {
            first_other = e ? std::to_string(st) + " " + e->body : httplib::to_string(e.error());
            first_other += " (request " + std::to_string(i) + " of thread " + std::to_string(t) +
                           ", errno " + std::to_string(errno) + ")";
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(other.load(), 0) << first_other;
  EXPECT_GT(ok.load(), 0);
  EXPECT_EQ(ok + throttled + busy + other, kThreads * kPerThread);
  std::printf("concurrent execs: %d ok, %d 429, %d 503\n", ok.load(), throttled.load(),
              busy.load());
  auto h = c.Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  auto m = c.Get("/metrics");
  ASSERT_TRUE(m);
  // The defaults a daemon started without limit flags runs with.
  const daemon::ServeOptions defaults;
  EXPECT_NE(m->body.find("forkd_requests_in_flight_cap " + std::to_string(defaults.max_inflight)),
            std::string::npos);
  EXPECT_NE(
      m->body.find("forkd_exec_per_sandbox_cap " + std::to_string(defaults.max_execs_per_sandbox)),
      std::string::npos);
  EXPECT_NE(m->body.find("forkd_execs_in_flight 0"), std::string::npos);
  for (const auto& id : ids) {
    auto d = c.Delete("/v1/sandboxes/" + id);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->status, 204);
  }
  for (const auto& id : ids) EXPECT_TRUE(qemu_pids_matching(id).empty()) << id << " leaked";
}

// With small caps the refusals really happen: 429 past 2 execs on one sandbox, 503 past 4
// requests in flight, and every refusal is immediate and carries an error body.
TEST_F(Daemon, SmallCapsRefuseTheExcess) {
  ensure_tag();
  int port = free_port();
  ASSERT_GT(port, 0);
  auto d = start_daemon(port, daemon_.token_file(),
                        {"--max-inflight", "4", "--max-execs-per-sandbox", "2"});
  ASSERT_TRUE(d);
  httplib::Client c("127.0.0.1", port);
  c.set_bearer_token_auth(daemon_.token());
  c.set_read_timeout(120, 0);
  auto r = c.Post("/v1/sandboxes", R"({"snapshot_tag":"dt","n":1})", "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 201) << r->body;
  std::string id = body_json(r)[0]["id"];
  std::atomic<int> ok{0}, throttled{0}, busy{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 12; ++t) {
    threads.emplace_back([&] {
      httplib::Client cl("127.0.0.1", port);
      cl.set_bearer_token_auth(daemon_.token());
      cl.set_read_timeout(60, 0);
      auto e =
          cl.Post("/v1/sandboxes/" + id + "/exec", R"({"args":["sleep","1"]})", "application/json");
      int st = e ? e->status : -1;
      if (st == 200) {
        ++ok;
      } else if (st == 429) {
        ++throttled;
      } else if (st == 503) {
        ++busy;
      } else {
        ++other;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(other.load(), 0);
  EXPECT_GE(ok.load(), 1);
  EXPECT_GT(throttled + busy, 0) << "12 one-second execs against caps of 2 and 4 were all served";
  auto del = c.Delete("/v1/sandboxes/" + id);
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 204);
  d->kill(SIGTERM);
  EXPECT_TRUE(d->wait(std::chrono::seconds(20)));
}

// An exec timeout beyond the daemon's bound is refused, not honoured.
TEST_F(Daemon, ExecTimeoutBounded) {
  auto c = client();
  expect_error(post(c, "/v1/sandboxes/sb-x/exec", {{"args", {"true"}}, {"timeout_secs", 3601}}),
               400, "timeout_secs");
}

}  // namespace
}  // namespace forkd::test

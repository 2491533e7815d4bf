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

#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "base/files.h"
#include "base/subprocess.h"
#include "engine/config.h"
#include "integration/vm_fixture.h"

namespace forkd::test {
namespace {

using Json = nlohmann::json;

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) ::close(fd);
    return 0;
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

Json body_json(const httplib::Result& r) {
  if (!r) return Json();
  return Json::parse(r->body, nullptr, false);
}

// Every 4xx/5xx body is {"error": "<message>"}.
void expect_error(const httplib::Result& r, int status, const std::string& needle = "") {
  ASSERT_TRUE(r) << "no response: " << httplib::to_string(r.error());
  EXPECT_EQ(r->status, status) << r->body;
  Json j = body_json(r);
  ASSERT_TRUE(j.is_object()) << r->body;
  ASSERT_TRUE(j.contains("error") && j["error"].is_string()) << r->body;
  if (!needle.empty()) {
    EXPECT_NE(r->body.find(needle), std::string::npos) << r->body;
  }
}

class Daemon : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!qemu_missing_reason().empty()) return;
    home_ = config().home;
    token_ = engine::random_hex(32);
    ASSERT_TRUE(write_file_atomic(home_ + "/token", token_ + "\n", 0600));
    audit_ = home_ + "/audit.log";
    port_ = free_port();
    ASSERT_GT(port_, 0);
    auto c = Child::spawn({forkd_cli(), "serve", "--listen", "127.0.0.1:" + std::to_string(port_),
                           "--token-file", home_ + "/token", "--audit-log", audit_,
                           "--max-body-bytes", "65536"});
    ASSERT_TRUE(c) << c.error().describe();
    daemon_ = new Child(std::move(*c));
    httplib::Client cli("127.0.0.1", port_);
    for (int i = 0; i < 100; ++i) {
      if (auto r = cli.Get("/healthz"); r && r->status == 200) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FAIL() << "daemon did not answer /healthz";
  }
  static void TearDownTestSuite() {
    if (daemon_) {
      daemon_->kill(SIGTERM);
      auto code = daemon_->wait(std::chrono::seconds(20));
      EXPECT_TRUE(code && *code == 0) << "daemon did not stop cleanly on SIGTERM";
      delete daemon_;
      daemon_ = nullptr;
    }
    (void)run_cli({"rm", "--all"});
  }
  void SetUp() override {
    if (auto why = qemu_missing_reason(); !why.empty()) GTEST_SKIP() << why;
    ASSERT_NE(daemon_, nullptr);
  }

  // A client with the token, and long timeouts (snapshot creation boots a VM).
  httplib::Client client(bool auth = true) {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(300, 0);
    if (auth) c.set_bearer_token_auth(token_);
    return c;
  }
  static httplib::Result post(httplib::Client& c, const std::string& path, const Json& body) {
    return c.Post(path, body.dump(), "application/json");
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

  static inline Child* daemon_ = nullptr;
  static inline std::string home_, token_, audit_;
  static inline int port_ = 0;
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
  httplib::Client wrong("127.0.0.1", port_);
  wrong.set_bearer_token_auth(token_.substr(0, token_.size() - 1) + "x");
  expect_error(wrong.Get("/version"), 401);
  // The right token in the wrong header is still unauthorized.
  expect_error(none.Get("/version", {{"X-Auth-Token", token_}}), 401);
  expect_error(none.Get("/version", {{"Authorization", token_}}), 401);
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
  EXPECT_EQ(info["memory_logical_bytes"], 128ull << 20);
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
  auto r = post(c, "/v1/sandboxes", {{"snapshot_tag", "dt"}, {"n", 2}, {"unknown_field", 1}});
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
  expect_error(post(c, "/v1/sandboxes/sb-1/branch", Json::object()), 501, "BRANCH");
  expect_error(post(c, "/v1/snapshots/dt/compact", {{"to", "x"}}), 501);
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
        "forkd_branch_concurrency_cap",
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
    EXPECT_EQ(line.find(token_), std::string::npos) << "token leaked into the audit log";
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
  auto c = Child::spawn({forkd_cli(), "serve", "--socket", sock, "--token-file", home_ + "/token"});
  ASSERT_TRUE(c) << c.error().describe();
  httplib::Client cli(sock);
  cli.set_address_family(AF_UNIX);
  cli.set_bearer_token_auth(token_);
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

}  // namespace
}  // namespace forkd::test

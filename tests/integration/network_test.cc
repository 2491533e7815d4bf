// Guest networking on real VMs (minimal image, jailed QEMUs): a tag made with network outbound
// gives every child a NIC on its own user-mode network. Children fetch a page from a test HTTP
// server on the host's 127.0.0.1 through the gateway 10.0.2.2 (nothing else is ever contacted),
// two at once, with distinct hostnames; a `none` child of the same tag has no route and no link;
// an exposed guest port answers on the host's loopback; a branch of a networked sandbox forks
// networked children; the CLI and the REST API carry `network` and `ports`.
#include <gtest/gtest.h>
#include <httplib.h>

#include <thread>

#include "engine/fork.h"
#include "engine/registry.h"
#include "engine/sandbox_jail.h"
#include "engine/snapshot.h"
#include "integration/daemon_fixture.h"
#include "integration/net_fixture.h"
#include "integration/vm_fixture.h"

namespace forkd::test {
namespace {

class Network : public ForkingTest {
 protected:
  static void SetUpTestSuite() {
    if (!qemu_missing_reason().empty()) return;
    server_ = new HostServer;
    ASSERT_TRUE(server_->start());
    // The template has the network during its warm-up too.
    engine::SnapshotOptions so;
    so.tag = "net";
    so.image = "minimal";
    so.network = "outbound";
    so.warmup = {fetch_cmd(server_->port(), "template") + " | grep -q 'hello template'"};
    auto r = engine::create_snapshot(config(), so);
    ASSERT_TRUE(r) << r.error().describe();
    EXPECT_EQ(r->meta.network, "outbound");
    create_base_tag({});  // "base": made with network none
  }
  static void TearDownTestSuite() {
    if (server_) server_->stop();
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ForkingTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ASSERT_NE(server_, nullptr);
  }

  static std::vector<std::string> fork(const std::string& tag, int n, const std::string& network,
                                       std::vector<int> expose = {}, bool pool = false) {
    engine::ForkOptions fo;
    fo.tag = tag;
    fo.n = n;
    fo.use_pool = pool;
    fo.network = network;
    fo.expose = std::move(expose);
    return fork_ok(fo);
  }
  static engine::ExecResult sh(const std::string& id, const std::string& cmd) {
    return sh_in(id, cmd);
  }
  // What a failed fetch saw, and the guest's view of its network, for the failure message.
  static std::string explain(const std::string& id, const engine::ExecResult& r) {
    auto sb = engine::Sandbox::attach(config(), id);
    std::string guest = "<no attach>";
    if (sb) {
      engine::ExecOptions o;
      o.shell = "netstat -tn; ip route; ip neigh; ip link show eth0";
      o.timeout = std::chrono::seconds(30);
      auto g = (*sb)->exec(o);
      guest = g ? g->stdout_data + g->stderr_data : g.error().describe();
    }
    std::string seen;
    for (const auto& f : server_->seen()) seen += " " + f;
    return "exit " + std::to_string(r.exit_code) + ", stdout [" + r.stdout_data + "], stderr [" +
           r.stderr_data + "]; the server saw:" + seen + "; guest:\n" + guest;
  }
  static nlohmann::json record_info(const std::string& id) {
    for (const auto& s : engine::list_sandboxes(config())) {
      if (s.id == id) return engine::isolation_info(s.record);
    }
    return nullptr;
  }
  static inline HostServer* server_ = nullptr;
};

TEST_F(Network, TwoOutboundChildrenFetchFromTheHostAtOnceWithDistinctHostnames) {
  auto ids = fork("net", 2, "");  // the tag's network: outbound
  ASSERT_EQ(ids.size(), 2u);
  std::vector<engine::ExecResult> out(2);
  {
    std::vector<std::jthread> t;
    for (size_t i = 0; i < 2; ++i) {
      t.emplace_back([&, i] { out[i] = sh(ids[i], fetch_cmd(server_->port(), "$(hostname)")); });
    }
  }
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(out[i].exit_code, 0) << out[i].stderr_data;
    EXPECT_NE(out[i].stdout_data.find("hello " + ids[i] + "\n"), std::string::npos)
        << explain(ids[i], out[i]);
    EXPECT_EQ(record_info(ids[i])["network"], "outbound");
  }
  auto seen = server_->seen();
  EXPECT_TRUE(seen.count(ids[0]) && seen.count(ids[1])) << "the host server saw both hostnames";
  // Both kept the tag's address: each has its own user-mode network.
  auto addr = sh(ids[0], "ip -4 addr show eth0 | grep -o '10.0.2.15/24'; cat /etc/resolv.conf");
  EXPECT_EQ(addr.stdout_data, "10.0.2.15/24\nnameserver 10.0.2.3\n");
}

TEST_F(Network, NoneChildHasNoRouteAndNoLinkEvenIfTheGuestAddsOne) {
  auto ids = fork("net", 1, "none");
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(record_info(ids[0])["network"], "none");
  auto r = sh(ids[0], "ip route; " + fetch_cmd(server_->port(), "none-child"));
  EXPECT_NE(r.exit_code, 0) << r.stdout_data;
  EXPECT_EQ(r.stdout_data.find("default"), std::string::npos) << r.stdout_data;
  EXPECT_NE(r.stderr_data.find("unreachable"), std::string::npos) << r.stderr_data;
  // Root in the guest puts the route back: the host keeps the NIC's link down.
  auto again = sh(ids[0], "ip link set eth0 up; ip route add default via 10.0.2.2; " +
                              fetch_cmd(server_->port(), "none-child"));
  EXPECT_NE(again.exit_code, 0) << again.stdout_data;
  EXPECT_EQ(server_->seen().count("none-child"), 0u);
  // A child of a tag made without a network has no NIC at all.
  auto plain = fork("base", 1, "");
  ASSERT_EQ(plain.size(), 1u);
  auto nic = sh(plain[0], "test -e /sys/class/net/eth0 && echo nic || echo no-nic");
  EXPECT_EQ(nic.stdout_data, "no-nic\n");
  engine::ForkOptions outbound_of_base;
  outbound_of_base.tag = "base";
  outbound_of_base.use_pool = false;
  outbound_of_base.network = "outbound";
  auto refused = engine::fork_children(config(), outbound_of_base);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument);
}

TEST_F(Network, WarmPoolMembersAreClaimedAsEitherMode) {
  auto fill = run_cli({"pool", "fill", "--tag", "net", "--size", "2", "--warm"});
  ASSERT_EQ(fill.exit_code, 0) << fill.err;
  auto online = fork("net", 1, "outbound", {}, true);
  auto offline = fork("net", 1, "none", {}, true);
  (void)run_cli({"pool", "fill", "--tag", "net", "--size", "0"});
  ASSERT_EQ(online.size(), 1u);
  ASSERT_EQ(offline.size(), 1u);
  auto a = sh(online[0], fetch_cmd(server_->port(), "pooled"));
  EXPECT_NE(a.stdout_data.find("hello pooled"), std::string::npos) << explain(online[0], a);
  auto b = sh(offline[0], fetch_cmd(server_->port(), "pooled-none"));
  EXPECT_NE(b.exit_code, 0);
  EXPECT_EQ(server_->seen().count("pooled-none"), 0u);
}

TEST_F(Network, ExposedPortAnswersFromTheHostThroughTheCli) {
  auto child = fork_exposed_by_cli({"--tag", "net", "--expose", "8000", "--no-pool"});
  ASSERT_TRUE(child);
  const std::string id = child->id;
  const nlohmann::json ports = nlohmann::json::array({child->port});
  EXPECT_EQ(ports[0]["guest"], 8000);
  EXPECT_EQ(ports[0]["address"], "127.0.0.1");
  int host_port = ports[0]["host"];
  auto serve = sh(id,
                  "mkdir -p /tmp/w && echo from-guest > /tmp/w/index.html && "
                  "httpd -p 8000 -h /tmp/w");
  ASSERT_EQ(serve.exit_code, 0) << serve.stderr_data;
  httplib::Client c("127.0.0.1", host_port);
  c.set_read_timeout(std::chrono::seconds(20));
  auto got = c.Get("/index.html");
  ASSERT_TRUE(got) << httplib::to_string(got.error());
  EXPECT_EQ(got->status, 200);
  EXPECT_EQ(got->body, "from-guest\n");
  // `ps --json` lists the port.
  auto ps = run_cli({"ps", "--json"});
  auto pj = nlohmann::json::parse(ps.out, nullptr, false);
  ASSERT_TRUE(pj.is_object()) << ps.out;
  bool listed = false;
  for (const auto& s : pj["sandboxes"]) {
    if (s["id"] != id) continue;
    listed = s["network"] == "outbound" && s["ports"].size() == 1 &&
             s["ports"][0]["host"] == host_port && s["ports"][0]["guest"] == 8000;
  }
  EXPECT_TRUE(listed) << ps.out;
  auto bad = run_cli({"fork", "--tag", "net", "--network", "none", "--expose", "80"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("outbound"), std::string::npos) << bad.err;
}

TEST_F(Network, BranchOfANetworkedSandboxForksNetworkedChildren) {
  auto src = fork("net", 1, "");
  ASSERT_EQ(src.size(), 1u);
  auto b = run_cli({"branch", src[0], "--tag", "net-branch", "--json"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  auto kids = fork("net-branch", 2, "");
  ASSERT_EQ(kids.size(), 2u);
  for (const auto& id : kids) {
    auto r = sh(id, fetch_cmd(server_->port(), "$(hostname)"));
    EXPECT_NE(r.stdout_data.find("hello " + id), std::string::npos) << explain(id, r);
  }
  // The source's network goes on after its pause.
  auto s = sh(src[0], fetch_cmd(server_->port(), "source-after"));
  EXPECT_NE(s.stdout_data.find("hello source-after"), std::string::npos) << explain(src[0], s);
}

TEST_F(Network, RestSpawnTakesNetworkAndExpose) {
  TestDaemon d;
  ASSERT_TRUE(d.start(config().home, "net-token"));
  auto c = d.client();
  auto made = post_json(c, "/v1/sandboxes", {{"snapshot_tag", "net"}, {"expose", {8000}}});
  ASSERT_TRUE(made);
  ASSERT_EQ(made->status, 201) << made->body;
  auto arr = body_json(made);
  ASSERT_TRUE(arr.is_array() && arr.size() == 1) << made->body;
  EXPECT_EQ(arr[0]["network"], "outbound");
  ASSERT_EQ(arr[0]["ports"].size(), 1u) << made->body;
  EXPECT_EQ(arr[0]["ports"][0]["guest"], 8000);
  EXPECT_GT(arr[0]["ports"][0]["host"].get<int>(), 0);
  auto none = post_json(c, "/v1/sandboxes", {{"snapshot_tag", "net"}, {"network", "none"}});
  ASSERT_TRUE(none);
  ASSERT_EQ(none->status, 201) << none->body;
  EXPECT_EQ(body_json(none)[0]["network"], "none");
  auto refused = post_json(c, "/v1/sandboxes", {{"snapshot_tag", "base"}, {"network", "outbound"}});
  expect_error(refused, 400, "network");
  auto v = c.Get("/version");
  ASSERT_TRUE(v);
  auto modes = body_json(v)["boundary"]["network_modes"];
  EXPECT_EQ(modes, nlohmann::json({"none", "outbound"})) << v->body;
  d.stop();
}

TEST_F(Network, ADaemonWithoutATokenRefusesOutboundGuests) {
  // Its API on 127.0.0.1 would be reachable from an outbound guest (10.0.2.2 is the host's
  // loopback): it serves none children only.
  int port = free_port();
  ASSERT_GT(port, 0);
  auto d = Child::spawn({forkd_cli(), "serve", "--listen", "127.0.0.1:" + std::to_string(port)});
  ASSERT_TRUE(d) << d.error().describe();
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(std::chrono::seconds(120));
  bool up = false;
  for (int i = 0; i < 100 && !up; ++i) {
    auto h = c.Get("/healthz");
    up = h && h->status == 200;
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(up);
  auto refused = post_json(c, "/v1/sandboxes", {{"snapshot_tag", "net"}});
  expect_error(refused, 409, "without a token");
  auto none = post_json(c, "/v1/sandboxes", {{"snapshot_tag", "net"}, {"network", "none"}});
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 201) << none->body;
  d->kill(SIGTERM);
  (void)d->wait();
}

}  // namespace
}  // namespace forkd::test

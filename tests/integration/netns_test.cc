// per_child_netns on real VMs (minimal image, jailed QEMUs, root): each child of an outbound
// tag runs in a network namespace of its own on a tap. Children reach a test server on the
// host's end of their own veth (an address of this host inside the test's namespaces; nothing
// else is contacted), each from its own namespace; an allow-list lets through only its entries;
// an exposed port answers at the namespace's address; the namespace and its devices go with
// the sandbox; the CLI and REST carry per_child_netns, allow_list, netns and netns_network.
#include "vmm/netns.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include "base/files.h"
#include "base/subprocess.h"
#include "engine/registry.h"
#include "engine/sandbox_jail.h"
#include "engine/snapshot.h"
#include "integration/daemon_fixture.h"
#include "integration/net_fixture.h"
#include "integration/vm_fixture.h"

namespace forkd::test {
namespace {

class Netns : public ForkingTest {
 protected:
  static void SetUpTestSuite() {
    if (!qemu_missing_reason().empty() || ::geteuid() != 0) return;
    engine::SnapshotOptions so;
    so.tag = "net";
    so.image = "minimal";
    so.network = "outbound";
    auto r = engine::create_snapshot(config(), so);
    ASSERT_TRUE(r) << r.error().describe();
  }
  void SetUp() override {
    ForkingTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    FORKD_REQUIRE("root", root_missing_reason("make network namespaces"));
    auto support = vmm::netns_support();
    ASSERT_TRUE(support.available) << support.reason << " (scripts/install-deps.sh installs it)";
  }

  static engine::ForkOptions netns_fork(int n, std::vector<std::string> allow = {},
                                        std::vector<int> expose = {}) {
    engine::ForkOptions fo;
    fo.tag = "net";
    fo.n = n;
    fo.use_pool = false;
    fo.per_child_netns = true;
    fo.allow_list = std::move(allow);
    fo.expose = std::move(expose);
    return fo;
  }
  static nlohmann::json info_of(const std::string& id) {
    for (const auto& s : engine::list_sandboxes(config())) {
      if (s.id == id) {
        auto info = engine::isolation_info(s.record);
        info["pid"] = s.pid;
        return info;
      }
    }
    return nullptr;
  }
  static bool netns_exists(const std::string& name) {
    return ::access(("/run/netns/" + name).c_str(), F_OK) == 0;
  }
  static bool link_exists(const std::string& name) {
    return ::access(("/sys/class/net/" + name).c_str(), F_OK) == 0;
  }
};

TEST_F(Netns, ChildrenReachTheHostFromTheirOwnNamespacesAndLeaveNothingBehind) {
  auto ids = fork_ok(netns_fork(2));
  ASSERT_EQ(ids.size(), 2u);
  std::vector<nlohmann::json> infos;
  for (const auto& id : ids) infos.push_back(info_of(id));
  std::set<std::string> names, hosts;
  for (size_t i = 0; i < 2; ++i) {
    const auto& info = infos[i];
    ASSERT_TRUE(info.is_object());
    ASSERT_TRUE(info["netns"].is_string()) << info.dump();
    EXPECT_EQ(info["netns"], vmm::netns_name(ids[i]));
    EXPECT_EQ(info["network"], "outbound");
    names.insert(info["netns"].get<std::string>());
    hosts.insert(info["netns_network"]["host_address"].get<std::string>());
    // QEMU runs inside the namespace, as its jailed uid.
    struct stat ns {
    }, qemu_ns{};
    std::string pid = std::to_string(info["pid"].get<int>());
    ASSERT_EQ(::stat(("/run/netns/" + info["netns"].get<std::string>()).c_str(), &ns), 0);
    ASSERT_EQ(::stat(("/proc/" + pid + "/ns/net").c_str(), &qemu_ns), 0);
    EXPECT_EQ(ns.st_ino, qemu_ns.st_ino) << "QEMU " << pid << " is in the child's namespace";
    EXPECT_NE(info["uid"], 0);
  }
  EXPECT_EQ(names.size(), 2u);
  EXPECT_EQ(hosts.size(), 2u) << "each child has its own /30";
  // A server on each child's host end; each child fetches from its own, at once.
  std::vector<std::unique_ptr<HostServer>> servers;
  for (const auto& info : infos) {
    servers.push_back(std::make_unique<HostServer>());
    ASSERT_TRUE(servers.back()->start(info["netns_network"]["host_address"]));
  }
  std::vector<engine::ExecResult> out(2);
  {
    std::vector<std::jthread> t;
    for (size_t i = 0; i < 2; ++i) {
      std::string host = infos[i]["netns_network"]["host_address"];
      t.emplace_back([&, i, host] {
        out[i] = sh_in(ids[i], fetch_cmd(host, servers[i]->port(), "$(hostname)"));
      });
    }
  }
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_NE(out[i].stdout_data.find("hello " + ids[i] + "\n"), std::string::npos)
        << out[i].stdout_data << out[i].stderr_data;
    EXPECT_EQ(servers[i]->seen(), std::set<std::string>{ids[i]});
  }
  // The tag's address and resolver are kept: the tap answers as slirp's gateway and resolver
  // (here the guest asks the resolver's address for the host's port, through the tap).
  auto addr = sh_in(ids[0], "ip -4 addr show eth0 | grep -o '10.0.2.15/24'; cat /etc/resolv.conf");
  EXPECT_EQ(addr.stdout_data, "10.0.2.15/24\nnameserver 10.0.2.3\n");
  // The namespace and the host's veth end go with the sandbox.
  std::string host_if = "fkh";
  for (const auto& id : ids) {
    auto r = run_cli({"rm", id});
    EXPECT_EQ(r.exit_code, 0) << r.err;
  }
  for (const auto& name : names) EXPECT_FALSE(netns_exists(name)) << name;
  for (const auto& info : infos) {
    // The veth goes once the kernel has torn the namespace down (QEMU gone): allow it a moment.
    std::string addr_text = info["netns_network"]["address"];
    uint32_t slot = 0;
    for (uint32_t s = 0; s < vmm::kNetnsSlots; ++s) {
      if (vmm::netns_addresses(s).address == addr_text) slot = s;
    }
    std::string dev = vmm::netns_addresses(slot).host_if;
    for (int i = 0; i < 100 && link_exists(dev); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_FALSE(link_exists(dev)) << dev;
  }
}

TEST_F(Netns, SweepRemovesOnlyNamespacesNoProcessIsIn) {
  // A launcher that died after making its namespace leaves one nobody is in.
  const std::string stale = "forkd-test-stale-" + std::to_string(::getpid());
  auto made = run_capture({"ip", "netns", "add", stale}, std::chrono::seconds(20));
  ASSERT_TRUE(made && made->exit_code == 0) << (made ? made->output : made.error().describe());
  auto ids = fork_ok(netns_fork(1));
  ASSERT_EQ(ids.size(), 1u);
  std::string live = info_of(ids[0])["netns"];
  // Too young for the sweep of gc: kept.
  EXPECT_EQ(vmm::sweep_stale_netns(std::chrono::seconds(120)), 0);
  EXPECT_TRUE(netns_exists(stale));
  // Old enough: the unused one goes, the child's (its QEMU is inside) stays and still works.
  EXPECT_GE(vmm::sweep_stale_netns(std::chrono::seconds(0)), 1);
  EXPECT_FALSE(netns_exists(stale));
  EXPECT_TRUE(netns_exists(live));
  EXPECT_EQ(sh_in(ids[0], "echo alive").stdout_data, "alive\n");
}

TEST_F(Netns, AnAllowListLetsOnlyItsEntriesThrough) {
  int allowed_port = free_port(), other_port = free_port();
  ASSERT_GT(allowed_port, 0);
  ASSERT_GT(other_port, 0);
  ASSERT_NE(allowed_port, other_port);
  auto ids =
      fork_ok(netns_fork(1, {std::string(vmm::kNetnsPool) + ":" + std::to_string(allowed_port)}));
  ASSERT_EQ(ids.size(), 1u);
  auto info = info_of(ids[0]);
  EXPECT_EQ(
      info["netns_network"]["allow_list"],
      nlohmann::json::array({std::string(vmm::kNetnsPool) + ":" + std::to_string(allowed_port)}));
  std::string host = info["netns_network"]["host_address"];
  HostServer allowed, other;
  ASSERT_TRUE(allowed.start(host, allowed_port));
  ASSERT_TRUE(other.start(host, other_port));
  auto yes = sh_in(ids[0], fetch_cmd(host, allowed_port, "allowed"));
  EXPECT_NE(yes.stdout_data.find("hello allowed"), std::string::npos)
      << yes.stdout_data << yes.stderr_data;
  auto no = sh_in(ids[0], fetch_cmd(host, other_port, "other"));
  EXPECT_NE(no.exit_code, 0) << no.stdout_data;
  EXPECT_TRUE(other.seen().empty());
  EXPECT_EQ(allowed.seen(), std::set<std::string>{"allowed"});
}

TEST_F(Netns, ExposedPortAnswersAtTheNamespacesAddressThroughTheCli) {
  auto child = fork_exposed_by_cli({"--tag", "net", "--per-child-netns", "--expose", "8000"});
  ASSERT_TRUE(child);
  const std::string id = child->id;
  const nlohmann::json ports = nlohmann::json::array({child->port});
  EXPECT_EQ(ports[0]["guest"], 8000);
  EXPECT_EQ(ports[0]["host"], 8000);
  EXPECT_EQ(ports[0]["address"], info_of(id)["netns_network"]["address"]);
  auto serve = sh_in(id,
                     "mkdir -p /tmp/w && echo from-guest > /tmp/w/index.html && "
                     "httpd -p 8000 -h /tmp/w");
  ASSERT_EQ(serve.exit_code, 0) << serve.stderr_data;
  httplib::Client c(ports[0]["address"].get<std::string>(), 8000);
  c.set_read_timeout(std::chrono::seconds(20));
  auto got = c.Get("/index.html");
  ASSERT_TRUE(got) << httplib::to_string(got.error());
  EXPECT_EQ(got->body, "from-guest\n");
  // Misuse is refused with the reason.
  auto none = run_cli({"fork", "--tag", "net", "--network", "none", "--per-child-netns"});
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.err.find("per_child_netns needs network outbound"), std::string::npos) << none.err;
  auto slirp = run_cli({"fork", "--tag", "net", "--allow", "10.0.0.0/8"});
  EXPECT_NE(slirp.exit_code, 0);
  EXPECT_NE(slirp.err.find("needs per_child_netns"), std::string::npos) << slirp.err;
}

TEST_F(Netns, RestSpawnTakesPerChildNetnsAndAllowList) {
  TestDaemon d;
  ASSERT_TRUE(d.start(config().home, "netns-token"));
  auto c = d.client();
  auto made = post_json(
      c, "/v1/sandboxes",
      {{"snapshot_tag", "net"}, {"per_child_netns", true}, {"allow_list", {"10.200.0.0/16:9"}}});
  ASSERT_TRUE(made);
  ASSERT_EQ(made->status, 201) << made->body;
  auto arr = body_json(made);
  ASSERT_TRUE(arr.is_array() && arr.size() == 1) << made->body;
  std::string id = arr[0]["id"];
  EXPECT_EQ(arr[0]["netns"], vmm::netns_name(id));
  EXPECT_EQ(arr[0]["netns_network"]["allow_list"], nlohmann::json::array({"10.200.0.0/16:9"}));
  auto got = c.Get(("/v1/sandboxes/" + id).c_str());
  ASSERT_TRUE(got);
  EXPECT_EQ(body_json(got)["netns"], vmm::netns_name(id)) << got->body;
  expect_error(post_json(c, "/v1/sandboxes",
                         {{"snapshot_tag", "net"},
                          {"per_child_netns", true},
                          {"allow_list", {"example.com:443"}}}),
               400, "host names are not resolved");
  expect_error(
      post_json(c, "/v1/sandboxes", {{"snapshot_tag", "net"}, {"allow_list", {"1.2.3.4"}}}), 400,
      "needs per_child_netns");
  // A workspace keeps its namespace across a suspend and a resume.
  auto ws = post_json(c, "/v1/workspaces",
                      {{"name", "routed"}, {"snapshot_tag", "net"}, {"per_child_netns", true}});
  ASSERT_TRUE(ws);
  ASSERT_EQ(ws->status, 201) << ws->body;
  EXPECT_EQ(body_json(ws)["per_child_netns"], true);
  std::string sandbox = suspend_and_resume(c, "routed", nlohmann::json::object());
  ASSERT_FALSE(sandbox.empty());
  auto info = info_of(sandbox);
  EXPECT_EQ(info["netns"], vmm::netns_name(sandbox)) << info.dump();
  HostServer server;
  ASSERT_TRUE(server.start(info["netns_network"]["host_address"]));
  auto fetched = sh_in(sandbox, fetch_cmd(info["netns_network"]["host_address"], server.port(),
                                          "resumed-workspace"));
  EXPECT_NE(fetched.stdout_data.find("hello resumed-workspace"), std::string::npos)
      << fetched.stdout_data << fetched.stderr_data;
  auto gone = c.Delete("/v1/workspaces/routed");
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->status, 204);
  auto v = c.Get("/version");
  ASSERT_TRUE(v);
  EXPECT_EQ(body_json(v)["boundary"]["network"]["per_child_netns"]["available"], true) << v->body;
  d.stop();
}

}  // namespace
}  // namespace forkd::test

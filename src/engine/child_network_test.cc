#include <gtest/gtest.h>

#include "engine/restore.h"
#include "engine/sandbox_jail.h"

namespace forkd::engine {
namespace {

store::SnapshotMeta tag(const std::string& network) {
  store::SnapshotMeta m;
  m.tag = "t";
  m.network = network;
  return m;
}

ChildNetwork net(const std::string& mode, std::vector<int> expose = {}) {
  ChildNetwork n;
  n.mode = mode;
  n.expose = std::move(expose);
  return n;
}

TEST(ResolveChildNetwork, DefaultsToTheTags) {
  EXPECT_EQ(*resolve_child_network(tag("none"), {}), "none");
  EXPECT_EQ(*resolve_child_network(tag("outbound"), {}), "outbound");
}

TEST(ResolveChildNetwork, ATagWithANicServesBothModes) {
  ChildNetwork none = net("none");
  EXPECT_EQ(*resolve_child_network(tag("outbound"), none), "none");
  ChildNetwork exposed = net("", {8080, 22});
  EXPECT_EQ(*resolve_child_network(tag("outbound"), exposed), "outbound");
}

TEST(ResolveChildNetwork, RefusesWhatTheTagOrTheModeCannotGive) {
  auto outbound_on_none = resolve_child_network(tag("none"), net("outbound"));
  ASSERT_FALSE(outbound_on_none);
  EXPECT_EQ(outbound_on_none.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(outbound_on_none.error().message().find("--network outbound"), std::string::npos);
  EXPECT_FALSE(resolve_child_network(tag("none"), net("", {80})));
  EXPECT_FALSE(resolve_child_network(tag("outbound"), net("none", {80})));
  EXPECT_FALSE(resolve_child_network(tag("outbound"), net("wifi")));
  EXPECT_FALSE(resolve_child_network(tag("outbound"), net("", {0})));
  EXPECT_FALSE(resolve_child_network(tag("outbound"), net("", {65536})));
  EXPECT_FALSE(resolve_child_network(tag("outbound"), net("", {80, 80})));
  std::vector<int> many;
  for (int p = 1; p <= static_cast<int>(kMaxExposedPorts) + 1; ++p) many.push_back(p);
  EXPECT_FALSE(resolve_child_network(tag("outbound"), net("", many)));
}

TEST(ResolveChildNetwork, PerChildNetnsIsOutboundOnlyAndAloneCarriesAnAllowList) {
  ChildNetwork ns = net("");
  ns.netns = true;
  ns.allow = {"10.0.0.0/8", "192.0.2.1:443"};
  EXPECT_EQ(*resolve_child_network(tag("outbound"), ns), "outbound");
  ns.mode = "none";
  auto none = resolve_child_network(tag("outbound"), ns);
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message().find("per_child_netns needs network outbound"),
            std::string::npos);
  EXPECT_FALSE(resolve_child_network(tag("none"), [] {
    ChildNetwork n;
    n.netns = true;
    return n;
  }()));
  ChildNetwork slirp = net("outbound");
  slirp.allow = {"10.0.0.0/8"};
  auto refused = resolve_child_network(tag("outbound"), slirp);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("needs per_child_netns"), std::string::npos);
  ChildNetwork bad = net("");
  bad.netns = true;
  bad.allow = {"pypi.org:443"};
  auto name = resolve_child_network(tag("outbound"), bad);
  ASSERT_FALSE(name);
  EXPECT_EQ(name.error().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace forkd::engine

namespace forkd::engine {
namespace {

TEST(IsolationInfo, KeepsOnlyWellFormedNetworkFieldsOfARecord) {
  // sandbox.json is a file on disk: anything in it is decoded, never trusted.
  nlohmann::json rec = {{"network", "bridge"},
                        {"ports",
                         {{{"guest", "80"}, {"host", 1234}},
                          {{"guest", 80}, {"host", 70000}},
                          {{"guest", 8080}, {"host", 40000}, {"address", std::string(100, '1')}},
                          7,
                          {{"guest", 22}, {"host", 40001}, {"address", "127.0.0.1"}},
                          {{"guest", 23}, {"host", 40002}, {"address", "999.0.0.1"}}}}};
  auto info = isolation_info(rec);
  EXPECT_EQ(info["network"], "none");
  ASSERT_EQ(info["ports"].size(), 3u) << info.dump();
  EXPECT_EQ(info["ports"][2], (nlohmann::json{{"guest", 23}, {"host", 40002}}));
  EXPECT_EQ(info["ports"][0], (nlohmann::json{{"guest", 8080}, {"host", 40000}}));
  EXPECT_EQ(info["ports"][1],
            (nlohmann::json{{"guest", 22}, {"host", 40001}, {"address", "127.0.0.1"}}));
  EXPECT_EQ(isolation_info(nlohmann::json{{"ports", "x"}})["ports"], nlohmann::json::array());
  EXPECT_EQ(isolation_info(nlohmann::json{{"network", "outbound"}})["network"], "outbound");
}

TEST(IsolationInfo, KeepsOnlyAWellFormedNetnsOfARecord) {
  nlohmann::json good = {{"netns",
                          {{"name", "forkd-sb-0123abcd"},
                           {"address", "10.200.0.2"},
                           {"host_address", "10.200.0.1; rm -rf /"},
                           {"allow", {"10.0.0.0/8", "evil", 7, "1.2.3.4:80"}}}}};
  auto info = isolation_info(good);
  EXPECT_EQ(info["netns"], "forkd-sb-0123abcd");
  EXPECT_EQ(info["netns_network"]["address"], "10.200.0.2");
  EXPECT_TRUE(info["netns_network"]["host_address"].is_null());
  good["netns"]["host_address"] = "10.200.0.999";
  EXPECT_TRUE(isolation_info(good)["netns_network"]["host_address"].is_null());
  EXPECT_EQ(info["netns_network"]["allow_list"],
            nlohmann::json::array({"10.0.0.0/8", "1.2.3.4:80"}));
  for (const nlohmann::json& ns :
       {nlohmann::json("forkd-x"), nlohmann::json{{"name", "../../etc"}},
        nlohmann::json{{"name", "other-ns"}}, nlohmann::json{{"name", 5}}}) {
    auto bad = isolation_info(nlohmann::json{{"netns", ns}});
    EXPECT_TRUE(bad["netns"].is_null()) << ns.dump();
    EXPECT_TRUE(bad["netns_network"].is_null()) << ns.dump();
  }
}

}  // namespace
}  // namespace forkd::engine

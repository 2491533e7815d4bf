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

TEST(ResolveChildNetwork, DefaultsToTheTags) {
  EXPECT_EQ(*resolve_child_network(tag("none"), {}), "none");
  EXPECT_EQ(*resolve_child_network(tag("outbound"), {}), "outbound");
}

TEST(ResolveChildNetwork, ATagWithANicServesBothModes) {
  ChildNetwork none{"none", {}, "127.0.0.1"};
  EXPECT_EQ(*resolve_child_network(tag("outbound"), none), "none");
  ChildNetwork exposed{"", {8080, 22}, "127.0.0.1"};
  EXPECT_EQ(*resolve_child_network(tag("outbound"), exposed), "outbound");
}

TEST(ResolveChildNetwork, RefusesWhatTheTagOrTheModeCannotGive) {
  auto outbound_on_none = resolve_child_network(tag("none"), {"outbound", {}, "127.0.0.1"});
  ASSERT_FALSE(outbound_on_none);
  EXPECT_EQ(outbound_on_none.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(outbound_on_none.error().message().find("--network outbound"), std::string::npos);
  EXPECT_FALSE(resolve_child_network(tag("none"), {"", {80}, "127.0.0.1"}));
  EXPECT_FALSE(resolve_child_network(tag("outbound"), {"none", {80}, "127.0.0.1"}));
  EXPECT_FALSE(resolve_child_network(tag("outbound"), {"wifi", {}, "127.0.0.1"}));
  EXPECT_FALSE(resolve_child_network(tag("outbound"), {"", {0}, "127.0.0.1"}));
  EXPECT_FALSE(resolve_child_network(tag("outbound"), {"", {65536}, "127.0.0.1"}));
  EXPECT_FALSE(resolve_child_network(tag("outbound"), {"", {80, 80}, "127.0.0.1"}));
  std::vector<int> many;
  for (int p = 1; p <= static_cast<int>(kMaxExposedPorts) + 1; ++p) many.push_back(p);
  EXPECT_FALSE(resolve_child_network(tag("outbound"), {"", many, "127.0.0.1"}));
}

}  // namespace
}  // namespace forkd::engine

namespace forkd::engine {
namespace {

TEST(IsolationInfo, KeepsOnlyWellFormedNetworkFieldsOfARecord) {
  // sandbox.json is a file on disk: anything in it is decoded, never trusted.
  nlohmann::json rec = {
      {"network", "bridge"},
      {"ports",
       {{{"guest", "80"}, {"host", 1234}},
        {{"guest", 80}, {"host", 70000}},
        {{"guest", 8080}, {"host", 40000}, {"address", std::string(100, '1')}},
        7,
        {{"guest", 22}, {"host", 40001}, {"address", "127.0.0.1"}}}}};
  auto info = isolation_info(rec);
  EXPECT_EQ(info["network"], "none");
  ASSERT_EQ(info["ports"].size(), 2u) << info.dump();
  EXPECT_EQ(info["ports"][0], (nlohmann::json{{"guest", 8080}, {"host", 40000}}));
  EXPECT_EQ(info["ports"][1],
            (nlohmann::json{{"guest", 22}, {"host", 40001}, {"address", "127.0.0.1"}}));
  EXPECT_EQ(isolation_info(nlohmann::json{{"ports", "x"}})["ports"], nlohmann::json::array());
  EXPECT_EQ(isolation_info(nlohmann::json{{"network", "outbound"}})["network"], "outbound");
}

}  // namespace
}  // namespace forkd::engine

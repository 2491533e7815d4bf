#include "engine/disk_fold.h"

#include <gtest/gtest.h>

namespace forkd::engine {
namespace {

using Json = nlohmann::json;

// One image as query-named-block-nodes (flat) lists it: its qcow2 node and its file node.
void add_image(Json& nodes, const std::string& node, const std::string& file,
               const std::string& backing) {
  Json q = {{"node-name", node}, {"drv", "qcow2"}, {"file", file}};
  if (!backing.empty()) q["backing_file"] = backing;
  nodes.push_back(q);
  nodes.push_back({{"node-name", node + "-file"}, {"drv", "file"}, {"file", file}});
}

// tag disk <- overlay.qcow2 <- overlay-a.qcow2 (frozen) <- overlay-b.qcow2 (active)
Json second_branch(const std::string& dir) {
  Json nodes = Json::array();
  add_image(nodes, "#b5", dir + "/overlay-b.qcow2", dir + "/overlay-a.qcow2");
  add_image(nodes, "#b4", dir + "/overlay-a.qcow2", dir + "/overlay.qcow2");
  add_image(nodes, "#b2", dir + "/overlay.qcow2", "/snap/t/disk.qcow2");
  add_image(nodes, "#b1", "/snap/t/disk.qcow2", "/snap/t/base.img");
  nodes.push_back({{"node-name", "#b0"}, {"drv", "raw"}, {"file", "/snap/t/base.img"}});
  return nodes;
}

TEST(DiskFold, TheFrozenLayerGoesIntoTheSandboxsLayerBelow) {
  std::string why;
  auto plan = plan_fold(second_branch("/s/sb-1"), "/s/sb-1", "/s/sb-1/overlay-a.qcow2", &why);
  ASSERT_TRUE(plan);
  ASSERT_TRUE(plan->has_value()) << why;
  EXPECT_EQ((*plan)->top_node, "#b4");
  EXPECT_EQ((*plan)->base_node, "#b2");
}

TEST(DiskFold, NothingIsFoldedIntoTheTagsDiskOrFromOutsideTheSandbox) {
  std::string why;
  // After a first branch the layer below the frozen one is the tag's disk.
  auto first = plan_fold(second_branch("/s/sb-1"), "/s/sb-1", "/s/sb-1/overlay.qcow2", &why);
  ASSERT_TRUE(first);
  EXPECT_FALSE(first->has_value());
  EXPECT_NE(why.find("tag"), std::string::npos) << why;
  // A frozen layer that is another sandbox's, or no longer in the chain.
  auto other = plan_fold(second_branch("/s/sb-2"), "/s/sb-1", "/s/sb-2/overlay-a.qcow2", &why);
  ASSERT_TRUE(other);
  EXPECT_FALSE(other->has_value());
  auto gone = plan_fold(second_branch("/s/sb-1"), "/s/sb-1", "/s/sb-1/overlay-z.qcow2", &why);
  ASSERT_TRUE(gone);
  EXPECT_FALSE(gone->has_value());
  EXPECT_NE(why.find("no longer"), std::string::npos) << why;
  // A layer below that QEMU says is in another sandbox's directory.
  Json forged = second_branch("/s/sb-1");
  forged[2]["backing_file"] = "/s/sb-2/overlay.qcow2";
  auto out = plan_fold(forged, "/s/sb-1", "/s/sb-1/overlay-a.qcow2", &why);
  ASSERT_TRUE(out);
  EXPECT_FALSE(out->has_value());
}

TEST(DiskFold, AReplyThatDoesNotHoldTogetherIsAnError) {
  std::string why;
  Json nodes = second_branch("/s/sb-1");
  nodes.erase(4);  // the qcow2 node of overlay.qcow2
  EXPECT_FALSE(plan_fold(nodes, "/s/sb-1", "/s/sb-1/overlay-a.qcow2", &why));
  EXPECT_FALSE(plan_fold(Json::object(), "/s/sb-1", "/s/sb-1/overlay-a.qcow2", &why));
  // Entries of the wrong shape are skipped, not thrown on.
  Json odd = Json::array({1, "x", Json::array(), {{"drv", 5}, {"file", true}}});
  auto r = plan_fold(odd, "/s/sb-1", "/s/sb-1/overlay-a.qcow2", &why);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->has_value());
}

}  // namespace
}  // namespace forkd::engine

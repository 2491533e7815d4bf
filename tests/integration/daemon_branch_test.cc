// BRANCH and chains over HTTP, against a real `forkd serve` and real VMs: synchronous and
// wait:false branches, the codes of the contract (409 tag exists, 503 cap, 409 on a parent),
// compact and cascade, and kill -9 of the daemon while a wait:false branch is being written.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "base/files.h"
#include "integration/daemon_fixture.h"
#include "integration/vm_fixture.h"

namespace forkd::test {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

class DaemonBranch : public ::testing::Test {
 protected:
  void SetUp() override {
    FORKD_REQUIRE("qemu", qemu_missing_reason());
    ASSERT_TRUE(daemon_.start(config().home, "token", {"--max-branches", "1"}));
    if (!made_tag_) {
      auto c = client();
      auto r = post(c, "/v1/snapshots", {{"tag", "bt"}, {"image", "minimal"}, {"memory_mib", 128}});
      ASSERT_TRUE(r);
      ASSERT_EQ(r->status, 201) << r->body;
      made_tag_ = true;
    }
  }
  void TearDown() override {
    (void)daemon_.stop(SIGTERM, std::chrono::seconds(60));
    (void)run_cli({"rm", "--all"});
  }
  httplib::Client client() { return daemon_.client(); }
  static httplib::Result post(httplib::Client& c, const std::string& path, const Json& body) {
    return post_json(c, path, body);
  }
  std::string fork_one(httplib::Client& c) {
    auto r = post(c, "/v1/sandboxes", {{"snapshot_tag", "bt"}, {"n", 1}});
    EXPECT_TRUE(r && r->status == 201) << (r ? r->body : "no response");
    auto j = body_json(r);
    return j.is_array() && !j.empty() ? j[0].value("id", "") : "";
  }
  std::string sh(httplib::Client& c, const std::string& id, const std::string& cmd) {
    auto r = post(c, "/v1/sandboxes/" + id + "/exec", {{"args", {"sh", "-c", cmd}}});
    EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no response");
    return body_json(r).value("stdout", "");
  }
  // Polls a tag's info until its status is no longer "writing".
  Json wait_settled(httplib::Client& c, const std::string& tag) {
    auto deadline = Clock::now() + std::chrono::seconds(120);
    Json j;
    while (Clock::now() < deadline) {
      j = body_json(c.Get("/v1/snapshots/" + tag + "/info"));
      if (j.is_object() && j.value("status", "") != "writing") return j;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return j;
  }

  TestDaemon daemon_;
  static inline bool made_tag_ = false;
};

TEST_F(DaemonBranch, SyncAndAsyncBranchesCompactAndCascade) {
  auto c = client();
  std::string src = fork_one(c);
  ASSERT_FALSE(src.empty());
  sh(c, src, "echo first > /tmp/state");

  auto r = post(c, "/v1/sandboxes/" + src + "/branch", {{"tag", "b1"}, {"mode", "live"}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 201) << r->body;
  Json b1 = body_json(r);
  EXPECT_EQ(b1["tag"], "b1");
  EXPECT_EQ(b1["status"], "ready");
  EXPECT_EQ(b1["bootable"], true);
  EXPECT_EQ(b1["branched_from"], src);
  EXPECT_TRUE(b1["pause_ms"].is_number());
  // The source is drivable right after (the daemon reconnects to its agent).
  EXPECT_EQ(sh(c, src, "cat /tmp/state; echo second > /tmp/state"), "first\n");

  auto dup = post(c, "/v1/sandboxes/" + src + "/branch", {{"tag", "b1"}});
  ASSERT_TRUE(dup);
  EXPECT_EQ(dup->status, 409) << dup->body;

  // wait:false: 202 while writing, then ready; the legacy `diff` flag picks the mode.
  r = post(c, "/v1/sandboxes/" + src + "/branch",
           {{"tag", "b2"}, {"diff", false}, {"wait", false}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  Json b2 = body_json(r);
  EXPECT_EQ(b2["status"], "writing");
  EXPECT_EQ(b2["bootable"], false);
  EXPECT_EQ(b2["mode"], "full");
  // The cap is 1: a second branch while b2 is written is refused at once.
  auto busy = post(c, "/v1/sandboxes/" + src + "/branch", {{"tag", "b3"}});
  ASSERT_TRUE(busy);
  if (busy->status != 201) {
    EXPECT_EQ(busy->status, 503) << busy->body;
  }
  Json settled = wait_settled(c, "b2");
  EXPECT_EQ(settled["status"], "ready") << settled.dump();
  EXPECT_EQ(settled["chain_depth"], 1);
  EXPECT_EQ(settled["ancestors"], Json({"bt"}));
  if (busy->status == 201) (void)c.Delete("/v1/snapshots/b3");

  // A child of b2 has the source's state of that moment.
  r = post(c, "/v1/sandboxes", {{"snapshot_tag", "b2"}, {"n", 1}});
  ASSERT_TRUE(r && r->status == 201) << (r ? r->body : "");
  std::string child = body_json(r)[0]["id"];
  EXPECT_EQ(sh(c, child, "cat /tmp/state"), "second\n");

  // The parent refuses deletion, naming its dependents.
  auto refused = c.Delete("/v1/snapshots/bt");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 409);
  EXPECT_NE(refused->body.find("b1"), std::string::npos) << refused->body;
  EXPECT_NE(refused->body.find("b2"), std::string::npos) << refused->body;
  auto info = body_json(c.Get("/v1/snapshots/bt/info"));
  EXPECT_EQ(info["dependents"], Json({"b1", "b2"}));

  // compact: a flat copy; `to` taken is 409.
  r = post(c, "/v1/snapshots/b2/compact", {{"to", "b2flat"}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(body_json(r)["branched_from"], "compact:b2");
  auto flat_info = body_json(c.Get("/v1/snapshots/b2flat/info"));
  EXPECT_EQ(flat_info["chain_depth"], 0);
  EXPECT_TRUE(flat_info["parent_tag"].is_null());
  r = post(c, "/v1/snapshots/b2/compact", {{"to", "b2flat"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 409);

  // Deleting b2 while its child runs: the child keeps running.
  auto del = c.Delete("/v1/snapshots/b2");
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 204);
  EXPECT_EQ(sh(c, child, "cat /tmp/state"), "second\n");

  // The list shows branches with their fields.
  bool listed = false;
  for (const auto& t : body_json(c.Get("/v1/snapshots"))) {
    if (t["tag"] == "b1") {
      listed = true;
      EXPECT_EQ(t["branched_from"], src);
      EXPECT_EQ(t["status"], "ready");
    }
  }
  EXPECT_TRUE(listed);
  auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("forkd_branch_pause_seconds_count"), std::string::npos);
  EXPECT_EQ(metrics->body.find("forkd_branch_pause_seconds_count 0"), std::string::npos);

  for (const char* t : {"b2flat", "b1"}) {
    auto d = c.Delete(std::string("/v1/snapshots/") + t + "?cascade=true");
    ASSERT_TRUE(d);
    EXPECT_EQ(d->status, 204) << t << ": " << d->body;
  }
}

// kill -9 of the daemon while a wait:false branch is written: after a restart the tag is ready
// or failed, never stuck writing or half-visible, and the source still runs.
TEST_F(DaemonBranch, Kill9DuringAsyncBranch) {
  auto c = client();
  std::string src = fork_one(c);
  ASSERT_FALSE(src.empty());
  auto r = post(c, "/v1/sandboxes/" + src + "/branch", {{"tag", "k1"}, {"wait", false}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  (void)daemon_.stop(SIGKILL, std::chrono::seconds(60));
  ASSERT_TRUE(daemon_.restart());
  auto c2 = client();
  Json settled = wait_settled(c2, "k1");
  std::string status = settled.value("status", "");
  EXPECT_TRUE(status == "ready" || status == "failed") << settled.dump();
  if (status == "failed") {
    EXPECT_EQ(settled["bootable"], false);
    for (const auto& name : list_dir_names(config().home + "/snapshots")) {
      EXPECT_NE(name, "k1") << "a failed tag must not have a directory";
    }
  }
  EXPECT_EQ(sh(c2, src, "echo alive"), "alive\n");
  auto d = c2.Delete("/v1/snapshots/k1");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->status, 204) << d->body;
  auto gone = c2.Get("/v1/snapshots/k1/info");
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->status, 404);
}

}  // namespace
}  // namespace forkd::test

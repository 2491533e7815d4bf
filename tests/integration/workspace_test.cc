// Workspaces through a real `forkd serve` against real VMs: the contract's /v1/workspaces routes
// and status codes (shared/reference/forkd-rest-v1.md, Workspaces), guest state carried across
// suspend and resume, and the stale status when a workspace's sandbox is killed under it.
#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>
#include <string>

#include "integration/daemon_fixture.h"
#include "integration/vm_fixture.h"

namespace forkd::test {
namespace {

using Json = nlohmann::json;

constexpr const char* kTag = "wsbase";

class Workspaces : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!qemu_missing_reason().empty()) return;
    ASSERT_TRUE(daemon_.start(config().home, "ws-token"));
    auto cl = client();
    auto r = cl.Post("/v1/snapshots",
                     Json{{"tag", kTag}, {"image", "minimal"}, {"memory_mib", 128}}.dump(),
                     "application/json");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 201) << r->body;
  }
  // Removes every workspace (their sandboxes and state tags) even after a failed test, then
  // stops the daemon and any sandbox left over.
  static void TearDownTestSuite() {
    if (daemon_.running()) {
      auto cl = client();
      Json all = body_json(cl.Get("/v1/workspaces"));
      if (all.is_array()) {
        for (const auto& w : all) (void)cl.Delete("/v1/workspaces/" + w["name"].get<std::string>());
      }
      (void)daemon_.stop();
    }
    (void)run_cli({"rm", "--all"});
  }
  void SetUp() override {
    FORKD_REQUIRE("qemu", qemu_missing_reason());
    ASSERT_TRUE(daemon_.running());
  }

  static httplib::Client client() { return daemon_.client(); }
  static httplib::Result post(httplib::Client& c, const std::string& path, const Json& body) {
    return post_json(c, path, body);
  }
  // Creates a workspace from the suite's tag and returns its WorkspaceInfo.
  static Json create(httplib::Client& c, const std::string& name) {
    auto r = post(c, "/v1/workspaces", {{"name", name}, {"snapshot_tag", kTag}});
    if (!r || r->status != 201) {
      ADD_FAILURE() << "create " << name << ": " << (r ? r->body : httplib::to_string(r.error()));
      return Json();
    }
    return body_json(r);
  }
  static std::string exec_shell(httplib::Client& c, const std::string& id, const std::string& sh) {
    auto r = post(c, "/v1/sandboxes/" + id + "/exec", {{"args", {"sh", "-c", sh}}});
    if (!r || r->status != 200) {
      ADD_FAILURE() << "exec in " << id << ": " << (r ? r->body : httplib::to_string(r.error()));
      return "";
    }
    return body_json(r).value("stdout", "");
  }

  // forkd --url <daemon> args..., with the token in FORKD_TOKEN.
  static CliResult remote(std::vector<std::string> args) {
    args.insert(args.begin(), {"--url", daemon_.url()});
    return run_cli(args, {{"FORKD_TOKEN", daemon_.token()}});
  }

  static inline TestDaemon daemon_;
};

TEST_F(Workspaces, CreateListGetDelete) {
  auto c = client();
  auto r = post(c, "/v1/workspaces",
                {{"name", "w1"},
                 {"snapshot_tag", kTag},
                 {"per_child_netns", false},
                 {"memory_limit_mib", 256},
                 {"unknown_field", "ignored"}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 201) << r->body;
  Json w = body_json(r);
  EXPECT_EQ(w["name"], "w1");
  EXPECT_EQ(w["status"], "running");
  EXPECT_EQ(w["source_snapshot_tag"], kTag);
  EXPECT_TRUE(w["current_state_tag"].is_null());
  EXPECT_TRUE(w["id"].is_string());
  EXPECT_TRUE(w["created_at_unix"].is_number_integer());
  EXPECT_TRUE(w["updated_at_unix"].is_number_integer());
  ASSERT_TRUE(w["sandbox_id"].is_string());
  std::string sb = w["sandbox_id"];
  EXPECT_EQ(exec_shell(c, sb, "echo up"), "up\n");

  expect_error(post(c, "/v1/workspaces", {{"name", "w1"}, {"snapshot_tag", kTag}}), 409);

  Json list = body_json(c.Get("/v1/workspaces"));
  ASSERT_TRUE(list.is_array());
  bool found = false;
  for (const auto& x : list) found = found || x["name"] == "w1";
  EXPECT_TRUE(found) << list.dump();
  Json one = body_json(c.Get("/v1/workspaces/w1"));
  EXPECT_EQ(one["id"], w["id"]);
  EXPECT_EQ(one["status"], "running");
  EXPECT_EQ(one["sandbox_id"], sb);

  // Running already: resume is 400.
  expect_error(c.Post("/v1/workspaces/w1/resume", "", "application/json"), 400, "running");

  auto d = c.Delete("/v1/workspaces/w1");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->status, 204) << d->body;
  expect_error(c.Get("/v1/workspaces/w1"), 404);
  expect_error(c.Get("/v1/sandboxes/" + sb), 404);
  EXPECT_TRUE(qemu_pids_matching(sb).empty()) << "QEMU of " << sb << " left running";
  auto info = c.Get(std::string("/v1/snapshots/") + kTag + "/info");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->status, 200) << "the source tag must survive: " << info->body;
}

TEST_F(Workspaces, BadInputAndNotFound) {
  auto c = client();
  expect_error(post(c, "/v1/workspaces", {{"name", "../x"}, {"snapshot_tag", kTag}}), 400);
  expect_error(post(c, "/v1/workspaces", {{"name", "a b"}, {"snapshot_tag", kTag}}), 400);
  expect_error(post(c, "/v1/workspaces", {{"name", std::string(56, 'a')}, {"snapshot_tag", kTag}}),
               400);
  expect_error(post(c, "/v1/workspaces", {{"name", 5}, {"snapshot_tag", kTag}}), 400, "name");
  expect_error(post(c, "/v1/workspaces", {{"name", "x"}}), 400, "snapshot_tag");
  expect_error(post(c, "/v1/workspaces", {{"name", "x"}, {"snapshot_tag", "../t"}}), 400);
  expect_error(
      post(c, "/v1/workspaces", {{"name", "x"}, {"snapshot_tag", kTag}, {"memory_limit_mib", "1"}}),
      400, "memory_limit_mib");
  expect_error(
      post(c, "/v1/workspaces", {{"name", "x"}, {"snapshot_tag", kTag}, {"per_child_netns", 1}}),
      400, "per_child_netns");
  expect_error(c.Post("/v1/workspaces", "{nope", "application/json"), 400, "JSON");
  expect_error(post(c, "/v1/workspaces", {{"name", "x"}, {"snapshot_tag", "no-such-tag"}}), 404);
  expect_error(c.Get("/v1/workspaces/x"), 404);  // a failed create leaves no workspace
  expect_error(c.Get("/v1/workspaces/nope"), 404);
  expect_error(c.Delete("/v1/workspaces/nope"), 404);
  expect_error(post(c, "/v1/workspaces/nope/suspend", Json::object()), 404);
  expect_error(c.Post("/v1/workspaces/nope/resume", "", "application/json"), 404);
  expect_error(c.Get("/v1/workspaces/..%2Fetc"), 400);
  expect_error(c.Delete("/v1/workspaces/a%2Fb"), 400);
  expect_error(post(c, "/v1/workspaces/nope/suspend", {{"diff", "yes"}}), 400, "diff");
}

TEST_F(Workspaces, StaleWhenItsSandboxIsKilled) {
  auto c = client();
  Json w = create(c, "w-stale");
  ASSERT_TRUE(w["sandbox_id"].is_string());
  std::string sb = w["sandbox_id"];
  auto k = c.Delete("/v1/sandboxes/" + sb);
  ASSERT_TRUE(k);
  ASSERT_EQ(k->status, 204);
  EXPECT_EQ(body_json(c.Get("/v1/workspaces/w-stale"))["status"], "stale");
  bool listed = false;
  for (const auto& x : body_json(c.Get("/v1/workspaces"))) {
    if (x["name"] == "w-stale") listed = x["status"] == "stale";
  }
  EXPECT_TRUE(listed);
  // Nothing runs: suspend has nothing to snapshot.
  expect_error(post(c, "/v1/workspaces/w-stale/suspend", Json::object()), 400);
  auto d = c.Delete("/v1/workspaces/w-stale");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->status, 204) << d->body;
}

// Suspend snapshots the guest into ws-<name>-state and stops it; resume forks from that tag, so a
// file written before the suspend is there after it. Deleting the workspace deletes the state tag.
TEST_F(Workspaces, SuspendResumeKeepsGuestState) {
  auto c = client();
  Json w = create(c, "w2");
  ASSERT_TRUE(w["sandbox_id"].is_string());
  std::string sb = w["sandbox_id"];
  EXPECT_EQ(exec_shell(c, sb, "echo hi > /tmp/x && sync && echo ok"), "ok\n");

  auto s = post(c, "/v1/workspaces/w2/suspend", Json::object());
  ASSERT_TRUE(s);
  ASSERT_EQ(s->status, 200) << s->body;
  Json sj = body_json(s);
  EXPECT_EQ(sj["status"], "suspended");
  EXPECT_EQ(sj["current_state_tag"], "ws-w2-state");
  EXPECT_TRUE(sj["sandbox_id"].is_null());
  auto tag = c.Get("/v1/snapshots/ws-w2-state/info");
  ASSERT_TRUE(tag);
  EXPECT_EQ(tag->status, 200) << tag->body;
  expect_error(c.Get("/v1/sandboxes/" + sb), 404);
  EXPECT_EQ(body_json(c.Get("/v1/workspaces/w2"))["status"], "suspended");

  expect_error(post(c, "/v1/workspaces/w2/suspend", Json::object()), 400, "suspended");

  auto r = c.Post("/v1/workspaces/w2/resume", "", "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  Json rj = body_json(r);
  EXPECT_EQ(rj["status"], "running");
  ASSERT_TRUE(rj["sandbox_id"].is_string());
  std::string sb2 = rj["sandbox_id"];
  EXPECT_NE(sb2, sb);
  EXPECT_EQ(exec_shell(c, sb2, "cat /tmp/x"), "hi\n");

  // A full (diff:false) suspend of the resumed sandbox replaces the state tag.
  std::string sb3 = suspend_and_resume(c, "w2", {{"diff", false}});
  ASSERT_FALSE(sb3.empty());
  EXPECT_EQ(exec_shell(c, sb3, "cat /tmp/x"), "hi\n");

  auto d = c.Delete("/v1/workspaces/w2");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->status, 204) << d->body;
  expect_error(c.Get("/v1/sandboxes/" + sb3), 404);
  expect_error(c.Get("/v1/snapshots/ws-w2-state/info"), 404);
  auto src = c.Get(std::string("/v1/snapshots/") + kTag + "/info");
  ASSERT_TRUE(src);
  EXPECT_EQ(src->status, 200) << "the source tag must survive";
  for (const auto& id : {sb, sb2, sb3}) EXPECT_TRUE(qemu_pids_matching(id).empty()) << id;
}

TEST_F(Workspaces, MemoryLimitHoldsAcrossSuspendAndResume) {
  FORKD_REQUIRE("root", root_missing_reason("apply memory limits (cgroups)"));
  auto c = client();
  auto r = post(c, "/v1/workspaces",
                {{"name", "lim"}, {"snapshot_tag", kTag}, {"memory_limit_mib", 300}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 201) << r->body;
  Json w = body_json(r);
  EXPECT_EQ(w["memory_limit_mib"], 300);
  std::string sb = w["sandbox_id"];
  EXPECT_EQ(body_json(c.Get("/v1/sandboxes/" + sb))["memory_limit_mib"], 300);
  std::string sb2 = suspend_and_resume(c, "lim", Json::object());
  ASSERT_FALSE(sb2.empty());
  EXPECT_EQ(body_json(c.Get("/v1/sandboxes/" + sb2))["memory_limit_mib"], 300)
      << "the resumed sandbox keeps the workspace's limit";
  expect_error(
      post(c, "/v1/workspaces", {{"name", "low"}, {"snapshot_tag", kTag}, {"memory_limit_mib", 8}}),
      400, "memory_limit_mib");
  auto d = c.Delete("/v1/workspaces/lim");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->status, 204) << d->body;
}

// `forkd workspace` on the embedded engine, then the same records through the daemon (--url).
TEST_F(Workspaces, Cli) {
  auto made = run_cli({"workspace", "create", "wcli", "--tag", kTag, "--json"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  Json w = Json::parse(made.out, nullptr, false);
  ASSERT_TRUE(w.is_object()) << made.out;
  EXPECT_EQ(w["status"], "running");
  auto dup = run_cli({"workspace", "create", "wcli", "--tag", kTag});
  EXPECT_NE(dup.exit_code, 0);
  EXPECT_NE(dup.err.find("already_exists"), std::string::npos) << dup.err;

  auto table = run_cli({"workspace", "list"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("NAME"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("wcli"), std::string::npos) << table.out;

  auto rl = remote({"workspace", "list", "--json"});
  ASSERT_EQ(rl.exit_code, 0) << rl.err;
  Json all = Json::parse(rl.out, nullptr, false);
  ASSERT_TRUE(all.is_object() && all["workspaces"].is_array()) << rl.out;
  bool running = false;
  for (const auto& x : all["workspaces"]) {
    if (x["name"] == "wcli") running = x["status"] == "running";
  }
  EXPECT_TRUE(running) << rl.out;
  auto again = remote({"workspace", "resume", "wcli"});
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.err.find("already running"), std::string::npos) << again.err;
  auto rm = remote({"workspace", "rm", "wcli"});
  ASSERT_EQ(rm.exit_code, 0) << rm.err;
  auto gone = run_cli({"workspace", "rm", "wcli"});
  EXPECT_NE(gone.exit_code, 0);
  EXPECT_NE(gone.err.find("not_found"), std::string::npos) << gone.err;
}

// Suspend on the embedded engine (--full), resume through the daemon.
TEST_F(Workspaces, CliSuspendResume) {
  auto made = run_cli({"workspace", "create", "wcli2", "--tag", kTag});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  auto sus = run_cli({"workspace", "suspend", "wcli2", "--full", "--json"});
  ASSERT_EQ(sus.exit_code, 0) << sus.err;
  EXPECT_EQ(Json::parse(sus.out, nullptr, false)["status"], "suspended") << sus.out;
  auto rr = remote({"workspace", "resume", "wcli2"});
  ASSERT_EQ(rr.exit_code, 0) << rr.err;
  EXPECT_NE(rr.out.find("running"), std::string::npos) << rr.out;
  auto rm = remote({"workspace", "rm", "wcli2", "--json"});
  ASSERT_EQ(rm.exit_code, 0) << rm.err;
  EXPECT_EQ(Json::parse(rm.out, nullptr, false)["removed"], true) << rm.out;
}

}  // namespace
}  // namespace forkd::test

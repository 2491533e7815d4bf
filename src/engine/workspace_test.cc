#include "engine/workspace.h"

#include <gtest/gtest.h>

#include <map>
#include <thread>

#include "base/files.h"

namespace forkd::engine {
namespace {

using Json = nlohmann::json;

// Sandboxes and tags in memory. Fields are public so tests can arrange and inspect them.
class FakeBackend : public WorkspaceBackend {
 public:
  Result<std::string> fork(const std::string& tag, int memory_limit_mib,
                           bool per_child_netns) override {
    last_netns = per_child_netns;
    std::lock_guard g(mu);
    last_memory_limit_mib = memory_limit_mib;
    if (!tags.count(tag)) return make_error(ErrorCode::kNotFound, "unknown tag '" + tag + "'");
    std::string id = "sb-" + std::to_string(++next_id);
    running[id] = tag;
    forked_from.push_back(tag);
    return id;
  }
  std::set<std::string> running_sandboxes() override {
    std::lock_guard g(mu);
    std::set<std::string> out;
    for (const auto& [id, tag] : running) out.insert(id);
    return out;
  }
  Status stop(const std::string& id) override {
    std::lock_guard g(mu);
    if (!running.erase(id)) return make_error(ErrorCode::kNotFound, "no sandbox " + id);
    return {};
  }
  Status snapshot(const std::string& id, const std::string& tag, bool live) override {
    std::lock_guard g(mu);
    if (snapshot_error) return tl::unexpected(*snapshot_error);
    if (!running.count(id)) return make_error(ErrorCode::kNotFound, "no sandbox " + id);
    tags.insert(tag);
    modes.push_back(live);
    return {};
  }
  bool tag_exists(const std::string& tag) override {
    std::lock_guard g(mu);
    return tags.count(tag) > 0;
  }
  Status remove_tag(const std::string& tag) override {
    std::lock_guard g(mu);
    if (!tags.erase(tag)) return make_error(ErrorCode::kNotFound, "unknown tag " + tag);
    return {};
  }

  std::mutex mu;
  std::map<std::string, std::string> running;  // id -> tag
  std::set<std::string> tags{"base"};
  std::vector<std::string> forked_from;
  std::vector<bool> modes;  // live?
  std::optional<Error> snapshot_error;
  int next_id = 0;
  int last_memory_limit_mib = -1;
  bool last_netns = false;
};

class WorkspaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::create("forkd-ws-test");
    ASSERT_TRUE(d);
    home_ = std::make_unique<TempDir>(std::move(*d));
    auto b = std::make_unique<FakeBackend>();
    fake_ = b.get();
    ws_ = std::make_unique<Workspaces>(home_->path(), std::move(b));
  }
  std::unique_ptr<TempDir> home_;
  FakeBackend* fake_ = nullptr;  // owned by ws_
  std::unique_ptr<Workspaces> ws_;
};

TEST(WorkspaceRecord, RoundTrips) {
  WorkspaceInfo w{"ws-00ff", "dev", "base", "ws-dev-state", "", "suspended", 10, 20};
  Json j = workspace_to_json(w);
  EXPECT_TRUE(j["sandbox_id"].is_null());
  EXPECT_EQ(j["current_state_tag"], "ws-dev-state");
  for (const char* k : {"id", "name", "source_snapshot_tag", "current_state_tag", "sandbox_id",
                        "status", "created_at_unix", "updated_at_unix"}) {
    EXPECT_TRUE(j.contains(k)) << k;
  }
  auto back = workspace_from_json(j);
  ASSERT_TRUE(back) << back.error().describe();
  EXPECT_EQ(back->name, "dev");
  EXPECT_EQ(back->current_state_tag, "ws-dev-state");
  EXPECT_EQ(back->sandbox_id, "");
  EXPECT_EQ(back->created_at_unix, 10);
  EXPECT_EQ(back->updated_at_unix, 20);
}

TEST(WorkspaceRecord, RefusesHostileRecords) {
  Json good = workspace_to_json({"ws-1", "dev", "base", "", "sb-1", "running", 1, 2});
  ASSERT_TRUE(workspace_from_json(good));
  auto with = [&](const char* k, Json v) {
    Json j = good;
    j[k] = std::move(v);
    return workspace_from_json(j);
  };
  EXPECT_FALSE(workspace_from_json(Json::array()));
  EXPECT_FALSE(with("name", "../etc"));
  EXPECT_FALSE(with("name", 5));
  EXPECT_FALSE(with("source_snapshot_tag", "a/b"));
  EXPECT_FALSE(with("sandbox_id", "../../x"));
  EXPECT_FALSE(with("sandbox_id", nullptr));  // running needs a sandbox
  EXPECT_FALSE(with("current_state_tag", "x y"));
  EXPECT_FALSE(with("status", "stale"));  // computed, never recorded
  EXPECT_FALSE(with("created_at_unix", "yesterday"));
  Json missing = good;
  missing.erase("id");
  EXPECT_FALSE(workspace_from_json(missing));
}

TEST(WorkspaceRecord, NamesLeaveRoomForTheStateTag) {
  EXPECT_TRUE(validate_workspace_name(std::string(55, 'a')));
  EXPECT_FALSE(validate_workspace_name(std::string(56, 'a')));
  EXPECT_FALSE(validate_workspace_name(""));
  EXPECT_FALSE(validate_workspace_name("a.b"));
  EXPECT_EQ(workspace_state_tag("dev"), "ws-dev-state");
}

TEST_F(WorkspaceTest, MemoryLimitIsKeptAcrossSuspendAndResume) {
  auto w = ws_->create("lim", "base", 300);
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_EQ(fake_->last_memory_limit_mib, 300);
  EXPECT_EQ(workspace_to_json(*w)["memory_limit_mib"], 300);
  ASSERT_TRUE(ws_->suspend("lim", true));
  fake_->last_memory_limit_mib = -1;
  ASSERT_TRUE(ws_->resume("lim"));
  EXPECT_EQ(fake_->last_memory_limit_mib, 300) << "the resumed sandbox has the same limit";
  auto routed = ws_->create("routed", "base", 0, true);
  ASSERT_TRUE(routed) << routed.error().describe();
  EXPECT_TRUE(fake_->last_netns);
  EXPECT_EQ(workspace_to_json(*routed)["per_child_netns"], true);
  ASSERT_TRUE(ws_->suspend("routed", true));
  fake_->last_netns = false;
  ASSERT_TRUE(ws_->resume("routed"));
  EXPECT_TRUE(fake_->last_netns) << "a resume keeps the namespace";
  auto plain = ws_->create("plain", "base");
  ASSERT_TRUE(plain);
  EXPECT_EQ(fake_->last_memory_limit_mib, 0);
  EXPECT_FALSE(fake_->last_netns);
  EXPECT_TRUE(workspace_to_json(*plain)["memory_limit_mib"].is_null());
}

TEST_F(WorkspaceTest, CreateGetListRemove) {
  auto w = ws_->create("dev", "base");
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_EQ(w->status, "running");
  EXPECT_EQ(w->sandbox_id, "sb-1");
  EXPECT_EQ(w->source_snapshot_tag, "base");
  EXPECT_EQ(w->id.rfind("ws-", 0), 0u);
  EXPECT_GT(w->created_at_unix, 0);
  EXPECT_TRUE(path_exists(home_->path() + "/workspaces/dev.json"));

  auto dup = ws_->create("dev", "base");
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(fake_->running.size(), 1u) << "a duplicate must not fork";

  EXPECT_EQ(ws_->create("../x", "base").error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ws_->create("other", "no-tag").error().code(), ErrorCode::kNotFound);
  EXPECT_FALSE(path_exists(home_->path() + "/workspaces/other.json"));

  ASSERT_TRUE(ws_->create("abc", "base"));
  auto all = ws_->list();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].name, "abc");
  EXPECT_EQ(all[1].name, "dev");
  EXPECT_EQ(ws_->get("dev")->sandbox_id, "sb-1");
  EXPECT_EQ(ws_->get("nope").error().code(), ErrorCode::kNotFound);

  ASSERT_TRUE(ws_->remove("dev"));
  EXPECT_FALSE(fake_->running.count("sb-1"));
  EXPECT_TRUE(fake_->tags.count("base")) << "the source tag is never deleted";
  EXPECT_EQ(ws_->get("dev").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(ws_->remove("dev").error().code(), ErrorCode::kNotFound);
  EXPECT_FALSE(path_exists(home_->path() + "/workspaces/dev.lock"));
  EXPECT_EQ(ws_->list().size(), 1u);
}

TEST_F(WorkspaceTest, StaleWhenTheSandboxIsGone) {
  ASSERT_TRUE(ws_->create("dev", "base"));
  fake_->running.clear();
  EXPECT_EQ(ws_->get("dev")->status, "stale");
  EXPECT_EQ(ws_->list()[0].status, "stale");
  // Stale cannot suspend (nothing to snapshot) but can resume.
  EXPECT_EQ(ws_->suspend("dev", true).error().code(), ErrorCode::kInvalidArgument);
  auto r = ws_->resume("dev");
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->status, "running");
  EXPECT_EQ(ws_->get("dev")->status, "running");
}

TEST_F(WorkspaceTest, SuspendResume) {
  ASSERT_TRUE(ws_->create("dev", "base"));
  EXPECT_EQ(ws_->resume("dev").error().code(), ErrorCode::kInvalidArgument);

  auto s = ws_->suspend("dev", true);
  ASSERT_TRUE(s) << s.error().describe();
  EXPECT_EQ(s->status, "suspended");
  EXPECT_EQ(s->current_state_tag, "ws-dev-state");
  EXPECT_EQ(s->sandbox_id, "");
  EXPECT_TRUE(fake_->tags.count("ws-dev-state"));
  EXPECT_TRUE(fake_->running.empty()) << "suspend stops the sandbox";
  EXPECT_TRUE(fake_->modes.back()) << "live by default";
  EXPECT_EQ(ws_->get("dev")->status, "suspended");
  EXPECT_EQ(ws_->suspend("dev", true).error().code(), ErrorCode::kInvalidArgument);

  auto r = ws_->resume("dev");
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->status, "running");
  EXPECT_EQ(fake_->forked_from.back(), "ws-dev-state");
  EXPECT_TRUE(fake_->running.count(r->sandbox_id));

  ASSERT_TRUE(ws_->suspend("dev", false));
  EXPECT_FALSE(fake_->modes.back());
  ASSERT_TRUE(ws_->remove("dev"));
  EXPECT_FALSE(fake_->tags.count("ws-dev-state")) << "the state tag goes with the workspace";
  EXPECT_TRUE(fake_->tags.count("base"));
}

TEST_F(WorkspaceTest, FailedSnapshotKeepsRunning) {
  ASSERT_TRUE(ws_->create("dev", "base"));
  fake_->snapshot_error = Error(ErrorCode::kUnavailable, "branch slots full");
  auto s = ws_->suspend("dev", true);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), ErrorCode::kUnavailable);
  auto w = ws_->get("dev");
  EXPECT_EQ(w->status, "running");
  EXPECT_EQ(w->current_state_tag, "");
  EXPECT_TRUE(fake_->running.count(w->sandbox_id));
}

TEST_F(WorkspaceTest, CorruptRecordIsSkippedInLists) {
  ASSERT_TRUE(ws_->create("dev", "base"));
  ASSERT_TRUE(write_file_atomic(home_->path() + "/workspaces/bad.json", "{not json"));
  ASSERT_TRUE(write_file_atomic(
      home_->path() + "/workspaces/evil.json",
      workspace_to_json({"ws-1", "dev", "base", "", "sb-1", "running", 1, 2}).dump()));
  auto all = ws_->list();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].name, "dev");
  EXPECT_FALSE(ws_->get("bad"));
  EXPECT_FALSE(ws_->get("evil")) << "a record must name its own file";
}

// One name, many threads: exactly one create wins, the rest see kAlreadyExists.
TEST_F(WorkspaceTest, ConcurrentCreatesAreSerialized) {
  std::atomic<int> ok{0}, exists{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      auto w = ws_->create("dev", "base");
      if (w) {
        ++ok;
      } else if (w.error().code() == ErrorCode::kAlreadyExists) {
        ++exists;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 1);
  EXPECT_EQ(exists.load(), 7);
  EXPECT_EQ(fake_->running.size(), 1u);
}

}  // namespace
}  // namespace forkd::engine

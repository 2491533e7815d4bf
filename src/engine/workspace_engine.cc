// The engine behind workspaces: fork, registry, branch and the tag store. Kept apart from
// workspace.cc so the bookkeeping links (and is tested) without the VM machinery.
#include "engine/branch.h"
#include "engine/fork.h"
#include "engine/registry.h"
#include "engine/sandbox_jail.h"
#include "engine/workspace.h"
#include "store/snapshot_store.h"

namespace forkd::engine {

namespace {

class EngineWorkspaceBackend : public WorkspaceBackend {
 public:
  EngineWorkspaceBackend(EngineConfig cfg, std::function<void(const std::string&)> before_stop)
      : cfg_(std::move(cfg)), before_stop_(std::move(before_stop)) {}

  Result<std::string> fork(const std::string& tag, int memory_limit_mib,
                           bool per_child_netns) override {
    ForkOptions fo;
    fo.per_child_netns = per_child_netns;
    fo.tag = tag;
    fo.n = 1;
    fo.limits = limits_of(memory_limit_mib, 0, 0);
    auto r = fork_children(cfg_, fo);
    if (!r) return tl::unexpected(r.error());
    if (r->children.size() != 1) {
      return make_error(ErrorCode::kInternal, "fork " + tag + ": no child in the result");
    }
    const ForkChild& c = r->children[0];
    if (c.error) {
      if (!c.id.empty()) (void)remove_sandbox(cfg_, c.id);
      return tl::unexpected(c.error->wrap("fork " + tag));
    }
    return c.id;
  }

  std::set<std::string> running_sandboxes() override {
    std::set<std::string> out;
    for (const auto& s : list_sandboxes(cfg_)) {
      if (s.alive()) out.insert(s.id);
    }
    return out;
  }

  Status stop(const std::string& sandbox_id) override {
    if (before_stop_) before_stop_(sandbox_id);
    return remove_sandbox(cfg_, sandbox_id);
  }

  Status snapshot(const std::string& sandbox_id, const std::string& tag, bool live) override {
    BranchOptions bo;
    bo.sandbox_id = sandbox_id;
    bo.tag = tag;
    bo.mode = live ? BranchMode::kLive : BranchMode::kFull;
    bo.flat = true;
    bo.replace = true;
    auto r = branch_sandbox(cfg_, bo);
    if (!r) return tl::unexpected(r.error());
    return {};
  }

  bool tag_exists(const std::string& tag) override {
    return store::SnapshotStore(cfg_.home).exists(tag);
  }

  Status remove_tag(const std::string& tag) override {
    return store::SnapshotStore(cfg_.home).remove(tag);
  }

 private:
  EngineConfig cfg_;
  std::function<void(const std::string&)> before_stop_;
};

}  // namespace

std::unique_ptr<WorkspaceBackend> make_engine_workspace_backend(
    EngineConfig cfg, std::function<void(const std::string& sandbox_id)> before_stop) {
  return std::make_unique<EngineWorkspaceBackend>(std::move(cfg), std::move(before_stop));
}

}  // namespace forkd::engine

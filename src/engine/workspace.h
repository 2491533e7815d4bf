#pragma once
// Workspaces: named, long-lived sandboxes that can be suspended into a snapshot tag and resumed
// from it later. A record per workspace in $FORKD_HOME/workspaces/<name>.json, replaced
// atomically. Operations on one name are serialized across threads and processes by an flock on
// <name>.lock; reads (list, get) take no lock. The VM work goes through a WorkspaceBackend, so
// the bookkeeping can be tested with a fake.
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/config.h"

namespace forkd::engine {

// The contract's WorkspaceInfo. Empty sandbox_id / current_state_tag are JSON null.
struct WorkspaceInfo {
  std::string id;  // ws-<hex>, fixed at create
  std::string name;
  std::string source_snapshot_tag;
  std::string current_state_tag;  // ws-<name>-state once suspended, else empty
  std::string sandbox_id;         // empty while suspended
  std::string status;             // running | suspended (recorded); stale (computed)
  int64_t created_at_unix = 0;
  int64_t updated_at_unix = 0;
  // The memory limit of its sandbox's QEMU (0: the daemon's default), kept across resumes.
  int memory_limit_mib = 0;
  // Its sandbox runs in a network namespace of its own (forkd's per_child_netns), every resume.
  bool per_child_netns = false;
};

nlohmann::json workspace_to_json(const WorkspaceInfo& w);
// Parses a record (hostile: a file on disk). kInvalidArgument for a malformed one.
Result<WorkspaceInfo> workspace_from_json(const nlohmann::json& j);

// The tag a workspace suspends into.
std::string workspace_state_tag(const std::string& name);

// kInvalidArgument unless name is a valid tag and so is its state tag (names up to 55 chars).
Status validate_workspace_name(const std::string& name);

// What workspaces need from the engine.
class WorkspaceBackend {
 public:
  virtual ~WorkspaceBackend() = default;
  // Forks one child from tag (memory_limit_mib > 0: its QEMU's memory limit; per_child_netns:
  // in a network namespace of its own); its id.
  virtual Result<std::string> fork(const std::string& tag, int memory_limit_mib,
                                   bool per_child_netns) = 0;
  // Ids of the sandboxes whose QEMU is running.
  virtual std::set<std::string> running_sandboxes() = 0;
  // Stops and removes a sandbox; kNotFound when it is unknown.
  virtual Status stop(const std::string& sandbox_id) = 0;
  // Snapshots a running sandbox into tag (flat, replacing an older one); it keeps running.
  // live: a live branch (pre-copy), else a full one (stopped for the whole copy).
  virtual Status snapshot(const std::string& sandbox_id, const std::string& tag, bool live) = 0;
  virtual bool tag_exists(const std::string& tag) = 0;
  virtual Status remove_tag(const std::string& tag) = 0;
};

// The real engine. before_stop, when set, runs before a sandbox is stopped (the daemon drops its
// agent connection there).
std::unique_ptr<WorkspaceBackend> make_engine_workspace_backend(
    EngineConfig cfg, std::function<void(const std::string& sandbox_id)> before_stop = {});

// The workspace operations. Thread-safe; errors: kInvalidArgument (bad name or tag, wrong state:
// the contract's 400), kNotFound, kAlreadyExists, and the backend's errors.
class Workspaces {
 public:
  Workspaces(std::string home, std::unique_ptr<WorkspaceBackend> backend);

  Result<WorkspaceInfo> create(const std::string& name, const std::string& snapshot_tag,
                               int memory_limit_mib = 0, bool per_child_netns = false);
  // Sorted by name; running workspaces whose sandbox is gone are "stale".
  std::vector<WorkspaceInfo> list();
  Result<WorkspaceInfo> get(const std::string& name);
  // Stops the sandbox, deletes the state tag (never the source tag), removes the record.
  Status remove(const std::string& name);
  // Running only: snapshot into ws-<name>-state (live, or full when !live), then stop.
  Result<WorkspaceInfo> suspend(const std::string& name, bool live);
  // Not running only: forks from the state tag, else from the source tag.
  Result<WorkspaceInfo> resume(const std::string& name);

  const std::string& dir() const { return dir_; }

 private:
  struct NameLockHolder;  // the per-name flock, held for one operation
  std::string record_path(const std::string& name) const;
  // Takes the name's lock and loads its record (kNotFound without leaving a lock file).
  Result<WorkspaceInfo> lock_and_load(const std::string& name, NameLockHolder* held);
  Result<WorkspaceInfo> load(const std::string& name) const;
  Status save(WorkspaceInfo& w) const;
  // The status as the caller sees it, given the running sandboxes.
  static void compute_status(WorkspaceInfo& w, const std::set<std::string>& running);

  std::string dir_;
  std::unique_ptr<WorkspaceBackend> backend_;
};

}  // namespace forkd::engine

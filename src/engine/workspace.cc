#include "engine/workspace.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <ctime>

#include "base/files.h"
#include "base/json_get.h"
#include "base/log.h"
#include "base/unique_fd.h"
#include "store/snapshot_store.h"

namespace forkd::engine {

namespace {

using Json = nlohmann::json;

constexpr size_t kMaxRecordBytes = 64 << 10;
constexpr int kMaxLockAttempts = 100;  // a lock file replaced under us this often is a bug

int64_t now_unix() { return static_cast<int64_t>(std::time(nullptr)); }

// An exclusive flock on <dir>/<name>.lock, held for the object's life. remove() unlinks the file
// while holding it; a waiter that then gets the lock on the unlinked inode notices (its fd no
// longer is the file at the path) and retries, so two holders never hold different inodes.
class NameLock {
 public:
  static Result<NameLock> acquire(const std::string& path) {
    for (int i = 0; i < kMaxLockAttempts; ++i) {
      auto fd = open_file(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
      if (!fd) return tl::unexpected(fd.error().wrap("lock"));
      int rc;
      do {
        rc = ::flock(fd->get(), LOCK_EX);
      } while (rc != 0 && errno == EINTR);
      if (rc != 0) return errno_error(errno, "flock " + path);
      struct stat held, named;
      if (::fstat(fd->get(), &held) != 0) return errno_error(errno, "fstat " + path);
      if (::stat(path.c_str(), &named) == 0 && named.st_ino == held.st_ino &&
          named.st_dev == held.st_dev) {
        return NameLock(path, std::move(*fd));
      }
    }
    return make_error(ErrorCode::kInternal, "lock " + path + ": replaced too often");
  }
  // Unlinks the lock file; the lock is released when this object goes.
  void unlink() { ::unlink(path_.c_str()); }

 private:
  NameLock(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  std::string path_;
  UniqueFd fd_;  // closing it releases the flock
};

tl::unexpected<Error> bad_record(std::string message) {
  return make_error(ErrorCode::kInvalidArgument, std::move(message));
}

Json null_if_empty(const std::string& s) { return s.empty() ? Json() : Json(s); }

Status get_str(const Json& j, const char* key, bool required, std::string* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return bad_record(std::string("missing '") + key + "'");
    return {};
  }
  if (!it->is_string()) return bad_record(std::string("'") + key + "' is not a string");
  *out = it->get<std::string>();
  return {};
}

Status get_time(const Json& j, const char* key, int64_t* out) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer()) {
    return bad_record(std::string("'") + key + "' is not an integer");
  }
  *out = it->get<int64_t>();
  return {};
}

}  // namespace

struct Workspaces::NameLockHolder {
  std::unique_ptr<NameLock> lock;
};

Json workspace_to_json(const WorkspaceInfo& w) {
  return {{"id", w.id},
          {"name", w.name},
          {"source_snapshot_tag", w.source_snapshot_tag},
          {"current_state_tag", null_if_empty(w.current_state_tag)},
          {"sandbox_id", null_if_empty(w.sandbox_id)},
          {"status", w.status},
          {"created_at_unix", w.created_at_unix},
          {"updated_at_unix", w.updated_at_unix},
          {"memory_limit_mib", w.memory_limit_mib > 0 ? Json(w.memory_limit_mib) : Json()},
          {"per_child_netns", w.per_child_netns}};
}

Result<WorkspaceInfo> workspace_from_json(const Json& j) {
  if (!j.is_object()) return bad_record("workspace record is not a JSON object");
  WorkspaceInfo w;
  FORKD_TRY(get_str(j, "id", true, &w.id));
  FORKD_TRY(get_str(j, "name", true, &w.name));
  FORKD_TRY(get_str(j, "source_snapshot_tag", true, &w.source_snapshot_tag));
  FORKD_TRY(get_str(j, "current_state_tag", false, &w.current_state_tag));
  FORKD_TRY(get_str(j, "sandbox_id", false, &w.sandbox_id));
  FORKD_TRY(get_str(j, "status", true, &w.status));
  FORKD_TRY(get_time(j, "created_at_unix", &w.created_at_unix));
  FORKD_TRY(get_time(j, "updated_at_unix", &w.updated_at_unix));
  if (auto m = j.find("memory_limit_mib"); m != j.end() && !m->is_null()) {
    if (!m->is_number_integer() || m->get<int64_t>() < 32 || m->get<int64_t>() > (1 << 20)) {
      return bad_record("workspace record has a bad memory_limit_mib");
    }
    w.memory_limit_mib = m->get<int>();
  }
  if (auto n = j.find("per_child_netns"); n != j.end() && !n->is_null()) {
    if (!n->is_boolean()) return bad_record("workspace record has a bad per_child_netns");
    w.per_child_netns = n->get<bool>();
  }
  FORKD_TRY(validate_workspace_name(w.name));
  // Everything below becomes a path or a tag: check it as such.
  for (const std::string* s : {&w.id, &w.source_snapshot_tag}) {
    FORKD_TRY(store::SnapshotStore::validate_tag(*s));
  }
  for (const std::string* s : {&w.current_state_tag, &w.sandbox_id}) {
    if (!s->empty()) FORKD_TRY(store::SnapshotStore::validate_tag(*s));
  }
  if (w.status != "running" && w.status != "suspended") {
    return bad_record("workspace record has status '" + w.status.substr(0, 20) + "'");
  }
  if (w.status == "running" && w.sandbox_id.empty())
    return bad_record("running without a sandbox_id");
  return w;
}

std::string workspace_state_tag(const std::string& name) { return "ws-" + name + "-state"; }

Status validate_workspace_name(const std::string& name) {
  if (store::SnapshotStore::validate_tag(name) &&
      store::SnapshotStore::validate_tag(workspace_state_tag(name))) {
    return {};
  }
  return bad_record("invalid workspace name '" + name.substr(0, 80) +
                    "': use 1-55 characters from A-Z a-z 0-9 _ - (ws-<name>-state must be a tag)");
}

Workspaces::Workspaces(std::string home, std::unique_ptr<WorkspaceBackend> backend)
    : dir_(std::move(home) + "/workspaces"), backend_(std::move(backend)) {}

std::string Workspaces::record_path(const std::string& name) const {
  return dir_ + "/" + name + ".json";
}

Result<WorkspaceInfo> Workspaces::lock_and_load(const std::string& name, NameLockHolder* held) {
  FORKD_TRY(validate_workspace_name(name));
  // Unknown names answer without leaving a lock file behind.
  if (!path_exists(record_path(name))) {
    return make_error(ErrorCode::kNotFound, "no workspace " + name);
  }
  auto lock = NameLock::acquire(dir_ + "/" + name + ".lock");
  if (!lock) return tl::unexpected(lock.error());
  auto w = load(name);
  if (!w && w.error().code() == ErrorCode::kNotFound) lock->unlink();  // removed meanwhile
  held->lock = std::make_unique<NameLock>(std::move(*lock));
  return w;
}

Result<WorkspaceInfo> Workspaces::load(const std::string& name) const {
  FORKD_TRY(validate_workspace_name(name));
  std::string path = record_path(name);
  if (!path_exists(path)) return make_error(ErrorCode::kNotFound, "no workspace " + name);
  auto text = read_file(path, kMaxRecordBytes);
  if (!text) return tl::unexpected(text.error().wrap("workspace " + name));
  auto w = workspace_from_json(json::parse_untrusted(*text));
  if (!w) return tl::unexpected(Error(ErrorCode::kIo, w.error().message()).wrap(path));
  if (w->name != name) return make_error(ErrorCode::kIo, path + ": names workspace " + w->name);
  return w;
}

Status Workspaces::save(WorkspaceInfo& w) const {
  w.updated_at_unix = now_unix();
  FORKD_TRY(make_dirs(dir_, 0700));
  return write_file_atomic(record_path(w.name), workspace_to_json(w).dump(2) + "\n", 0600);
}

void Workspaces::compute_status(WorkspaceInfo& w, const std::set<std::string>& running) {
  if (w.status == "running" && !running.count(w.sandbox_id)) w.status = "stale";
}

Result<WorkspaceInfo> Workspaces::create(const std::string& name, const std::string& snapshot_tag,
                                         int memory_limit_mib, bool per_child_netns) {
  FORKD_TRY(validate_workspace_name(name));
  FORKD_TRY(store::SnapshotStore::validate_tag(snapshot_tag));
  FORKD_TRY(make_dirs(dir_, 0700));
  auto lock = NameLock::acquire(dir_ + "/" + name + ".lock");
  if (!lock) return tl::unexpected(lock.error());
  if (path_exists(record_path(name))) {
    return make_error(ErrorCode::kAlreadyExists, "workspace " + name + " already exists");
  }
  auto id = backend_->fork(snapshot_tag, memory_limit_mib, per_child_netns);
  if (!id) {
    lock->unlink();  // no workspace came of it
    return tl::unexpected(id.error().wrap("workspace " + name));
  }
  WorkspaceInfo w;
  w.id = "ws-" + random_hex(8);
  w.name = name;
  w.source_snapshot_tag = snapshot_tag;
  w.sandbox_id = *id;
  w.status = "running";
  w.memory_limit_mib = memory_limit_mib;
  w.per_child_netns = per_child_netns;
  w.created_at_unix = now_unix();
  if (auto st = save(w); !st) {
    (void)backend_->stop(*id);
    lock->unlink();
    return tl::unexpected(st.error().wrap("workspace " + name));
  }
  logger("engine")->info("workspace=created name={} sandbox={} tag={}", name, *id, snapshot_tag);
  return w;
}

std::vector<WorkspaceInfo> Workspaces::list() {
  std::vector<WorkspaceInfo> out;
  std::vector<std::string> names;
  constexpr std::string_view kExt = ".json";
  for (const auto& f : list_dir_names(dir_)) {  // sorted
    if (f.size() > kExt.size() && f.compare(f.size() - kExt.size(), kExt.size(), kExt) == 0) {
      names.push_back(f.substr(0, f.size() - kExt.size()));
    }
  }
  auto running = backend_->running_sandboxes();
  for (const auto& n : names) {
    auto w = load(n);
    if (!w) {
      // A foreign or corrupt file: skip it rather than fail the listing.
      logger("engine")->warn("workspace=unreadable name={} error=\"{}\"", n.substr(0, 80),
                             w.error().message());
      continue;
    }
    compute_status(*w, running);
    out.push_back(std::move(*w));
  }
  return out;
}

Result<WorkspaceInfo> Workspaces::get(const std::string& name) {
  auto w = load(name);
  if (!w) return w;
  compute_status(*w, backend_->running_sandboxes());
  return w;
}

Status Workspaces::remove(const std::string& name) {
  NameLockHolder held;
  auto w = lock_and_load(name, &held);
  if (!w) return tl::unexpected(w.error());
  if (!w->sandbox_id.empty()) {
    auto st = backend_->stop(w->sandbox_id);
    if (!st && st.error().code() != ErrorCode::kNotFound) {
      return tl::unexpected(st.error().wrap("workspace " + name));
    }
  }
  // Only the workspace's own state tag; the source tag is never ours to delete.
  std::string state = workspace_state_tag(name);
  if (backend_->tag_exists(state)) {
    auto st = backend_->remove_tag(state);
    if (!st && st.error().code() != ErrorCode::kNotFound) {
      return tl::unexpected(st.error().wrap("workspace " + name));
    }
  }
  if (::unlink(record_path(name).c_str()) != 0 && errno != ENOENT) {
    return errno_error(errno, "remove " + record_path(name));
  }
  held.lock->unlink();
  logger("engine")->info("workspace=removed name={}", name);
  return {};
}

Result<WorkspaceInfo> Workspaces::suspend(const std::string& name, bool live) {
  NameLockHolder held;
  auto w = lock_and_load(name, &held);
  if (!w) return w;
  compute_status(*w, backend_->running_sandboxes());
  if (w->status != "running") {
    return make_error(ErrorCode::kInvalidArgument,
                      "workspace " + name + " is " + w->status + ", not running");
  }
  std::string tag = workspace_state_tag(name);
  auto snap = backend_->snapshot(w->sandbox_id, tag, live);
  if (!snap) return tl::unexpected(snap.error().wrap("suspend workspace " + name));
  // The state is saved: record it before stopping, so a failed stop still resumes from it.
  w->current_state_tag = tag;
  FORKD_TRY(save(*w));
  auto st = backend_->stop(w->sandbox_id);
  if (!st && st.error().code() != ErrorCode::kNotFound) {
    return tl::unexpected(st.error().wrap("suspend workspace " + name + ": stop"));
  }
  w->sandbox_id.clear();
  w->status = "suspended";
  FORKD_TRY(save(*w));
  logger("engine")->info("workspace=suspended name={} tag={}", name, tag);
  return w;
}

Result<WorkspaceInfo> Workspaces::resume(const std::string& name) {
  NameLockHolder held;
  auto w = lock_and_load(name, &held);
  if (!w) return w;
  compute_status(*w, backend_->running_sandboxes());
  if (w->status == "running") {
    return make_error(ErrorCode::kInvalidArgument, "workspace " + name + " is already running");
  }
  // A stale workspace's dead sandbox leaves a record behind; clear it.
  if (!w->sandbox_id.empty()) (void)backend_->stop(w->sandbox_id);
  std::string from = w->current_state_tag.empty() ? w->source_snapshot_tag : w->current_state_tag;
  auto id = backend_->fork(from, w->memory_limit_mib, w->per_child_netns);
  if (!id) return tl::unexpected(id.error().wrap("resume workspace " + name));
  w->sandbox_id = *id;
  w->status = "running";
  if (auto st = save(*w); !st) {
    (void)backend_->stop(*id);
    return tl::unexpected(st.error().wrap("resume workspace " + name));
  }
  logger("engine")->info("workspace=resumed name={} sandbox={} from={}", name, *id, from);
  return w;
}

}  // namespace forkd::engine

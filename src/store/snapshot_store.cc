#include "store/snapshot_store.h"

#include <dirent.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "base/files.h"
#include "base/paths.h"
#include "base/subprocess.h"

namespace forkd::store {

using Json = nlohmann::json;

namespace {

constexpr const char* kStagingPrefix = ".staging-";
constexpr const char* kPendingPrefix = ".pending-";

Json pending_json(const PendingTag& p) {
  return {{"tag", p.tag},         {"status", p.status},         {"error", p.error},
          {"branched_from", p.branched_from}, {"pause_ms", p.pause_ms},
          {"created_at", p.created_at}, {"pid", p.pid}};
}

std::optional<PendingTag> parse_pending(const std::string& text) {
  Json j = Json::parse(text, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  PendingTag p;
  try {
    p.tag = j.at("tag").get<std::string>();
    p.status = j.at("status").get<std::string>();
    p.error = j.value("error", "");
    p.branched_from = j.value("branched_from", "");
    p.pause_ms = j.value("pause_ms", 0.0);
    p.created_at = j.value("created_at", int64_t{0});
    p.pid = j.value("pid", 0);
  } catch (const Json::exception&) {
    return std::nullopt;
  }
  if (!is_safe_name(p.tag)) return std::nullopt;
  if (p.status == "writing" && (p.pid <= 0 || !process_alive(p.pid))) {
    p.status = "failed";
    p.error = "the process writing it (pid " + std::to_string(p.pid) + ") died";
  }
  return p;
}

}  // namespace

SnapshotStore::SnapshotStore(std::string home) : root_(std::move(home) + "/snapshots") {}

Status SnapshotStore::validate_tag(const std::string& tag) {
  if (!is_safe_name(tag)) {
    return make_error(ErrorCode::kInvalidArgument,
                      "invalid tag '" + tag + "': use 1-64 characters from A-Z a-z 0-9 _ -");
  }
  return {};
}

bool SnapshotStore::exists(const std::string& tag) const {
  return is_safe_name(tag) && path_exists(dir(tag) + "/snapshot.json");
}

std::vector<SnapshotMeta> SnapshotStore::list() const {
  std::vector<SnapshotMeta> out;
  DIR* d = ::opendir(root_.c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (!is_safe_name(name)) continue;  // skips ".", "..", staging dirs
    auto m = load(name);
    if (m) out.push_back(std::move(*m));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(),
            [](const SnapshotMeta& a, const SnapshotMeta& b) { return a.tag < b.tag; });
  return out;
}

Result<SnapshotMeta> SnapshotStore::load(const std::string& tag) const {
  FORKD_TRY(validate_tag(tag));
  auto text = read_file(dir(tag) + "/snapshot.json", 1 << 20);
  if (!text) {
    if (text.error().code() != ErrorCode::kNotFound) {
      return tl::unexpected(text.error().wrap("tag " + tag));
    }
    std::string known;
    for (const auto& m : list()) known += (known.empty() ? "" : ", ") + m.tag;
    return make_error(ErrorCode::kNotFound, "unknown tag '" + tag + "'; known tags: " +
                                                (known.empty() ? "(none)" : known));
  }
  Json j = Json::parse(*text, nullptr, false);
  if (j.is_discarded()) {
    return make_error(ErrorCode::kInvalidArgument, "tag " + tag + ": snapshot.json is not JSON");
  }
  auto m = SnapshotMeta::from_json(j);
  if (!m) return tl::unexpected(m.error().wrap("tag " + tag));
  if (m->tag != tag) {
    return make_error(ErrorCode::kInvalidArgument,
                      "tag " + tag + ": snapshot.json names tag " + m->tag);
  }
  return m;
}

bool SnapshotStore::stamp_matches(const std::string& tag_dir, const std::string& role,
                                  const std::string& sha) const {
  auto text = read_file(tag_dir + "/.verified." + role, 4096);
  if (!text) return false;
  std::string want = sha + " " + file_identity(tag_dir + "/" + snapshot_file_name(role));
  return *text == want;
}

Status SnapshotStore::record_stamp(const std::string& tag_dir, const std::string& role,
                                   const std::string& sha) const {
  std::string id = file_identity(tag_dir + "/" + snapshot_file_name(role));
  if (id.empty()) return make_error(ErrorCode::kNotFound, "stamp " + role + ": file missing");
  return write_file_atomic(tag_dir + "/.verified." + role, sha + " " + id);
}

Status SnapshotStore::verify(const SnapshotMeta& meta) const {
  std::string d = dir(meta.tag);
  if (meta.status != "ready") {
    return make_error(ErrorCode::kUnavailable,
                      "tag " + meta.tag + " is " + meta.status + ", not ready");
  }
  for (const auto& [role, f] : meta.files) {
    std::string path = d + "/" + snapshot_file_name(role);
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      return make_error(ErrorCode::kChecksumMismatch,
                        "tag " + meta.tag + ": " + role + " file " + path + " is missing");
    }
    if (static_cast<uint64_t>(st.st_size) != f.size) {
      return make_error(ErrorCode::kChecksumMismatch,
                        "tag " + meta.tag + ": " + role + " file " + path + " has " +
                            std::to_string(st.st_size) + " bytes, snapshot.json says " +
                            std::to_string(f.size) + " (truncated or replaced)");
    }
  }
  for (const auto& [role, f] : meta.files) {
    if (role != "vmstate" && stamp_matches(d, role, f.sha256)) continue;
    std::string path = d + "/" + snapshot_file_name(role);
    auto sha = sha256_file(path);
    if (!sha) return tl::unexpected(sha.error().wrap("tag " + meta.tag + ": hash " + role));
    if (*sha != f.sha256) {
      return make_error(ErrorCode::kChecksumMismatch,
                        "tag " + meta.tag + ": " + role + " file " + path +
                            " does not match its checksum in snapshot.json (corrupt)");
    }
    if (role != "vmstate") (void)record_stamp(d, role, f.sha256);
  }
  return {};
}

Result<std::string> SnapshotStore::stage(const std::string& tag) const {
  FORKD_TRY(validate_tag(tag));
  FORKD_TRY(make_dirs(root_));
  std::string staging = root_ + "/" + kStagingPrefix + tag + "-" + std::to_string(::getpid());
  FORKD_TRY(remove_tree(staging));
  FORKD_TRY(make_dirs(staging));
  return staging;
}

Status SnapshotStore::commit(const std::string& staging, SnapshotMeta meta, bool replace) const {
  for (auto& [role, f] : meta.files) {
    std::string path = staging + "/" + snapshot_file_name(role);
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return errno_error(errno, "commit: stat " + path);
    auto sha = sha256_file(path);
    if (!sha) return tl::unexpected(sha.error().wrap("commit"));
    f.size = static_cast<uint64_t>(st.st_size);
    f.sha256 = *sha;
    FORKD_TRY(record_stamp(staging, role, *sha));
  }
  meta.status = "ready";
  FORKD_TRY(write_file_atomic(staging + "/snapshot.json", meta.to_json().dump(2) + "\n"));
  std::string final_dir = dir(meta.tag);
  std::string old;
  if (path_exists(final_dir)) {
    if (!replace) {
      return make_error(ErrorCode::kAlreadyExists,
                        "tag " + meta.tag + " already exists; use --force to replace it");
    }
    old = root_ + "/.old-" + meta.tag + "-" + std::to_string(::getpid());
    if (::rename(final_dir.c_str(), old.c_str()) != 0) {
      return errno_error(errno, "move aside " + final_dir);
    }
  }
  FORKD_TRY(rename_durable(staging, final_dir));
  if (!old.empty()) (void)remove_tree(old);
  return {};
}

Status SnapshotStore::remove(const std::string& tag) const {
  FORKD_TRY(validate_tag(tag));
  std::string d = dir(tag);
  if (!path_exists(d)) {
    if (auto p = pending(tag); p && p->status == "failed") {
      end_pending(tag);  // deleting a failed branch clears its record
      return {};
    } else if (p) {
      return make_error(ErrorCode::kAlreadyExists,
                        "tag " + tag + " is still being written; delete it when it is ready");
    }
    return make_error(ErrorCode::kNotFound, "unknown tag '" + tag + "'");
  }
  // Rename first so a half-removed tag is never visible under its name.
  std::string doomed = root_ + "/.removing-" + tag + "-" + std::to_string(::getpid());
  if (::rename(d.c_str(), doomed.c_str()) != 0) return errno_error(errno, "remove tag " + tag);
  return remove_tree(doomed);
}

Status SnapshotStore::begin_pending(const PendingTag& p, bool replace) const {
  FORKD_TRY(validate_tag(p.tag));
  FORKD_TRY(make_dirs(root_));
  if (!replace && exists(p.tag)) {
    return make_error(ErrorCode::kAlreadyExists, "tag " + p.tag + " already exists");
  }
  std::string path = root_ + "/" + kPendingPrefix + p.tag + ".json";
  if (auto old = pending(p.tag); old && old->status == "failed") {
    ::unlink(path.c_str());  // a failed attempt does not block a new one
  }
  auto fd = open_file(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (!fd) {
    if (fd.error().sys_errno() == EEXIST) {
      return make_error(ErrorCode::kAlreadyExists,
                        "tag " + p.tag + " is being written by another branch");
    }
    return tl::unexpected(fd.error());
  }
  FORKD_TRY(write_all(fd->get(), pending_json(p).dump() + "\n"));
  if (::fsync(fd->get()) != 0) return errno_error(errno, "fsync " + path);
  return {};
}

Status SnapshotStore::update_pending(const PendingTag& p) const {
  return write_file_atomic(root_ + "/" + kPendingPrefix + p.tag + ".json",
                           pending_json(p).dump() + "\n");
}

void SnapshotStore::end_pending(const std::string& tag) const {
  if (is_safe_name(tag)) ::unlink((root_ + "/" + kPendingPrefix + tag + ".json").c_str());
}

std::optional<PendingTag> SnapshotStore::pending(const std::string& tag) const {
  if (!is_safe_name(tag)) return std::nullopt;
  auto text = read_file(root_ + "/" + kPendingPrefix + tag + ".json", 1 << 16);
  if (!text) return std::nullopt;
  return parse_pending(*text);
}

std::vector<PendingTag> SnapshotStore::list_pending() const {
  std::vector<PendingTag> out;
  for (const auto& name : list_dir_names(root_)) {
    if (name.rfind(kPendingPrefix, 0) != 0 || name.size() < 6 ||
        name.compare(name.size() - 5, 5, ".json") != 0) {
      continue;
    }
    std::string tag = name.substr(strlen(kPendingPrefix), name.size() - strlen(kPendingPrefix) - 5);
    if (auto p = pending(tag)) out.push_back(std::move(*p));
  }
  return out;
}

void SnapshotStore::cleanup_stale() const {
  DIR* d = ::opendir(root_.c_str());
  if (!d) return;
  std::vector<std::string> doomed;
  while (auto* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.rfind(kStagingPrefix, 0) != 0 && name.rfind(".old-", 0) != 0 &&
        name.rfind(".removing-", 0) != 0) {
      continue;
    }
    auto dash = name.find_last_of('-');
    pid_t owner = static_cast<pid_t>(std::atoi(name.c_str() + dash + 1));
    if (owner > 0 && owner != ::getpid() && process_alive(owner)) continue;
    doomed.push_back(root_ + "/" + name);
  }
  ::closedir(d);
  for (const auto& p : doomed) (void)remove_tree(p);
}

}  // namespace forkd::store

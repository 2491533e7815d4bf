#include "store/snapshot_store.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "base/files.h"
#include "base/paths.h"
#include "base/subprocess.h"

namespace forkd::store {

using Json = nlohmann::json;

namespace {

constexpr const char* kStagingPrefix = ".staging-";

// The identity of one version of a file: a rewrite, truncation or chmod changes it.
std::string stat_identity(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return "";
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" +
         std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec) + ":" + std::to_string(st.st_ctim.tv_sec) + "." +
         std::to_string(st.st_ctim.tv_nsec);
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
  std::string want = sha + " " + stat_identity(tag_dir + "/" + snapshot_file_name(role));
  return *text == want;
}

Status SnapshotStore::record_stamp(const std::string& tag_dir, const std::string& role,
                                   const std::string& sha) const {
  std::string id = stat_identity(tag_dir + "/" + snapshot_file_name(role));
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
  if (!path_exists(d)) return make_error(ErrorCode::kNotFound, "unknown tag '" + tag + "'");
  // Rename first so a half-removed tag is never visible under its name.
  std::string doomed = root_ + "/.removing-" + tag + "-" + std::to_string(::getpid());
  if (::rename(d.c_str(), doomed.c_str()) != 0) return errno_error(errno, "remove tag " + tag);
  return remove_tree(doomed);
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

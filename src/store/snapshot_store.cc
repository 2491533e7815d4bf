#include "store/snapshot_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>
#include <thread>

#include "base/files.h"
#include "base/json_get.h"
#include "base/paths.h"
#include "base/random.h"
#include "base/subprocess.h"
#include "store/chain.h"
#include "store/file_digest.h"

namespace forkd::store {

using Json = nlohmann::json;

namespace {

constexpr const char* kStagingPrefix = ".staging-";
constexpr const char* kPendingPrefix = ".pending-";

Json pending_json(const PendingTag& p) {
  return {{"tag", p.tag},
          {"status", p.status},
          {"error", p.error},
          {"branched_from", p.branched_from},
          {"pause_ms", p.pause_ms},
          {"created_at", p.created_at},
          {"pid", p.pid}};
}

std::optional<PendingTag> parse_pending(const std::string& text) {
  Json j = json::parse_untrusted(text);
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
  return p;
}

// Leftover directories of a tag's writers: <prefix><tag>-<kSuffixHex hex digits>.
constexpr const char* kLeftoverPrefixes[] = {".staging-", ".old-", ".removing-"};
constexpr size_t kSuffixHex = 16;

// The tag a leftover name belongs to, or "" when name is not a leftover.
std::string leftover_tag(const std::string& name) {
  for (const char* prefix : kLeftoverPrefixes) {
    size_t plen = strlen(prefix);
    if (name.size() <= plen + kSuffixHex + 1 || name.compare(0, plen, prefix) != 0) continue;
    if (name[name.size() - kSuffixHex - 1] != '-') continue;
    std::string tag = name.substr(plen, name.size() - plen - kSuffixHex - 1);
    return is_safe_name(tag) ? tag : "";
  }
  return "";
}

std::string leftover_name(const char* prefix, const std::string& tag) {
  return std::string(prefix) + tag + "-" + random_hex(kSuffixHex / 2);
}

}  // namespace

SnapshotStore::SnapshotStore(std::string home)
    : home_(std::move(home)), root_(home_ + "/snapshots") {}

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
  Json j = json::parse_untrusted(*text);
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
                                  const std::string& digest) const {
  auto text = read_file(tag_dir + "/.verified." + role, 4096);
  if (!text) return false;
  std::string want = digest + " " + file_identity(tag_dir + "/" + snapshot_file_name(role));
  return *text == want;
}

Status SnapshotStore::record_stamp(const std::string& tag_dir, const std::string& role,
                                   const std::string& digest) const {
  std::string id = file_identity(tag_dir + "/" + snapshot_file_name(role));
  if (id.empty()) return make_error(ErrorCode::kNotFound, "stamp " + role + ": file missing");
  return write_file_atomic(tag_dir + "/.verified." + role, digest + " " + id);
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
    if (role != "vmstate" && stamp_matches(d, role, f.digest())) continue;
    std::string path = d + "/" + snapshot_file_name(role);
    auto sum = file_digest(path, f);
    if (!sum) return tl::unexpected(sum.error().wrap("tag " + meta.tag + ": hash " + role));
    if (*sum != f.digest()) {
      return make_error(ErrorCode::kChecksumMismatch,
                        "tag " + meta.tag + ": " + role + " file " + path +
                            " does not match its checksum in snapshot.json (corrupt)");
    }
    if (role != "vmstate") (void)record_stamp(d, role, f.digest());
  }
  return {};
}

Result<FileLock> SnapshotStore::lock_tag(const std::string& tag) const {
  FORKD_TRY(validate_tag(tag));
  FORKD_TRY(make_dirs(root_, 0700));
  auto lock = FileLock::try_lock(lock_path(tag), "tag " + tag);
  if (!lock) {
    if (lock.error().code() == ErrorCode::kAlreadyExists) {
      return make_error(ErrorCode::kAlreadyExists,
                        "tag " + tag + " is being written or removed by another operation");
    }
    return tl::unexpected(lock.error());
  }
  // Whatever an earlier writer of this tag left is nobody's now: we hold the lock.
  for (const auto& name : list_dir_names(root_)) {
    if (leftover_tag(name) == tag) (void)remove_tree(root_ + "/" + name);
  }
  return lock;
}

Result<std::string> SnapshotStore::make_staging(const std::string& tag) const {
  FORKD_TRY(validate_tag(tag));
  std::string staging = root_ + "/" + leftover_name(kStagingPrefix, tag);
  if (::mkdir(staging.c_str(), 0710) != 0) return errno_error(errno, "mkdir " + staging);
  return staging;
}

Result<FileLock> SnapshotStore::lock_tag_waiting(const std::string& tag,
                                                 std::chrono::milliseconds wait) const {
  auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    auto lock = lock_tag(tag);
    if (lock || lock.error().code() != ErrorCode::kAlreadyExists ||
        std::chrono::steady_clock::now() >= deadline) {
      return lock;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

Status SnapshotStore::record_content_hash(const SnapshotMeta& link,
                                          const std::string& sha256) const {
  const std::string& tag = link.tag;
  auto lock = lock_tag_waiting(tag, std::chrono::seconds(10));
  if (!lock) return tl::unexpected(lock.error().wrap("record the content hash of tag " + tag));
  auto m = load(tag);
  if (!m) return tl::unexpected(m.error());
  if (!m->same_link_as(link)) {
    return make_error(ErrorCode::kFailedPrecondition,
                      "tag " + tag + " was replaced while its memory was being assembled");
  }
  if (!m->content_pending) {
    if (m->content_hash() == sha256) return {};
    return make_error(ErrorCode::kChecksumMismatch, "tag " + tag + ": its memory hashes to " +
                                                        sha256 + ", its record says " +
                                                        m->content_hash());
  }
  m->content_pending = false;
  m->memory_sha256 = sha256;
  return write_file_atomic(dir(tag) + "/snapshot.json", m->to_json().dump(2) + "\n", 0600);
}

namespace {

std::string dependents_error(const std::string& tag, const std::vector<std::string>& deps,
                             const std::string& advice) {
  std::string names;
  for (const auto& d : deps) names += (names.empty() ? "" : ", ") + d;
  return "tag " + tag + " is the parent of " + names + "; " + advice;
}

}  // namespace

Result<FileEntry> hash_file_entry(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return errno_error(errno, "stat " + path);
  auto sha = sha256_file(path);
  if (!sha) return tl::unexpected(sha.error());
  return FileEntry::with_sha256(static_cast<uint64_t>(st.st_size), *sha);
}

Status SnapshotStore::commit(const std::string& staging, SnapshotMeta meta, bool replace,
                             bool hashes_known) const {
  for (auto& [role, f] : meta.files) {
    std::string path = staging + "/" + snapshot_file_name(role);
    if (hashes_known) {
      struct stat st;
      if (::stat(path.c_str(), &st) != 0) return errno_error(errno, "commit: stat " + path);
      if (static_cast<uint64_t>(st.st_size) != f.size) {
        return make_error(ErrorCode::kChecksumMismatch,
                          "commit: " + path + " has " + std::to_string(st.st_size) +
                              " bytes, expected " + std::to_string(f.size));
      }
    } else {
      auto entry = hash_file_entry(path);
      if (!entry) return tl::unexpected(entry.error().wrap("commit"));
      f = *entry;
    }
    FORKD_TRY(record_stamp(staging, role, f.digest()));
  }
  meta.status = "ready";
  FORKD_TRY(write_file_atomic(staging + "/snapshot.json", meta.to_json().dump(2) + "\n", 0600));
  FORKD_TRY(fsync_path(staging));
  // A link appears only while its parent is what it was made from. Other links of the same
  // parent commit one at a time here (milliseconds each), hence the wait.
  FileLock parent_lock;
  if (meta.parent_tag) {
    const std::string& parent = *meta.parent_tag;
    auto lock = lock_tag_waiting(parent, std::chrono::seconds(10));
    if (!lock) return tl::unexpected(lock.error().wrap("commit " + meta.tag));
    parent_lock = std::move(*lock);
    auto pm = exists(parent)
                  ? load(parent)
                  : Result<SnapshotMeta>(tl::unexpected(Error(ErrorCode::kNotFound, "gone")));
    if (!pm || pm->content_hash() != meta.parent_content_hash.value_or("")) {
      return make_error(ErrorCode::kFailedPrecondition,
                        "tag " + meta.tag + ": its parent " + parent +
                            " was removed or replaced while it was being written");
    }
  }
  std::string final_dir = dir(meta.tag);
  if (!path_exists(final_dir)) {
    // RENAME_NOREPLACE: a tag that appeared in between (it cannot, under the lock; a manual
    // mkdir can) is never overwritten.
    if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_NOREPLACE) !=
        0) {
      if (errno == EEXIST) {
        return make_error(ErrorCode::kAlreadyExists, "tag " + meta.tag + " already exists");
      }
      return errno_error(errno, "rename " + staging + " -> " + final_dir);
    }
    return fsync_path(root_);
  }
  if (!replace) {
    return make_error(ErrorCode::kAlreadyExists,
                      "tag " + meta.tag + " already exists; use --force to replace it");
  }
  if (auto deps = direct_dependents(*this, meta.tag); !deps.empty()) {
    return make_error(ErrorCode::kFailedPrecondition,
                      dependents_error(meta.tag, deps,
                                       "replacing it would orphan them (remove them first, e.g. "
                                       "forkd rmi " +
                                           meta.tag + " --cascade)"));
  }
  // One atomic step: the new tag takes the name, the old one takes the staging name.
  if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) != 0) {
    return errno_error(errno, "exchange " + staging + " <-> " + final_dir);
  }
  (void)fsync_path(root_);
  // The old tag now sits at the staging name: move it to an .old- name (so the caller's staging
  // cleanup has nothing to do) and remove it; children running from it keep their mappings.
  std::string old = root_ + "/" + leftover_name(".old-", meta.tag);
  if (::rename(staging.c_str(), old.c_str()) == 0) (void)remove_tree(old);
  return {};
}

Status SnapshotStore::remove(const std::string& tag, bool refuse_dependents) const {
  FORKD_TRY(validate_tag(tag));
  std::string d = dir(tag);
  auto lock = lock_tag(tag);
  if (!lock) return tl::unexpected(lock.error());
  if (!path_exists(d)) {
    // Under the lock, a record is a failed (or dead) write's: deleting the tag clears it.
    if (path_exists(root_ + "/" + kPendingPrefix + tag + ".json")) {
      end_pending(tag);
      return {};
    }
    return make_error(ErrorCode::kNotFound, "unknown tag '" + tag + "'");
  }
  if (refuse_dependents) {
    if (auto deps = direct_dependents(*this, tag); !deps.empty()) {
      return make_error(ErrorCode::kFailedPrecondition,
                        dependents_error(tag, deps,
                                         "remove them first, or use cascade (remove them too) "
                                         "or force (leave them orphaned)"));
    }
  }
  end_pending(tag);  // a failed rewrite's record of this tag goes with it
  // Rename first so a half-removed tag is never visible under its name.
  std::string doomed = root_ + "/" + leftover_name(".removing-", tag);
  if (::rename(d.c_str(), doomed.c_str()) != 0) return errno_error(errno, "remove tag " + tag);
  (void)fsync_path(root_);
  return remove_tree(doomed);
}

Status SnapshotStore::begin_pending(const PendingTag& p, bool replace) const {
  FORKD_TRY(validate_tag(p.tag));
  if (!replace && exists(p.tag)) {
    return make_error(ErrorCode::kAlreadyExists, "tag " + p.tag + " already exists");
  }
  // The caller holds the tag's lock, so any record already there is from a dead or failed
  // writer: replace it.
  return update_pending(p);
}

Status SnapshotStore::update_pending(const PendingTag& p, bool durable) const {
  const std::string path = root_ + "/" + kPendingPrefix + p.tag + ".json";
  const std::string text = pending_json(p).dump() + "\n";
  return durable ? write_file_atomic(path, text, 0600) : replace_file(path, text, 0600);
}

void SnapshotStore::end_pending(const std::string& tag) const {
  if (is_safe_name(tag)) ::unlink((root_ + "/" + kPendingPrefix + tag + ".json").c_str());
}

std::optional<PendingTag> SnapshotStore::pending(const std::string& tag) const {
  if (!is_safe_name(tag)) return std::nullopt;
  auto text = read_file(root_ + "/" + kPendingPrefix + tag + ".json", 1 << 16);
  if (!text) return std::nullopt;
  auto p = parse_pending(*text);
  // A writer holds the tag's lock for as long as it lives: a free lock means it died.
  if (p && p->status == "writing" && !FileLock::held(lock_path(tag))) {
    p->status = "failed";
    p->error = "the process writing it (pid " + std::to_string(p->pid) + ") died";
  }
  return p;
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

int SnapshotStore::cleanup_stale() const {
  int removed = 0;
  std::set<std::string> tags;
  for (const auto& name : list_dir_names(root_)) {
    if (auto t = leftover_tag(name); !t.empty()) tags.insert(t);
  }
  // Records that still say "writing" on disk (a settled failure is left alone: locking its tag
  // on every call would race a user's retry of that very tag).
  for (const auto& p : list_pending()) {
    auto text = read_file(root_ + "/" + kPendingPrefix + p.tag + ".json", 1 << 16);
    auto raw = text ? parse_pending(*text) : std::nullopt;
    if (raw && raw->status == "writing" && p.status == "failed") tags.insert(p.tag);
  }
  for (const auto& tag : tags) {
    // Only under the tag's lock: a live writer keeps its own.
    auto lock = FileLock::try_lock(lock_path(tag), "tag " + tag);
    if (!lock) continue;
    for (const auto& name : list_dir_names(root_)) {
      if (leftover_tag(name) == tag && remove_tree(root_ + "/" + name)) ++removed;
    }
    // A record still saying "writing" under a free lock: its writer died. It becomes a lasting
    // "failed" record (someone may be polling a 202 for this tag) until the tag is deleted.
    auto text = read_file(root_ + "/" + kPendingPrefix + tag + ".json", 1 << 16);
    auto p = text ? parse_pending(*text) : std::nullopt;
    if (p && p->status == "writing") {
      p->status = "failed";
      p->error = "the process writing it (pid " + std::to_string(p->pid) + ") died";
      if (update_pending(*p)) ++removed;
    }
  }
  return removed;
}

}  // namespace forkd::store

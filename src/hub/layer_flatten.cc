#include "hub/layer_flatten.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <string_view>
#include <unordered_set>

#include "base/tree_at.h"
#include "base/unique_fd.h"

namespace forkd::hub {
namespace {

// Bytes of path the per-layer bookkeeping (created set, deferred directory times) may hold: a
// layer of millions of long names must not grow memory without bound.
constexpr uint64_t kMaxLayerPathBytes = 256ull << 20;

using Comps = std::vector<std::string>;

tl::unexpected<Error> invalid_layer(std::string message) {
  return make_error(ErrorCode::kInvalidArgument, std::move(message));
}

std::string join(const Comps& comps, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    if (i > 0) out += '/';
    out += comps[i];
  }
  return out;
}

// Splits a tar path into components: one leading "./" is stripped, "." and empty components
// dropped; absolute paths and ".." are refused. An empty result names the root itself.
Result<Comps> split_path(std::string_view raw, size_t max_path) {
  if (raw.empty()) return invalid_layer("empty path");
  if (raw.size() > max_path) return invalid_layer("path longer than " + std::to_string(max_path));
  if (raw.find('\0') != std::string_view::npos) return invalid_layer("NUL in path");
  if (raw.substr(0, 2) == "./") raw.remove_prefix(2);
  if (!raw.empty() && raw[0] == '/') return invalid_layer("absolute path refused");
  Comps out;
  size_t pos = 0;
  while (pos <= raw.size()) {
    size_t end = raw.find('/', pos);
    if (end == std::string_view::npos) end = raw.size();
    std::string_view c = raw.substr(pos, end - pos);
    if (c == "..") return invalid_layer("'..' component refused");
    if (!c.empty() && c != ".") out.emplace_back(c);
    pos = end + 1;
  }
  return out;
}

class LayerApplier {
 public:
  LayerApplier(const std::string& layer, int root_fd, const FlattenLimits& limits,
               FlattenStats* stats)
      : layer_(layer), root_(root_fd), limits_(limits), stats_(stats) {}

  Status run(archive* a) {
    std::string last = "(none)";
    for (;;) {
      archive_entry* e = nullptr;
      int r = archive_read_next_header(a, &e);
      if (r == ARCHIVE_EOF) break;
      if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
        return invalid_layer("layer " + layer_ + ": after entry '" + last +
                             "': corrupt archive: " + archive_message(a));
      }
      if (stats_->entries >= limits_.max_entries) {
        return invalid_layer("layer " + layer_ + ": image has more than max_entries (" +
                             std::to_string(limits_.max_entries) + ") entries");
      }
      ++stats_->entries;
      const char* path = archive_entry_pathname(e);
      if (path == nullptr) path = archive_entry_pathname_utf8(e);
      if (path == nullptr) {
        return invalid_layer("layer " + layer_ + ": after entry '" + last + "': unreadable path");
      }
      last = path;
      Status st = apply_entry(a, e, last);
      if (!st) return tl::unexpected(st.error().wrap("layer " + layer_ + ": entry '" + last + "'"));
    }
    // Directory mtimes last, deepest first: creating their entries has moved them.
    for (auto it = dir_times_.rbegin(); it != dir_times_.rend(); ++it) {
      auto parent = open_dir_in_root(root_, it->comps, it->comps.size() - 1, false);
      if (parent) ::utimensat(parent->get(), it->comps.back().c_str(), it->ts, AT_SYMLINK_NOFOLLOW);
    }
    return {};
  }

 private:
  struct DirTime {
    Comps comps;
    timespec ts[2];
  };
  struct Meta {
    uid_t uid;
    gid_t gid;
    mode_t perm;
    timespec ts[2];  // atime, mtime
  };

  static std::string archive_message(archive* a) {
    const char* m = archive_error_string(a);
    return m != nullptr ? m : "unknown libarchive error";
  }

  Status apply_entry(archive* a, archive_entry* e, const std::string& raw) {
    auto comps = split_path(raw, limits_.max_path);
    if (!comps) return tl::unexpected(comps.error());
    const int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
    if (size < 0) return invalid_layer("negative size");
    const uint64_t max = limits_.max_total_bytes;
    if (static_cast<uint64_t>(size) > max || stats_->bytes > max - static_cast<uint64_t>(size)) {
      return make_error(ErrorCode::kNoSpace,
                        "image exceeds max_total_bytes (" + std::to_string(max) + ")");
    }
    stats_->bytes += static_cast<uint64_t>(size);
    const mode_t type = archive_entry_filetype(e);
    if (comps->empty()) {  // "./": the root itself, whose metadata is the caller's
      if (type != AE_IFDIR) return invalid_layer("names the root but is not a directory");
      ++stats_->dirs;
      return {};
    }
    const size_t n = comps->size();
    const std::string base = comps->back();
    for (const std::string& c : *comps) {  // aufs bookkeeping (.wh..wh.plnk/, .wh..wh.aufs)
      if (c.rfind(".wh..wh.", 0) == 0 && c != ".wh..wh..opq") {
        return skip(raw + ": aufs metadata not applied");
      }
    }
    if (base.rfind(".wh.", 0) == 0) {
      if (base == ".wh..wh..opq") {
        ++stats_->whiteouts;
        FORKD_TRY(note_created(*comps, n - 1));
        comps->pop_back();
        auto dir = open_dir_in_root(root_, *comps, n - 1, true);
        if (!dir) return tl::unexpected(dir.error());
        return prune_children(*comps);
      }
      comps->back() = base.substr(4);
      if (comps->back().empty() || comps->back() == "." || comps->back() == "..") {
        return invalid_layer("whiteout of an invalid name");
      }
      return whiteout(*comps);
    }
    if (type == AE_IFCHR && archive_entry_rdev(e) == 0) return whiteout(*comps);  // overlayfs
    FORKD_TRY(note_created(*comps, n));
    auto parent = open_dir_in_root(root_, *comps, n - 1, true);
    if (!parent) return tl::unexpected(parent.error());
    const int pfd = parent->get();
    if (const char* target = archive_entry_hardlink(e)) return make_hardlink(pfd, *comps, target);
    auto meta = meta_of(e);
    if (!meta) return tl::unexpected(meta.error());
    switch (type) {
      case AE_IFDIR:
        return make_dir(pfd, *comps, *meta);
      case AE_IFREG:
        return make_file(a, pfd, base, e, static_cast<uint64_t>(size), *meta);
      case AE_IFLNK:
        return make_symlink(pfd, base, e, *meta);
      default:
        break;
    }
    // Device nodes, FIFOs, sockets: never created from an untrusted image, but they do replace
    // what a lower layer had at the path.
    FORKD_TRY(remove_at(pfd, base));
    std::string kind = type == AE_IFCHR    ? "character device"
                       : type == AE_IFBLK  ? "block device"
                       : type == AE_IFIFO  ? "fifo"
                       : type == AE_IFSOCK ? "socket"
                                           : "entry of unknown type";
    if (type == AE_IFCHR || type == AE_IFBLK) {
      kind += " " + std::to_string(archive_entry_rdevmajor(e)) + "/" +
              std::to_string(archive_entry_rdevminor(e));
    }
    return skip(raw + ": " + kind + " not created");
  }

  Status skip(std::string why) {
    ++stats_->skipped_count;
    if (stats_->skipped.size() < kMaxSkippedRecorded) stats_->skipped.push_back(std::move(why));
    return {};
  }

  // Remembers comps[0, n) and its ancestors as this layer's: an opaque marker keeps them.
  Status note_created(const Comps& comps, size_t n) {
    for (size_t k = n; k >= 1; --k) {
      std::string p = join(comps, k);
      const size_t len = p.size();
      if (!created_.insert(std::move(p)).second) break;  // its ancestors are in already
      path_bytes_ += len;
      if (path_bytes_ > kMaxLayerPathBytes) return invalid_layer("layer holds too many path bytes");
    }
    return {};
  }

  Status whiteout(const Comps& comps) {
    ++stats_->whiteouts;
    FORKD_TRY(note_created(comps, comps.size() - 1));
    auto dir = open_dir_in_root(root_, comps, comps.size() - 1, false);
    if (!dir) {  // no parent, no lower entry to hide
      int err = dir.error().sys_errno();
      return err == ENOENT || err == ENOTDIR ? Status{} : tl::unexpected(dir.error());
    }
    return prune(dir->get(), comps, nullptr);
  }

  // Hides lower-layer content at comps (dfd is its parent): all of it unless this layer made it,
  // and for a directory this layer made, its lower-layer children (queued when queue is given).
  Status prune(int dfd, Comps comps, std::deque<Comps>* queue) {
    const std::string rel = join(comps, comps.size());
    struct stat st;
    if (::fstatat(dfd, comps.back().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return errno == ENOENT ? Status{} : errno_error(errno, "stat " + rel);
    }
    if (created_.count(rel) == 0) return remove_at(dfd, comps.back());
    if (!S_ISDIR(st.st_mode)) return {};
    if (queue == nullptr) return prune_children(comps);
    queue->push_back(std::move(comps));
    return {};
  }

  // Breadth first with one directory open at a time.
  Status prune_children(const Comps& top) {
    std::deque<Comps> queue{top};
    while (!queue.empty()) {
      Comps comps = std::move(queue.front());
      queue.pop_front();
      auto dir = open_dir_in_root(root_, comps, comps.size(), false);
      if (!dir) return tl::unexpected(dir.error());
      auto names = list_names(dir->get());
      if (!names) return tl::unexpected(names.error());
      for (std::string& child : *names) {
        Comps child_comps = comps;
        child_comps.push_back(std::move(child));
        FORKD_TRY(prune(dir->get(), std::move(child_comps), &queue));
      }
    }
    return {};
  }

  // Clears the path for a new entry; a directory is kept when keep_dir. Returns whether a
  // directory is (still) there.
  Result<bool> clear(int pfd, const std::string& name, bool keep_dir) {
    struct stat st;
    if (::fstatat(pfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return false;
      return errno_error(errno, "stat");
    }
    if (keep_dir && S_ISDIR(st.st_mode)) return true;
    FORKD_TRY(remove_at(pfd, name));
    return false;
  }

  // Owner, permissions (setuid/setgid kept) and times, checked before anything is touched.
  static Result<Meta> meta_of(archive_entry* e) {
    const int64_t u = archive_entry_uid(e), g = archive_entry_gid(e);
    if (u < 0 || u >= UINT32_MAX || g < 0 || g >= UINT32_MAX) {
      return invalid_layer("uid/gid out of range");
    }
    Meta m{static_cast<uid_t>(u),
           static_cast<gid_t>(g),
           static_cast<mode_t>(archive_entry_perm(e) & 07777),
           {}};
    auto nsec = [](long v) { return v >= 0 && v < 1'000'000'000 ? v : 0; };
    m.ts[1] = {archive_entry_mtime(e), nsec(archive_entry_mtime_nsec(e))};
    m.ts[0] = archive_entry_atime_is_set(e)
                  ? timespec{archive_entry_atime(e), nsec(archive_entry_atime_nsec(e))}
                  : m.ts[1];
    return m;
  }

  // chown before chmod: chown clears setuid.
  static Status own(int fd, const Meta& m) {
    if (::fchown(fd, m.uid, m.gid) != 0) return errno_error(errno, "chown");
    if (::fchmod(fd, m.perm) != 0) return errno_error(errno, "chmod");
    return {};
  }

  Status make_dir(int pfd, const Comps& comps, const Meta& m) {
    const std::string& name = comps.back();
    auto is_dir = clear(pfd, name, true);
    if (!is_dir) return tl::unexpected(is_dir.error());
    if (!*is_dir && ::mkdirat(pfd, name.c_str(), 0700) != 0) return errno_error(errno, "mkdir");
    UniqueFd fd(::openat(pfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return errno_error(errno, "open directory");
    FORKD_TRY(own(fd.get(), m));
    path_bytes_ += join(comps, comps.size()).size();
    if (path_bytes_ > kMaxLayerPathBytes) return invalid_layer("layer holds too many path bytes");
    dir_times_.push_back(DirTime{comps, {m.ts[0], m.ts[1]}});
    ++stats_->dirs;
    return {};
  }

  Status make_file(archive* a, int pfd, const std::string& name, archive_entry* e, uint64_t size,
                   const Meta& m) {
    FORKD_TRY(clear(pfd, name, false));
    UniqueFd fd(
        ::openat(pfd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) return errno_error(errno, "create");
    uint64_t written = 0;
    for (;;) {
      const void* buf = nullptr;
      size_t len = 0;
      la_int64_t off = 0;
      int r = archive_read_data_block(a, &buf, &len, &off);
      if (r == ARCHIVE_EOF) break;
      if (r != ARCHIVE_OK) return invalid_layer("corrupt archive: " + archive_message(a));
      if (off < 0 || static_cast<uint64_t>(off) > size || len > size - off) {
        return invalid_layer("data beyond the size in the header");
      }
      for (size_t done = 0; done < len;) {
        ssize_t w = ::pwrite(fd.get(), static_cast<const char*>(buf) + done, len - done,
                             static_cast<off_t>(off + done));
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return errno_error(errno, "write");
        done += static_cast<size_t>(w);
      }
      written += len;
    }
    if (archive_entry_sparse_count(e) == 0 && written != size) {
      return invalid_layer("data is " + std::to_string(written) + " bytes, header says " +
                           std::to_string(size));
    }
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return errno_error(errno, "truncate");
    FORKD_TRY(own(fd.get(), m));
    if (::futimens(fd.get(), m.ts) != 0) return errno_error(errno, "set times");
    ++stats_->files;
    return {};
  }

  Status make_symlink(int pfd, const std::string& name, archive_entry* e, const Meta& m) {
    const char* target = archive_entry_symlink(e);
    if (target == nullptr) target = archive_entry_symlink_utf8(e);
    if (target == nullptr || *target == '\0') return invalid_layer("symlink without a target");
    if (std::strlen(target) > limits_.max_path) return invalid_layer("symlink target too long");
    FORKD_TRY(clear(pfd, name, false));
    if (::symlinkat(target, pfd, name.c_str()) != 0) return errno_error(errno, "symlink");
    if (::fchownat(pfd, name.c_str(), m.uid, m.gid, AT_SYMLINK_NOFOLLOW) != 0) {
      return errno_error(errno, "chown");
    }
    if (::utimensat(pfd, name.c_str(), m.ts, AT_SYMLINK_NOFOLLOW) != 0) {
      return errno_error(errno, "set times");
    }
    ++stats_->symlinks;
    return {};
  }

  Status make_hardlink(int pfd, const Comps& comps, const char* raw_target) {
    auto target = split_path(raw_target, limits_.max_path);
    if (!target) {
      return invalid_layer(std::string("hard link leaving the tree: '") + raw_target +
                           "': " + target.error().message());
    }
    if (target->empty()) return invalid_layer("hard link to the root");
    if (*target == comps) {  // a link to itself: already there
      ++stats_->hardlinks;
      return {};
    }
    auto tdir = open_dir_in_root(root_, *target, target->size() - 1, false);
    struct stat st;
    if (!tdir || ::fstatat(tdir->get(), target->back().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISREG(st.st_mode)) {
      return invalid_layer(std::string("hard link leaving the tree: '") + raw_target +
                           "' is not a regular file in the tree");
    }
    struct stat cur;
    if (::fstatat(pfd, comps.back().c_str(), &cur, AT_SYMLINK_NOFOLLOW) == 0 &&
        cur.st_dev == st.st_dev && cur.st_ino == st.st_ino) {
      ++stats_->hardlinks;  // already that file (the same path through a symlinked parent)
      return {};
    }
    FORKD_TRY(clear(pfd, comps.back(), false));
    if (::linkat(tdir->get(), target->back().c_str(), pfd, comps.back().c_str(), 0) != 0) {
      return errno_error(errno, std::string("link to ") + raw_target);
    }
    ++stats_->hardlinks;
    return {};
  }

  const std::string& layer_;
  const int root_;
  const FlattenLimits& limits_;
  FlattenStats* const stats_;
  std::unordered_set<std::string> created_;  // paths this layer has put in the tree
  std::vector<DirTime> dir_times_;
  uint64_t path_bytes_ = 0;
};

}  // namespace

Status apply_layer(const std::string& layer_path, const std::string& root_dir,
                   const FlattenLimits& limits, FlattenStats* stats) {
  if (stats == nullptr) return make_error(ErrorCode::kInternal, "apply_layer: no stats");
  UniqueFd root(::open(root_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return errno_error(errno, "open root " + root_dir);
  UniqueFd in(::open(layer_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return errno_error(errno, "open layer " + layer_path);
  unsigned char magic[4] = {};
  if (::pread(in.get(), magic, sizeof magic, 0) < 0) {
    return errno_error(errno, "read layer " + layer_path);
  }
  std::unique_ptr<archive, int (*)(archive*)> a(archive_read_new(), archive_read_free);
  if (!a) return make_error(ErrorCode::kInternal, "archive_read_new failed");
  // Only the filter the magic names, and only built in: ARCHIVE_WARN means libarchive would run
  // an external program, which an untrusted layer must not choose.
  int r = ARCHIVE_OK;
  static constexpr unsigned char kGzip[] = {0x1f, 0x8b};
  static constexpr unsigned char kZstd[] = {0x28, 0xb5, 0x2f, 0xfd};
  if (std::memcmp(magic, kGzip, sizeof kGzip) == 0) {
    r = archive_read_support_filter_gzip(a.get());
  } else if (std::memcmp(magic, kZstd, sizeof kZstd) == 0) {
    r = archive_read_support_filter_zstd(a.get());
  }
  if (r != ARCHIVE_OK) {
    return make_error(ErrorCode::kUnavailable, "libarchive lacks built-in gzip/zstd support");
  }
  archive_read_support_format_tar(a.get());
  archive_read_support_format_empty(a.get());
  if (archive_read_open_fd(a.get(), in.get(), 64 << 10) != ARCHIVE_OK) {
    const char* m = archive_error_string(a.get());
    return invalid_layer("layer " + layer_path +
                         ": not a tar archive: " + (m ? m : "unknown error"));
  }
  return LayerApplier(layer_path, root.get(), limits, stats).run(a.get());
}

}  // namespace forkd::hub

#include "engine/guest_tree.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <utility>

#include "base/files.h"
#include "base/tree_at.h"
#include "base/unique_fd.h"

namespace forkd::engine {

namespace {

constexpr uint64_t kBlock = 4096;
constexpr uint64_t kInodeBytes = 256;  // mke2fs's default inode size for ext4

// Owners are set only as root (a tree built by an unprivileged test keeps its user).
Status own_by_root(int fd, const std::string& what) {
  if (::geteuid() != 0) return {};
  if (::fchown(fd, 0, 0) != 0) return errno_error(errno, "chown " + what);
  return {};
}

// The directory `name` beneath root (created 0755 if missing), opened O_PATH.
Result<UniqueFd> dir_in_root(int root_fd, const char* name) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    UniqueFd fd(open_in_root(root_fd, name, O_PATH | O_DIRECTORY));
    if (fd) return fd;
    int err = errno;
    if (err != ENOENT || attempt > 0) {
      return errno_error(err, std::string("open /") + name + " in the image");
    }
    if (::mkdirat(root_fd, name, 0755) != 0 && errno != EEXIST) {
      return errno_error(errno, std::string("mkdir /") + name);
    }
    // EEXIST here: a symlink to something missing; the retry reports it.
  }
  return make_error(ErrorCode::kInternal, "unreachable");
}

Status copy_agent(int dir_fd, const std::string& agent, const std::string& where) {
  auto data = read_file(agent, 256u << 20);
  if (!data) return tl::unexpected(data.error().wrap("read the agent"));
  // Whatever the image had there goes (a file or a symlink; never followed).
  if (::unlinkat(dir_fd, "forkd-agent", 0) != 0 && errno != ENOENT) {
    return errno_error(errno, "remove " + where);
  }
  UniqueFd out(
      ::openat(dir_fd, "forkd-agent", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0755));
  if (!out) return errno_error(errno, "create " + where);
  FORKD_TRY(write_all(out.get(), *data));
  if (::fchmod(out.get(), 0755) != 0) return errno_error(errno, "chmod " + where);
  return own_by_root(out.get(), where);
}

}  // namespace

Result<std::string> prepare_guest_tree(const std::string& root, const std::string& agent) {
  UniqueFd root_fd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!root_fd) return errno_error(errno, "open " + root);
  if (::fchmod(root_fd.get(), 0755) != 0) return errno_error(errno, "chmod " + root);
  FORKD_TRY(own_by_root(root_fd.get(), root));
  // mkdirat never follows a final symlink: an image's `run -> /var/run` stays as it is.
  for (const char* d : {"dev", "proc", "sys", "tmp", "run", "root"}) {
    if (::mkdirat(root_fd.get(), d, 0755) == 0) {
      if (std::string_view(d) == "tmp") (void)::fchmodat(root_fd.get(), d, 01777, 0);
    } else if (errno != EEXIST) {
      return errno_error(errno, std::string("mkdir /") + d);
    }
  }
  auto sbin = dir_in_root(root_fd.get(), "sbin");
  if (!sbin) return tl::unexpected(sbin.error());
  // Where sbin really is, for the image's record (a refresh of the agent writes there).
  std::error_code ec;
  auto real_root = std::filesystem::canonical(root, ec).string();
  auto real_sbin =
      std::filesystem::read_symlink("/proc/self/fd/" + std::to_string(sbin->get()), ec).string();
  if (ec || real_sbin.compare(0, real_root.size(), real_root) != 0) {
    return make_error(ErrorCode::kInternal, "cannot locate /sbin of " + root);
  }
  std::string guest_dir = real_sbin.substr(real_root.size());
  if (guest_dir.empty()) guest_dir = "/";  // sbin -> / : the agent lands at /forkd-agent
  std::string guest_path = guest_dir + (guest_dir == "/" ? "" : "/") + "forkd-agent";
  FORKD_TRY(copy_agent(sbin->get(), agent, guest_path));
  return guest_path;
}

bool tree_has_python(const std::string& root) {
  UniqueFd root_fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root_fd) return false;
  UniqueFd fd(open_in_root(root_fd.get(), "usr/bin/python3", O_PATH));
  struct stat st;
  if (!fd || ::fstat(fd.get(), &st) != 0) return false;
  return S_ISREG(st.st_mode) && (st.st_mode & 0111) != 0;
}

Result<TreeUsage> measure_tree(const std::string& root, uint64_t max_entries) {
  namespace fs = std::filesystem;
  TreeUsage u;
  u.inodes = 1;
  u.bytes = kBlock;
  std::set<std::pair<dev_t, ino_t>> linked;
  std::error_code ec;
  fs::recursive_directory_iterator it(root, fs::directory_options::none, ec);
  if (ec) return make_error(ErrorCode::kIo, "walk " + root + ": " + ec.message());
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) return make_error(ErrorCode::kIo, "walk " + root + ": " + ec.message());
    if (u.inodes > max_entries) {
      return make_error(ErrorCode::kInvalidArgument,
                        "the tree has more than " + std::to_string(max_entries) + " entries");
    }
    struct stat st;
    if (::lstat(it->path().c_str(), &st) != 0)
      return errno_error(errno, "lstat " + it->path().string());
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1 && !linked.insert({st.st_dev, st.st_ino}).second) {
      continue;  // another name of an inode already counted
    }
    u.inodes++;
    if (S_ISREG(st.st_mode)) {
      u.bytes += (static_cast<uint64_t>(st.st_size) + kBlock - 1) / kBlock * kBlock;
    } else if (S_ISDIR(st.st_mode) || (S_ISLNK(st.st_mode) && st.st_size >= 60)) {
      u.bytes += kBlock;  // a directory's first block; a link too long to live in its inode
    }
  }
  return u;
}

Ext4Geometry ext4_geometry(const TreeUsage& usage) {
  Ext4Geometry g;
  g.inodes = usage.inodes + usage.inodes / 4 + 4096;
  uint64_t used = usage.bytes + g.inodes * kInodeBytes;
  uint64_t bytes = used + used * 3 / 10 + (64ull << 20);
  g.size_mib = (bytes + (1u << 20) - 1) >> 20;
  return g;
}

}  // namespace forkd::engine

#include "base/tree_at.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace forkd {

int open_in_root(int root_fd, const std::string& path, uint64_t flags) {
  struct open_how how {};
  how.flags = flags | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  for (int attempt = 0; attempt < 16; ++attempt) {  // EAGAIN: a concurrent rename; retry
    long fd = ::syscall(SYS_openat2, root_fd, path.c_str(), &how, sizeof how);
    if (fd >= 0 || (errno != EAGAIN && errno != EINTR)) return static_cast<int>(fd);
  }
  return -1;
}

Result<UniqueFd> open_dir_in_root(int root_fd, const std::vector<std::string>& comps, size_t n,
                                  bool create) {
  UniqueFd cur(::fcntl(root_fd, F_DUPFD_CLOEXEC, 0));
  if (!cur) return errno_error(errno, "dup root fd");
  std::string prefix;
  for (size_t i = 0; i < n; ++i) {
    const char* name = comps[i].c_str();
    if (i > 0) prefix += '/';
    prefix += comps[i];
    constexpr int kStep = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    int fd = ::openat(cur.get(), name, kStep);
    int err = errno;
    if (fd < 0 && err == ENOENT && create) {
      if (::mkdirat(cur.get(), name, 0755) != 0 && errno != EEXIST) {
        return errno_error(errno, "mkdir " + prefix);
      }
      fd = ::openat(cur.get(), name, kStep);
      err = errno;
    }
    if (fd < 0 && (err == ENOTDIR || err == ELOOP)) {
      fd = open_in_root(root_fd, prefix, O_PATH | O_DIRECTORY | O_CLOEXEC);
      err = errno;
    }
    if (fd < 0) return errno_error(err, "open directory " + prefix);
    cur.reset(fd);
  }
  return cur;
}

Result<std::vector<std::string>> list_names(int dir_fd) {
  int fd = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno_error(errno, "open directory for listing");
  DIR* dir = ::fdopendir(fd);
  if (dir == nullptr) {
    int err = errno;
    ::close(fd);
    return errno_error(err, "fdopendir");
  }
  std::vector<std::string> names;
  while (const dirent* de = ::readdir(dir)) {
    if (std::strcmp(de->d_name, ".") != 0 && std::strcmp(de->d_name, "..") != 0) {
      names.emplace_back(de->d_name);
    }
  }
  ::closedir(dir);
  return names;
}

Status remove_at(int dir_fd, const std::string& name) {
  struct stat st;
  if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return errno == ENOENT ? Status{} : errno_error(errno, "stat " + name);
  }
  if (!S_ISDIR(st.st_mode)) {
    if (::unlinkat(dir_fd, name.c_str(), 0) != 0 && errno != ENOENT) {
      return errno_error(errno, "unlink " + name);
    }
    return {};
  }
  struct Level {
    std::string name;
    dev_t dev;
    ino_t ino;
    std::vector<std::string> names;  // children not yet removed
  };
  std::vector<Level> stack;
  UniqueFd cur;
  auto enter = [&](int parent, const std::string& child) -> Status {
    UniqueFd fd(::openat(parent, child.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return errno_error(errno, "open " + child);
    struct stat dst;
    if (::fstat(fd.get(), &dst) != 0) return errno_error(errno, "stat " + child);
    auto names = list_names(fd.get());
    if (!names) return tl::unexpected(names.error());
    stack.push_back(Level{child, dst.st_dev, dst.st_ino, std::move(*names)});
    cur = std::move(fd);
    return {};
  };
  FORKD_TRY(enter(dir_fd, name));
  while (!stack.empty()) {
    if (!stack.back().names.empty()) {
      std::string child = std::move(stack.back().names.back());
      stack.back().names.pop_back();
      if (::fstatat(cur.get(), child.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) continue;
        return errno_error(errno, "stat " + child);
      }
      if (S_ISDIR(st.st_mode)) {
        FORKD_TRY(enter(cur.get(), child));
      } else if (::unlinkat(cur.get(), child.c_str(), 0) != 0 && errno != ENOENT) {
        return errno_error(errno, "unlink " + child);
      }
      continue;
    }
    std::string done = std::move(stack.back().name);
    stack.pop_back();
    int parent = dir_fd;
    if (!stack.empty()) {
      UniqueFd up(::openat(cur.get(), "..", O_PATH | O_DIRECTORY | O_CLOEXEC));
      if (!up) return errno_error(errno, "open ..");
      struct stat ust;
      if (::fstat(up.get(), &ust) != 0) return errno_error(errno, "stat ..");
      if (ust.st_dev != stack.back().dev || ust.st_ino != stack.back().ino) {
        return make_error(ErrorCode::kInternal, "tree changed while removing " + name);
      }
      cur = std::move(up);
      parent = cur.get();
    }
    if (::unlinkat(parent, done.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
      return errno_error(errno, "rmdir " + done);
    }
  }
  return {};
}

}  // namespace forkd

#include "base/dir_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "base/files.h"

namespace forkd {

namespace {

constexpr const char* kCreateLock = "/.create.lock";

// flock(LOCK_EX | LOCK_NB), retried on EINTR. True when taken.
Result<bool> try_flock(int fd, int how) {
  for (;;) {
    if (::flock(fd, how | LOCK_NB) == 0) return true;
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return false;
    return errno_error(errno, "flock");
  }
}

// Holds parent's creation lock (blocking: it is only ever held for microseconds by a creator
// or for one directory scan by a reaper).
class CreateLock {
 public:
  static Result<CreateLock> take(const std::string& parent) {
    auto fd = open_file(parent + kCreateLock, O_RDWR | O_CREAT, 0600);
    if (!fd) return tl::unexpected(fd.error());
    while (::flock(fd->get(), LOCK_EX) != 0) {
      if (errno != EINTR) return errno_error(errno, "flock " + parent + kCreateLock);
    }
    return CreateLock(std::move(*fd));
  }

 private:
  explicit CreateLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;  // closing it unlocks
};

}  // namespace

Result<FileLock> FileLock::try_lock(const std::string& path, const std::string& what) {
  // A holder removes the file while it still holds it: if we locked a file that was removed (or
  // replaced) in between, try again on the new one.
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto fd = open_file(path, O_RDWR | O_CREAT, 0600);
    if (!fd) return tl::unexpected(fd.error().wrap("lock " + what));
    auto got = try_flock(fd->get(), LOCK_EX);
    if (!got) return tl::unexpected(got.error().wrap("lock " + what));
    if (!*got) {
      // A moment's LOCK_SH from held() looks like a holder: look once more before refusing.
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      if (attempt < 2) continue;
      return make_error(ErrorCode::kAlreadyExists, what + " is in use by another operation");
    }
    struct stat by_fd = {};
    struct stat by_path = {};
    if (::fstat(fd->get(), &by_fd) == 0 && ::stat(path.c_str(), &by_path) == 0 &&
        by_fd.st_ino == by_path.st_ino && by_fd.st_dev == by_path.st_dev) {
      return FileLock(std::move(*fd), path);
    }
  }
  return make_error(ErrorCode::kAlreadyExists, what + " is in use by another operation");
}

bool FileLock::held(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return false;
  auto got = try_flock(fd.get(), LOCK_SH);
  return got && !*got;  // closing fd drops our shared lock
}

FileLock& FileLock::operator=(FileLock&& other) noexcept {
  if (this != &other) {
    release();
    fd_ = std::move(other.fd_);
    path_ = std::exchange(other.path_, {});
  }
  return *this;
}

void FileLock::release() {
  if (!fd_) return;
  ::unlink(path_.c_str());  // still held: nobody can lock it in between
  fd_.reset();
  path_.clear();
}

Result<LockedDir> LockedDir::create(const std::string& parent, const std::string& name) {
  FORKD_TRY(make_dirs(parent, 0700));
  auto create_lock = CreateLock::take(parent);
  if (!create_lock) return tl::unexpected(create_lock.error());
  std::string path = parent + "/" + name;
  if (::mkdir(path.c_str(), 0710) != 0) return errno_error(errno, "mkdir " + path);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) {
    int err = errno;
    ::rmdir(path.c_str());
    return errno_error(err, "open " + path);
  }
  auto got = try_flock(fd.get(), LOCK_EX);
  if (!got || !*got) {
    ::rmdir(path.c_str());
    return make_error(ErrorCode::kInternal, "lock new directory " + path);
  }
  return LockedDir(std::move(fd), path);
}

Result<LockedDir> LockedDir::lock_existing(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return errno_error(errno, "open " + path);
  auto got = try_flock(fd.get(), LOCK_EX);
  if (!got) return tl::unexpected(got.error().wrap(path));
  if (!*got) return make_error(ErrorCode::kAlreadyExists, path + " is in use");
  LockedDir d(std::move(fd), path);
  d.keep_ = true;  // not ours to remove unless the caller says so
  return d;
}

LockedDir& LockedDir::operator=(LockedDir&& other) noexcept {
  if (this != &other) {
    if (!path_.empty() && !keep_) (void)remove_tree(path_);
    fd_ = std::move(other.fd_);
    path_ = std::exchange(other.path_, {});
    keep_ = std::exchange(other.keep_, true);
  }
  return *this;
}

LockedDir::~LockedDir() {
  if (!path_.empty() && !keep_) (void)remove_tree(path_);
  fd_.reset();
}

void LockedDir::unlock() {
  keep_ = true;
  fd_.reset();
}

bool dir_locked(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return false;
  auto got = try_flock(fd.get(), LOCK_SH);
  return got && !*got;
}

std::vector<std::string> reap_dirs(const std::string& parent,
                                   const std::function<bool(const std::string&)>& is_candidate,
                                   const std::function<void(const std::string&)>& before_remove) {
  std::vector<std::string> removed;
  if (!path_exists(parent)) return removed;
  // Under the creation lock only long enough to lock the candidates: once a directory's lock is
  // ours, nobody else uses it, and creators need not wait for the (slow) removals.
  std::vector<std::pair<std::string, LockedDir>> mine;
  {
    auto create_lock = CreateLock::take(parent);
    if (!create_lock) return removed;
    for (const auto& name : list_dir_names(parent)) {
      if (name.empty() || name[0] == '.' || !is_candidate(name)) continue;
      auto locked = LockedDir::lock_existing(parent + "/" + name);
      if (!locked) continue;  // a live owner
      // Asked again under our lock: its owner may have finished (recorded it) and let go
      // between the first question and the lock.
      if (is_candidate(name)) mine.emplace_back(name, std::move(*locked));
    }
  }
  for (auto& [name, dir] : mine) {
    if (before_remove) before_remove(dir.path());
    if (remove_tree(dir.path())) removed.push_back(name);
  }
  return removed;
}

}  // namespace forkd

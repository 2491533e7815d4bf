#pragma once
// Advisory locks (flock) that mark files and directories as in use by a live process. The kernel
// drops a flock when its last descriptor closes, so a process that dies (kill -9 included)
// releases everything it held: "unlocked" means "no live owner", with no pid to reuse and no
// timeout to guess. Used for tag writes, staging dirs, branch destinations and sandbox run dirs,
// whose leftovers are removed only when their lock is free.
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace forkd {

// An exclusive flock on a lock file, taken without waiting. The file is removed on release (while
// still held, so no one can lock a path that is about to disappear); try_lock re-checks after
// locking that the file it locked is still the one at the path. Move-only.
class FileLock {
 public:
  // kAlreadyExists when another holder has it (`what` names the thing in the message).
  static Result<FileLock> try_lock(const std::string& path, const std::string& what);
  // True when some process holds path's lock right now (a missing file is not held).
  static bool held(const std::string& path);

  FileLock() = default;
  FileLock(FileLock&& other) noexcept
      : fd_(std::move(other.fd_)), path_(std::exchange(other.path_, {})) {}
  FileLock& operator=(FileLock&& other) noexcept;
  ~FileLock() { release(); }
  void release();
  bool locked() const { return fd_.valid(); }

 private:
  FileLock(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  UniqueFd fd_;
  std::string path_;
};

// A directory that is in use while its lock is held (a flock on the directory itself). It is
// created and locked under its parent's creation lock (parent/.create.lock), and reap_dirs()
// takes the same lock, so a reaper never sees a directory between its birth and its lock.
// Move-only. Destroying it removes the directory unless keep() was called; either way the lock
// goes with the object.
class LockedDir {
 public:
  // Creates parent/name (which must not exist) with mode 0700 and locks it.
  static Result<LockedDir> create(const std::string& parent, const std::string& name);
  // Locks an existing directory (kAlreadyExists when someone else holds it).
  static Result<LockedDir> lock_existing(const std::string& path);

  LockedDir() = default;
  LockedDir(LockedDir&& other) noexcept
      : fd_(std::move(other.fd_)),
        path_(std::exchange(other.path_, {})),
        keep_(std::exchange(other.keep_, true)) {}
  LockedDir& operator=(LockedDir&& other) noexcept;
  ~LockedDir();
  const std::string& path() const { return path_; }
  // The directory stays when this object goes (it was committed or renamed elsewhere).
  void keep() { keep_ = true; }
  // Drops the lock now (the directory stays; it is no longer this object's).
  void unlock();

 private:
  LockedDir(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  UniqueFd fd_;
  std::string path_;
  bool keep_ = false;
};

// True when some process holds the directory lock of path.
bool dir_locked(const std::string& path);

// Removes every subdirectory of parent (names not starting with '.') for which
// is_candidate(name) is true and whose lock is free: candidates are locked under parent's
// creation lock (is_candidate is asked again once the lock is ours), then before_remove
// (optional) runs on each, with the directory still locked by us, and it is removed. Returns the
// names removed.
std::vector<std::string> reap_dirs(
    const std::string& parent, const std::function<bool(const std::string&)>& is_candidate,
    const std::function<void(const std::string&)>& before_remove = {});

}  // namespace forkd

#pragma once
// Walking and changing a directory tree that may be hostile (a container layer being applied,
// an image's root file system): every lookup stays beneath the tree's root, never follows a
// symlink by itself, and holds at most one directory open at a time.
#include <cstdint>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace forkd {

// openat2 with root_fd as "/" (RESOLVE_IN_ROOT, no magic links, no mount crossing): no lookup
// (dotdot, absolute symlink) can leave it. O_CLOEXEC is added. -1 with errno on failure.
int open_in_root(int root_fd, const std::string& path, uint64_t flags);

// Opens (O_PATH) the directory comps[0, n) beneath the root, creating missing ones (0755) when
// create. Real directories are walked one O_NOFOLLOW step at a time; a symlink in the way is
// resolved by the kernel from the root (RESOLVE_IN_ROOT), never by us.
Result<UniqueFd> open_dir_in_root(int root_fd, const std::vector<std::string>& comps, size_t n,
                                  bool create);

// Names in the directory dir_fd (any fd of it, O_PATH too), without "." and "..".
Result<std::vector<std::string>> list_names(int dir_fd);

// Removes dir_fd/name and everything beneath it, never following a symlink. Iterative, since a
// hostile tree may be deeper than the fd limit: one directory is open at a time, and climbing
// back through ".." is checked against the device and inode the walk left.
Status remove_at(int dir_fd, const std::string& name);

}  // namespace forkd

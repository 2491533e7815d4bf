#pragma once
// A root filesystem tree on the host (a flattened container image, a recipe's debootstrap) made
// ready to become a guest disk: what forkd-agent needs as the guest's init, and the size of the
// ext4 file system mkfs.ext4 -d builds from it. The tree may come from a registry, so it is
// hostile: every path in it is resolved beneath its root by the kernel (openat2
// RESOLVE_IN_ROOT), as the guest will resolve it, so `sbin -> /usr/sbin` lands in the tree's
// usr/sbin and `sbin -> /` or `sbin -> ../..` never leads out of it.
#include <cstdint>
#include <string>

#include "base/error.h"

namespace forkd::engine {

// Makes root bootable with forkd-agent as init: root itself 0755 owned by root, the mount
// points the agent mounts at boot (dev, proc, sys, tmp, run) and /root where missing, and agent
// copied to sbin/forkd-agent (0755, root-owned, replacing whatever was there). Returns where the
// agent landed, absolute in the guest's view ("/usr/sbin/forkd-agent" when sbin links there).
Result<std::string> prepare_guest_tree(const std::string& root, const std::string& agent);

// True when usr/bin/python3 resolves beneath root to an executable regular file.
bool tree_has_python(const std::string& root);

struct TreeUsage {
  uint64_t bytes = 0;   // file data in 4 KiB blocks, plus a block per directory and long link
  uint64_t inodes = 0;  // entries, hard links counted once
};

// Walks root without following symlinks. More than max_entries entries is kInvalidArgument.
Result<TreeUsage> measure_tree(const std::string& root, uint64_t max_entries = 4'000'000);

// The ext4 file system for a tree: (bytes + inode tables) * 1.3 + 64 MiB, in whole MiB, with
// room for a quarter more inodes than the tree has.
struct Ext4Geometry {
  uint64_t size_mib = 0;
  uint64_t inodes = 0;
};
Ext4Geometry ext4_geometry(const TreeUsage& usage);

}  // namespace forkd::engine

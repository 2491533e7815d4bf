#pragma once
// Checks on what a sandbox's QEMU says about its disk. QEMU names its images (query-block) and
// writes its overlays' backing-file names, and an escaped QEMU would lie in both; forkd, running
// as root, must not act on another sandbox's files or the host's on its word.
#include <string>

#include "base/error.h"
#include "base/subprocess.h"

namespace forkd::engine {

// True for a file directly in dir (dir + "/" + a name with no slash, not "." or "..").
bool file_directly_in(const std::string& dir, const std::string& path);

// The disk's active image, as QEMU named it, must be a regular file (not a link) directly in
// the sandbox's directory, where forkd makes every layer and QEMU can make nothing (its group
// may only pass through), and named as forkd names layers (overlay*.qcow2, not the record). Returns the uid and gid that own it when they are not this process's
// (a jailed QEMU's), for the tools that then follow its chain.
Result<std::optional<SpawnOptions::Credentials>> check_active_image(const std::string& source_dir,
                                                                    const std::string& path);

// The raw base at the bottom of the chain must be the base image of a tag under snapshots_root
// (a regular file); returns its real path.
Result<std::string> check_tag_base(const std::string& snapshots_root, const std::string& base);

}  // namespace forkd::engine

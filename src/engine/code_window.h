#pragma once
// Where a child's TCG code buffer stands right after its restore, per tag: the 2 MiB step
// (vmm/code_pages.h) the last measured child of the tag had reached. The next children keep the
// buffer from that step on in small pages while they are idle (VmConfig::code_window), so an idle
// child holds only the pages TCG wrote there instead of whole huge pages.
//
// A hint, not a record: $FORKD_HOME/cache/code-window/, one small file per tag (named like the
// overlay templates, by the tag dir and its memory's content hash), replaced atomically without
// a flush. A missing, damaged or stale hint costs memory, never correctness: the window is only
// a choice of page size.
#include <optional>
#include <string>
#include <vector>

#include "engine/config.h"
#include "store/snapshot_meta.h"

namespace forkd::engine {

// The tag's hint file; empty for a tag without a memory content hash (no hint).
std::string code_window_path(const EngineConfig& cfg, const std::string& tag_dir,
                             const store::SnapshotMeta& meta);

// The step the hint file at path holds; nullopt when there is none or it does not read as one.
std::optional<int> read_code_window(const std::string& path);

// Records step at path, unless it holds that step already. Failures are ignored (a hint).
void note_code_window(const std::string& path, int step);

// gc: removes hints (and staging files older than a minute) no ready tag of this home names.
// Returns their names.
std::vector<std::string> sweep_code_windows(const EngineConfig& cfg);

}  // namespace forkd::engine

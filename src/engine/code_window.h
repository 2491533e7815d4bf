#pragma once
// Where an idle child's TCG code buffer stands, per tag: the 2 MiB step (vmm/code_pages.h) an
// idle child of the tag reached. The next children keep that step in small pages
// (VmConfig::code_window), so an idle child holds only the pages TCG wrote there instead of a
// whole huge page.
//
// The first child of a tag notes the step it stands in right after its restore. Some guests keep
// translating for a few seconds after that (a python child moves ~1.3 MiB, a minimal one ~0.1), so
// a child that has settled corrects it: one up kSettledSeconds whose window step is still in
// small pages (no call has run in it), when its first call comes or when it is removed.
//
// A hint, not a record: $FORKD_HOME/cache/code-window/, one small file per tag (named like the
// overlay templates, by the tag dir and its memory's content hash), replaced atomically without
// a flush. A missing, damaged or stale hint costs memory, never correctness: the window is only
// a choice of page size.
#include <optional>
#include <string>
#include <vector>

#include "base/json_get.h"
#include "engine/config.h"
#include "store/snapshot_meta.h"
#include "vmm/vm_process.h"

namespace forkd::engine {

// The tag's hint file; empty for a tag without a memory content hash (no hint).
std::string code_window_path(const EngineConfig& cfg, const std::string& tag_dir,
                             const store::SnapshotMeta& meta);

// The step the hint file at path holds; nullopt when there is none or it does not read as one.
std::optional<int> read_code_window(const std::string& path);

// Records step at path, unless it holds that step already. Failures are ignored (a hint).
void note_code_window(const std::string& path, int step);

// A child's record names its hint by the file's name alone (`code_window_hint`); the path of that
// name for the child whose run dir is sandbox_dir ($FORKD_HOME/sandboxes/ID). Empty for a name
// forkd does not make.
std::string code_window_hint_path(const std::string& sandbox_dir, const std::string& name);

// See the top: notes where the child of record (its QEMU vm, its run dir sandbox_dir) settled, if
// it has. Cheap when it has nothing to do (a child without a window, too young, or called before:
// two 8-byte reads).
inline constexpr int kSettledSeconds = 10;
void note_settled_code_window(vmm::VmProcess& vm, const Json& record,
                              const std::string& sandbox_dir);

// gc: removes hints (and staging files older than a minute) no ready tag of this home names.
// Returns their names.
std::vector<std::string> sweep_code_windows(const EngineConfig& cfg);

}  // namespace forkd::engine

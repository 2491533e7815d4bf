#pragma once
// Tag-level operations that know about chains: detail (depth, ancestors, dependents, sizes),
// removal that refuses to orphan links unless told (cascade or force), and compaction of a chain
// into a new flat base. The JSON shapes are the contract's SnapshotInfo / SnapshotInfoDetail,
// shared by the CLI's --json and the daemon.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/branch.h"
#include "engine/config.h"
#include "store/chain.h"
#include "store/snapshot_meta.h"
#include "store/snapshot_store.h"

namespace forkd::engine {

// SnapshotInfo of a ready tag, and of a tag still being written or failed.
nlohmann::json snapshot_info_json(const EngineConfig& cfg, const store::SnapshotMeta& m);
// A finished branch's answer (CLI --json and the daemon's 201): the new tag's SnapshotInfo plus
// the mode used, timings_ms {pause, switchover, resume, copy, total} and memory_stored_bytes.
nlohmann::json branch_result_json(const EngineConfig& cfg, const BranchResult& r);
nlohmann::json pending_info_json(const EngineConfig& cfg, const store::PendingTag& p);
// Every tag (ready, writing, failed) as SnapshotInfo, sorted by tag.
nlohmann::json list_snapshots_json(const EngineConfig& cfg);

// SnapshotInfoDetail: SnapshotInfo plus sizes and the chain. kNotFound for an unknown tag (a
// writing or failed tag gets its SnapshotInfo only).
Result<nlohmann::json> snapshot_detail_json(const EngineConfig& cfg, const std::string& tag);

enum class RemoveMode { kRefuse, kCascade, kForce };
// Removes a tag (draining its pool; running children keep running). With dependents: kRefuse is
// kFailedPrecondition naming them, kCascade removes them first (deepest first), kForce leaves
// them orphaned (they report a missing parent). Returns the removed tags.
Result<std::vector<std::string>> remove_tag(const EngineConfig& cfg, const std::string& tag,
                                            RemoveMode mode);

// Flattens tag (assembling its chain) into a new base tag `to` with branched_from
// "compact:<tag>". kAlreadyExists if `to` exists, kInvalidArgument if to == tag or unsafe.
Result<store::SnapshotMeta> compact_tag(const EngineConfig& cfg, const std::string& tag,
                                        const std::string& to);

}  // namespace forkd::engine

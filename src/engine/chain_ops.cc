#include "engine/chain_ops.h"

#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <optional>

#include "base/files.h"
#include "engine/pool.h"
#include "engine/restore.h"
#include "store/tag_write.h"

namespace forkd::engine {

namespace {

using Json = nlohmann::json;

// Names the first artifact that is missing or has the wrong size (what a restore would refuse).
std::optional<std::string> artifact_problem(const std::string& dir, const store::SnapshotMeta& m) {
  for (const auto& [role, f] : m.files) {
    std::string path = dir + "/" + store::snapshot_file_name(role);
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return role + " file missing: " + path;
    if (static_cast<uint64_t>(st.st_size) != f.size) {
      return role + " file has " + std::to_string(st.st_size) + " bytes, expected " +
             std::to_string(f.size) + ": " + path;
    }
  }
  return std::nullopt;
}

struct FileSizes {
  uint64_t logical = 0, physical = 0;
};

FileSizes file_sizes(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return {};
  return {static_cast<uint64_t>(st.st_size), static_cast<uint64_t>(st.st_blocks) * 512};
}

Json opt(const std::optional<std::string>& s) { return s ? Json(*s) : Json(); }

Status link_file(const std::string& from, const std::string& to) {
  if (::link(from.c_str(), to.c_str()) != 0) return errno_error(errno, "link " + from);
  return {};
}

}  // namespace

Json snapshot_info_json(const EngineConfig& cfg, const store::SnapshotMeta& m) {
  store::SnapshotStore snaps(cfg.home);
  std::string dir = snaps.dir(m.tag);
  auto problem = artifact_problem(dir, m);
  if (!problem && m.is_link()) {
    // A link whose chain is broken can still spawn from its assembled memory.
    store::MemoryResolver resolver(snaps, snaps.assembled_dir());
    // Ancestors only: dependents would read every tag, for each tag of a listing.
    auto chain = store::walk_ancestors(snaps, m);
    if (!chain.warning.empty() && !path_exists(resolver.assembled_path(m))) {
      problem = chain.warning;
    }
  }
  Json j = {{"tag", m.tag},
            {"dir", dir},
            {"created_at_unix", m.created_at},
            {"status", m.status},
            {"bootable", m.status == "ready" && !problem},
            {"image", m.image},
            {"memory_mib", m.memory_mib},
            {"network", m.network}};
  if (m.branched_from) {
    j["branched_from"] = *m.branched_from;
    j["pause_ms"] = m.pause_ms;
  }
  if (m.parent_tag) j["parent_tag"] = *m.parent_tag;
  if (problem) j["warning"] = *problem;
  return j;
}

Json branch_result_json(const EngineConfig& cfg, const BranchResult& r) {
  Json j = snapshot_info_json(cfg, r.meta);
  j["mode"] = branch_mode_name(r.mode);
  j["timings_ms"] = {{"pause", r.pause_ms},
                     {"switchover", r.switchover_ms},
                     {"resume", r.resume_ms},
                     {"copy", r.copy_ms},
                     {"total", r.total_ms}};
  // The source's disk fold, after the tag was ready (engine/disk_fold.h).
  if (r.folded) j["timings_ms"]["disk_fold"] = r.fold_ms;
  j["memory_stored_bytes"] = r.link_bytes;
  return j;
}

Json pending_info_json(const EngineConfig& cfg, const store::PendingTag& p) {
  Json j = {{"tag", p.tag},
            {"dir", store::SnapshotStore(cfg.home).dir(p.tag)},
            {"created_at_unix", p.created_at},
            {"status", p.status},
            {"bootable", false},
            {"branched_from", p.branched_from},
            {"pause_ms", p.pause_ms}};
  if (!p.error.empty()) j["warning"] = p.error;
  return j;
}

Json list_snapshots_json(const EngineConfig& cfg) {
  store::SnapshotStore snaps(cfg.home);
  std::map<std::string, Json> by_tag;
  for (const auto& p : snaps.list_pending()) by_tag[p.tag] = pending_info_json(cfg, p);
  // A committed tag wins over a stale pending record of the same name.
  for (const auto& m : snaps.list()) by_tag[m.tag] = snapshot_info_json(cfg, m);
  Json arr = Json::array();
  for (auto& [tag, j] : by_tag) arr.push_back(std::move(j));
  return arr;
}

Result<Json> snapshot_detail_json(const EngineConfig& cfg, const std::string& tag) {
  store::SnapshotStore snaps(cfg.home);
  FORKD_TRY(store::SnapshotStore::validate_tag(tag));
  if (!snaps.exists(tag)) {
    if (auto p = snaps.pending(tag)) return pending_info_json(cfg, *p);
  }
  auto m = snaps.load(tag);
  if (!m) return tl::unexpected(m.error());
  auto chain = store::chain_info(snaps, tag);
  if (!chain) return tl::unexpected(chain.error());
  Json j = snapshot_info_json(cfg, *m);
  std::string dir = snaps.dir(tag);
  FileSizes mem;
  for (const char* role : {"memory", "memory_diff", "memory_pages"}) {
    if (!m->files.count(role)) continue;
    auto s = file_sizes(dir + "/" + store::snapshot_file_name(role));
    if (std::string(role) != "memory_pages") mem.logical += s.logical;
    mem.physical += s.physical;
  }
  j["memory_logical_bytes"] = mem.logical;
  j["memory_physical_bytes"] = mem.physical;
  j["vmstate_bytes"] = file_sizes(dir + "/" + store::snapshot_file_name("vmstate")).logical;
  j["parent_tag"] = opt(m->parent_tag);
  j["parent_content_hash"] = opt(m->parent_content_hash);
  j["content_hash"] = m->content_hash();
  if (m->content_pending) j["content_pending"] = true;  // until its memory is first assembled
  j["chain_depth"] = chain->depth;
  j["ancestors"] = chain->ancestors;
  j["dependents"] = chain->dependents;
  if (!chain->warning.empty()) j["chain_warning"] = chain->warning;
  if (m->is_link()) {
    store::MemoryResolver resolver(snaps, snaps.assembled_dir());
    j["assembled_bytes"] = file_sizes(resolver.assembled_path(*m)).physical;
  }
  return j;
}

Result<std::vector<std::string>> remove_tag(const EngineConfig& cfg, const std::string& tag,
                                            RemoveMode mode) {
  store::SnapshotStore snaps(cfg.home);
  FORKD_TRY(store::SnapshotStore::validate_tag(tag));
  std::vector<std::string> doomed;
  if (snaps.exists(tag)) {
    auto deps = store::direct_dependents(snaps, tag);
    if (!deps.empty() && mode == RemoveMode::kRefuse) {
      std::string names;
      for (const auto& d : deps) names += (names.empty() ? "" : ", ") + d;
      return make_error(ErrorCode::kFailedPrecondition,
                        "tag " + tag + " is the parent of " + names +
                            "; remove them first, or use cascade (remove them too) or force "
                            "(leave them orphaned)");
    }
    if (mode == RemoveMode::kCascade) doomed = store::all_descendants(snaps, tag);
  }
  doomed.push_back(tag);
  store::MemoryResolver resolver(snaps, snaps.assembled_dir());
  std::vector<std::string> removed;
  for (const auto& t : doomed) {
    Pool(cfg).drain(t);
    // The last one (tag itself) is checked again under its lock: a link committed since the
    // check above keeps it (force alone orphans links).
    FORKD_TRY(snaps.remove(t, t == tag && mode != RemoveMode::kForce));
    resolver.forget(t);  // children running from it keep their mappings
    removed.push_back(t);
  }
  return removed;
}

Result<store::SnapshotMeta> compact_tag(const EngineConfig& cfg, const std::string& tag,
                                        const std::string& to) {
  store::SnapshotStore snaps(cfg.home);
  FORKD_TRY(store::SnapshotStore::validate_tag(tag));
  FORKD_TRY(store::SnapshotStore::validate_tag(to));
  if (to == tag) {
    return make_error(ErrorCode::kInvalidArgument, "compact: `to` must differ from the tag");
  }
  auto m = snaps.load(tag);
  if (!m) return tl::unexpected(m.error());
  FORKD_TRY(snaps.verify(*m));
  m = store::MemoryResolver(snaps, snaps.assembled_dir()).settle(*m);  // the new tag takes its hash
  if (!m) return tl::unexpected(m.error());
  auto memory = tag_memory_path(cfg, *m);
  if (!memory) return tl::unexpected(memory.error());

  auto write = store::TagWrite::begin(snaps, to, /*replace=*/false);
  if (!write) return tl::unexpected(write.error().wrap("compact " + tag));
  const std::string* staging = &write->staging();
  store::PendingTag pend;
  pend.tag = to;
  pend.branched_from = "compact:" + tag;
  pend.created_at = static_cast<int64_t>(std::time(nullptr));
  pend.pid = static_cast<int>(::getpid());
  FORKD_TRY(snaps.begin_pending(pend));
  struct Release {
    const store::SnapshotStore& s;
    std::string tag;
    ~Release() { s.end_pending(tag); }
  } release{snaps, to};

  store::SnapshotMeta out = *m;
  out.tag = to;
  out.created_at = static_cast<int64_t>(std::time(nullptr));
  out.parent_tag.reset();
  out.parent_content_hash.reset();
  out.branched_from = "compact:" + tag;
  out.memory_sha256 = m->content_hash();
  out.files.erase("memory_diff");
  out.files.erase("memory_pages");
  out.files["memory"] = {};
  // Every file of a ready tag is immutable, so the new tag shares them by hard link.
  FORKD_TRY(link_file(*memory, *staging + "/memory"));
  std::string dir = snaps.dir(tag);
  for (auto& [role, f] : out.files) {
    if (role == "memory") continue;
    std::string name = store::snapshot_file_name(role);
    FORKD_TRY(link_file(dir + "/" + name, *staging + "/" + name));
  }
  FORKD_TRY(write->commit(out));
  return snaps.load(to);
}

}  // namespace forkd::engine

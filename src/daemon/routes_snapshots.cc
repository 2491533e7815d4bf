// /v1/snapshots: create, list, delete, info.
#include <sys/stat.h>

#include <optional>

#include "base/log.h"
#include "daemon/errors.h"
#include "daemon/request_decode.h"
#include "daemon/routes.h"
#include "engine/pool.h"
#include "engine/snapshot.h"
#include "store/snapshot_store.h"

namespace forkd::daemon {

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

Json snapshot_info(const store::SnapshotStore& snaps, const store::SnapshotMeta& m) {
  std::string dir = snaps.dir(m.tag);
  auto problem = artifact_problem(dir, m);
  Json j = {{"tag", m.tag},
            {"dir", dir},
            {"created_at_unix", m.created_at},
            {"status", m.status},
            {"bootable", m.status == "ready" && !problem},
            {"image", m.image},
            {"memory_mib", m.memory_mib}};
  if (problem) j["warning"] = *problem;
  return j;
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

// The tag from the path, validated, or a 400 already written to res.
std::optional<std::string> path_tag(const httplib::Request& req, httplib::Response& res) {
  std::string tag = req.matches.size() > 1 ? req.matches[1].str() : "";
  if (auto st = store::SnapshotStore::validate_tag(tag); !st) {
    send_error(res, st.error());
    return std::nullopt;
  }
  return tag;
}

void create(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto r = decode_snapshot_create(req.body);
  if (!r) return send_error(res, r.error());
  store::SnapshotStore snaps(ctx.cfg.home);
  if (auto st = store::SnapshotStore::validate_tag(r->tag); !st) return send_error(res, st.error());
  // The contract answers an existing tag with 400 (not the table's 409 for already_exists).
  if (!r->force && snaps.exists(r->tag)) {
    return send_error(res, Error(ErrorCode::kInvalidArgument,
                                 "tag '" + r->tag + "' exists (send \"force\": true to replace)"));
  }
  engine::SnapshotOptions so;
  so.tag = r->tag;
  so.image = r->image;
  so.memory_mib = r->memory_mib;
  so.warmup = r->exec;
  so.warmup_eval = r->eval;
  so.force = r->force;
  so.progress = [](std::string_view line) { logger("daemon")->info("snapshot: {}", line); };
  auto made = engine::create_snapshot(ctx.cfg, so);
  if (!made) return send_error(res, made.error());
  Json j = snapshot_info(snaps, made->meta);
  j["timings_ms"] = {{"boot", made->boot_ms},
                     {"warmup", made->warmup_ms},
                     {"save", made->save_ms},
                     {"commit", made->commit_ms}};
  send_json(res, 201, j);
}

void list(DaemonContext& ctx, httplib::Response& res) {
  store::SnapshotStore snaps(ctx.cfg.home);
  Json arr = Json::array();
  for (const auto& m : snaps.list()) arr.push_back(snapshot_info(snaps, m));
  send_json(res, 200, arr);
}

void remove(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto tag = path_tag(req, res);
  if (!tag) return;
  bool cascade = req.get_param_value("cascade") == "true";
  bool force = req.get_param_value("force") == "true";
  if (cascade && force) {
    return send_error(
        res, Error(ErrorCode::kInvalidArgument, "give ?cascade=true or ?force=true, not both"));
  }
  store::SnapshotStore snaps(ctx.cfg.home);
  // Tags have no dependents until chains land, so cascade and force change nothing yet.
  if (!snaps.exists(*tag)) {
    return send_error(res, Error(ErrorCode::kNotFound, "no snapshot tag '" + *tag + "'"));
  }
  engine::Pool(ctx.cfg).drain(*tag);
  if (auto st = snaps.remove(*tag); !st) return send_error(res, st.error());
  res.status = 204;
}

void info(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto tag = path_tag(req, res);
  if (!tag) return;
  store::SnapshotStore snaps(ctx.cfg.home);
  auto m = snaps.load(*tag);
  if (!m) return send_error(res, m.error());
  Json j = snapshot_info(snaps, *m);
  std::string dir = snaps.dir(*tag);
  auto mem = file_sizes(dir + "/" + store::snapshot_file_name("memory"));
  j["memory_logical_bytes"] = mem.logical;
  j["memory_physical_bytes"] = mem.physical;
  j["vmstate_bytes"] = file_sizes(dir + "/" + store::snapshot_file_name("vmstate")).logical;
  j["parent_tag"] = opt(m->parent_tag);
  j["parent_content_hash"] = opt(m->parent_content_hash);
  j["chain_depth"] = 0;
  j["ancestors"] = Json::array();
  j["dependents"] = Json::array();
  send_json(res, 200, j);
}

}  // namespace

std::vector<Route> snapshot_routes(DaemonContext& ctx) {
  DaemonContext* c = &ctx;
  return {
      {"GET", "/v1/snapshots", "/v1/snapshots",
       [c](const httplib::Request&, httplib::Response& res) { list(*c, res); }},
      {"POST", "/v1/snapshots", "/v1/snapshots",
       [c](const httplib::Request& req, httplib::Response& res) { create(*c, req, res); }},
      {"GET", R"(/v1/snapshots/(.*)/info)", "/v1/snapshots/:tag/info",
       [c](const httplib::Request& req, httplib::Response& res) { info(*c, req, res); }},
      {"DELETE", R"(/v1/snapshots/(.*))", "/v1/snapshots/:tag",
       [c](const httplib::Request& req, httplib::Response& res) { remove(*c, req, res); }},
  };
}

}  // namespace forkd::daemon

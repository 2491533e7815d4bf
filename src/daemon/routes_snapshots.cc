// /v1/snapshots: create, list, delete (cascade/force), info, compact.
#include <sys/stat.h>

#include <optional>

#include "base/log.h"
#include "daemon/errors.h"
#include "daemon/request_decode.h"
#include "daemon/routes.h"
#include "engine/chain_ops.h"
#include "engine/snapshot.h"
#include "store/snapshot_store.h"

namespace forkd::daemon {

namespace {

using Json = nlohmann::json;

// The tag from the path, validated, or a 400 already written to res.
std::optional<std::string> path_tag(const httplib::Request& req, httplib::Response& res) {
  std::string tag = req.matches.size() > 1 ? req.matches[1].str() : "";
  if (auto st = store::SnapshotStore::validate_tag(tag); !st) {
    send_error(res, st.error());
    return std::nullopt;
  }
  return tag;
}

void create_snapshot(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
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
  so.cascade = r->cascade;
  so.network = r->network;
  so.progress = [](std::string_view line) { logger("daemon")->info("snapshot: {}", line); };
  auto made = engine::create_snapshot(ctx.cfg, so);
  if (!made) return send_error(res, made.error());
  Json j = engine::snapshot_info_json(ctx.cfg, made->meta);
  j["timings_ms"] = {{"boot", made->boot_ms},
                     {"warmup", made->warmup_ms},
                     {"settle", made->settle_ms},
                     {"save", made->save_ms},
                     {"commit", made->commit_ms}};
  send_json(res, 201, j);
}

void list_snapshots(DaemonContext& ctx, httplib::Response& res) {
  send_json(res, 200, engine::list_snapshots_json(ctx.cfg));
}

void remove_snapshot(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto tag = path_tag(req, res);
  if (!tag) return;
  bool cascade = req.get_param_value("cascade") == "true";
  bool force = req.get_param_value("force") == "true";
  if (cascade && force) {
    return send_error(
        res, Error(ErrorCode::kInvalidArgument, "give ?cascade=true or ?force=true, not both"));
  }
  auto mode = cascade ? engine::RemoveMode::kCascade
                      : (force ? engine::RemoveMode::kForce : engine::RemoveMode::kRefuse);
  auto removed = engine::remove_tag(ctx.cfg, *tag, mode);
  if (!removed) return send_error(res, removed.error());
  res.status = 204;
}

void info(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto tag = path_tag(req, res);
  if (!tag) return;
  auto j = engine::snapshot_detail_json(ctx.cfg, *tag);
  if (!j) return send_error(res, j.error());
  send_json(res, 200, *j);
}

void compact(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto tag = path_tag(req, res);
  if (!tag) return;
  auto to = decode_compact(req.body);
  if (!to) return send_error(res, to.error());
  if (*to == *tag) {
    return send_error(res, Error(ErrorCode::kInvalidArgument, "`to` must differ from the tag"));
  }
  auto made = engine::compact_tag(ctx.cfg, *tag, *to);
  if (!made) return send_error(res, made.error());
  send_json(res, 200, engine::snapshot_info_json(ctx.cfg, *made));
}

}  // namespace

std::vector<Route> snapshot_routes(DaemonContext& ctx) {
  DaemonContext* c = &ctx;
  return {
      {"GET", "/v1/snapshots", "/v1/snapshots",
       [c](const httplib::Request&, httplib::Response& res) { list_snapshots(*c, res); }},
      {"POST", "/v1/snapshots", "/v1/snapshots",
       [c](const httplib::Request& req, httplib::Response& res) { create_snapshot(*c, req, res); }},
      {"GET", R"(/v1/snapshots/(.*)/info)", "/v1/snapshots/:tag/info",
       [c](const httplib::Request& req, httplib::Response& res) { info(*c, req, res); }},
      {"POST", R"(/v1/snapshots/(.*)/compact)", "/v1/snapshots/:tag/compact",
       [c](const httplib::Request& req, httplib::Response& res) { compact(*c, req, res); }},
      {"DELETE", R"(/v1/snapshots/(.*))", "/v1/snapshots/:tag",
       [c](const httplib::Request& req, httplib::Response& res) { remove_snapshot(*c, req, res); }},
  };
}

}  // namespace forkd::daemon

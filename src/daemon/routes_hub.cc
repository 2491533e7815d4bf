// POST /v1/hub/push and /v1/hub/pull: synchronous (200 with the result) or wait:false (202 with a
// transfer id at once); GET /v1/hub/transfers[/:id] shows progress and the outcome, DELETE
// cancels a running one.
#include <ctime>

#include "base/log.h"
#include "base/thread_root.h"
#include "daemon/errors.h"
#include "daemon/routes.h"
#include "hub/oci_tag.h"
#include "store/snapshot_store.h"

namespace forkd::daemon {

namespace {

using Json = nlohmann::json;

// Runs one push or pull; progress goes to t.
Result<Json> run_transfer(const DaemonContext& ctx, const TransferRequest& r, bool push,
                          Transfer* t) {
  const engine::EngineConfig& cfg = ctx.cfg;
  hub::OciRef ref;
  auto client = hub::open_registry(r.ref, r.plain_http, ctx.registry_ca_file, "", &ref, t->cancel);
  if (!client) return tl::unexpected(client.error());
  store::SnapshotStore snaps(cfg.home);
  auto progress = [t](uint64_t done, uint64_t total) {
    t->done_bytes = done;
    t->total_bytes = total;
  };
  std::string cache = cfg.home + "/cache/oci";
  if (push) {
    auto p = hub::push_tag(snaps, cache, *client, ref, r.tag, progress);
    if (!p) return tl::unexpected(p.error());
    return hub::push_result_json(ref, *p);
  }
  auto p = hub::pull_tag(snaps, cache, *client, ref, r.tag, progress);
  if (!p) return tl::unexpected(p.error());
  return hub::pull_result_json(ref, *p);
}

void transfer(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res, bool push) {
  auto r = decode_transfer(req.body, push);
  if (!r) return send_error(res, r.error());
  auto t = ctx.transfers.start(push ? "push" : "pull", r->ref, r->tag);
  if (!t) {
    return send_error(res, 503,
                      "too many transfers at once (" + std::to_string(TransferTable::kMaxRunning) +
                          "); retry later",
                      "unavailable");
  }
  DaemonContext* c = &ctx;
  auto run = [c, t, rq = *r, push]() -> Result<Json> {
    Result<Json> out = make_error(ErrorCode::kInternal, "the transfer did not finish");
    guarded(
        push ? "push" : "pull", [&] { out = run_transfer(*c, rq, push, t.get()); },
        [&](const std::string& message) { out = make_error(ErrorCode::kInternal, message); });
    if (out) {
      c->transfers.finish(t, *out);
    } else {
      logger("daemon")->warn("event=transfer_failed id={} error={}", t->id, out.error().message());
      c->transfers.fail(t, std::string(error_code_name(out.error().code())), out.error().message());
    }
    return out;
  };
  if (!r->wait) {
    // Joined by the context before it goes (BackgroundWork): `c` outlives the thread.
    ctx.background.spawn(t->kind + " " + r->ref, [run] { (void)run(); });
    return send_json(res, 202, ctx.transfers.get_json(t->id));
  }
  auto out = run();
  if (!out) return send_error(res, out.error());
  send_json(res, 200, *out);
}

}  // namespace

std::vector<Route> hub_routes(DaemonContext& ctx) {
  DaemonContext* c = &ctx;
  return {
      {"POST", R"(/v1/hub/push)", "/v1/hub/push",
       [c](const httplib::Request& req, httplib::Response& res) { transfer(*c, req, res, true); }},
      {"POST", R"(/v1/hub/pull)", "/v1/hub/pull",
       [c](const httplib::Request& req, httplib::Response& res) { transfer(*c, req, res, false); }},
      {"GET", R"(/v1/hub/transfers)", "/v1/hub/transfers",
       [c](const httplib::Request&, httplib::Response& res) {
         send_json(res, 200, c->transfers.list_json());
       }},
      {"DELETE", R"(/v1/hub/transfers/([A-Za-z0-9-]{1,64}))", "/v1/hub/transfers/:id",
       [c](const httplib::Request& req, httplib::Response& res) {
         if (auto st = c->transfers.cancel(req.matches[1]); !st) return send_error(res, st.error());
         send_json(res, 202, c->transfers.get_json(req.matches[1]));
       }},
      {"GET", R"(/v1/hub/transfers/([A-Za-z0-9-]{1,64}))", "/v1/hub/transfers/:id",
       [c](const httplib::Request& req, httplib::Response& res) {
         Json j = c->transfers.get_json(req.matches[1]);
         if (j.is_null()) {
           return send_error(
               res, Error(ErrorCode::kNotFound, "no transfer " + std::string(req.matches[1])));
         }
         send_json(res, 200, j);
       }},
  };
}

}  // namespace forkd::daemon

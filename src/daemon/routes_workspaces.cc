// /v1/workspaces: create, list, get, delete, suspend, resume (engine::Workspaces does the work).
#include <atomic>
#include <memory>

#include "daemon/errors.h"
#include "daemon/request_decode.h"
#include "daemon/routes.h"
#include "engine/workspace.h"

namespace forkd::daemon {

namespace {

using Json = nlohmann::json;
// Co-owned by every workspace handler; lives as long as the route table.
using WorkspacesPtr = std::shared_ptr<engine::Workspaces>;

std::string path_name(const httplib::Request& req) {
  return req.matches.size() > 1 ? req.matches[1].str() : "";
}

void create_workspace(engine::Workspaces& ws, const httplib::Request& req, httplib::Response& res) {
  auto r = decode_workspace_create(req.body);
  if (!r) return send_error(res, r.error());
  auto w = ws.create(r->name, r->snapshot_tag, r->memory_limit_mib, r->per_child_netns);
  if (!w) return send_error(res, w.error());
  send_json(res, 201, engine::workspace_to_json(*w));
}

void list_workspaces(engine::Workspaces& ws, httplib::Response& res) {
  Json arr = Json::array();
  for (const auto& w : ws.list()) arr.push_back(engine::workspace_to_json(w));
  send_json(res, 200, arr);
}

void get_workspace(engine::Workspaces& ws, const httplib::Request& req, httplib::Response& res) {
  auto w = ws.get(path_name(req));
  if (!w) return send_error(res, w.error());
  send_json(res, 200, engine::workspace_to_json(*w));
}

void remove_workspace(engine::Workspaces& ws, const httplib::Request& req, httplib::Response& res) {
  if (auto st = ws.remove(path_name(req)); !st) return send_error(res, st.error());
  res.status = 204;
}

void suspend(DaemonContext& ctx, engine::Workspaces& ws, const httplib::Request& req,
             httplib::Response& res) {
  auto r = decode_workspace_suspend(req.body);
  if (!r) return send_error(res, r.error());
  std::string name = path_name(req);
  // A suspend is a branch: it takes one of the daemon's branch slots (beyond the cap, 503).
  BranchSlot slot(ctx);
  if (!slot.held()) return slot.refuse(res);
  // The sandbox is about to stop: let go of the daemon's agent connection to it first.
  if (auto w = ws.get(name); w && !w->sandbox_id.empty()) ctx.agents.drop(w->sandbox_id);
  auto w = ws.suspend(name, r->live);
  if (!w) return send_error(res, w.error());
  send_json(res, 200, engine::workspace_to_json(*w));
}

void resume(engine::Workspaces& ws, const httplib::Request& req, httplib::Response& res) {
  auto w = ws.resume(path_name(req));
  if (!w) return send_error(res, w.error());
  send_json(res, 200, engine::workspace_to_json(*w));
}

}  // namespace

std::vector<Route> workspace_routes(DaemonContext& ctx) {
  DaemonContext* c = &ctx;
  WorkspacesPtr ws = std::make_shared<engine::Workspaces>(
      ctx.cfg.home, engine::make_engine_workspace_backend(
                        ctx.cfg, [c](const std::string& id) { c->agents.drop(id); }));
  using Fn = void (*)(engine::Workspaces&, const httplib::Request&, httplib::Response&);
  auto bind = [ws](Fn fn) {
    return [ws, fn](const httplib::Request& req, httplib::Response& res) { fn(*ws, req, res); };
  };
  return {
      {"GET", "/v1/workspaces", "/v1/workspaces",
       [ws](const httplib::Request&, httplib::Response& res) { list_workspaces(*ws, res); }},
      {"POST", "/v1/workspaces", "/v1/workspaces", bind(create_workspace)},
      {"POST", R"(/v1/workspaces/(.*)/suspend)", "/v1/workspaces/:name/suspend",
       [c, ws](const httplib::Request& req, httplib::Response& res) {
         suspend(*c, *ws, req, res);
       }},
      {"POST", R"(/v1/workspaces/(.*)/resume)", "/v1/workspaces/:name/resume", bind(resume)},
      {"GET", R"(/v1/workspaces/(.*))", "/v1/workspaces/:name", bind(get_workspace)},
      {"DELETE", R"(/v1/workspaces/(.*))", "/v1/workspaces/:name", bind(remove_workspace)},
  };
}

}  // namespace forkd::daemon

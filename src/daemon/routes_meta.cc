// /healthz, /version, /metrics, and the routes that need the BRANCH issue (501 until it lands).
#include <fmt/format.h>

#include "base/paths.h"
#include "daemon/errors.h"
#include "daemon/routes.h"
#include "engine/registry.h"
#include "store/snapshot_store.h"

namespace forkd::daemon {

namespace {

constexpr int kBranchConcurrencyCap = 4;  // the contract's default; no branches run yet

Handler not_implemented(std::string what) {
  return [what](const httplib::Request&, httplib::Response& res) {
    send_error(res, 501, what + " is not implemented yet (BRANCH issue)", "not_implemented");
  };
}

std::string gauges(const engine::EngineConfig& cfg) {
  size_t snapshots = store::SnapshotStore(cfg.home).list().size();
  size_t active = 0;
  for (const auto& s : engine::list_sandboxes(cfg)) {
    if (s.state == "running") ++active;
  }
  return fmt::format(
      "# HELP forkd_snapshots_total Snapshot tags on disk.\n"
      "# TYPE forkd_snapshots_total gauge\nforkd_snapshots_total {}\n"
      "# HELP forkd_sandboxes_active Running sandboxes.\n"
      "# TYPE forkd_sandboxes_active gauge\nforkd_sandboxes_active {}\n"
      "# HELP forkd_branches_in_flight Branches being written.\n"
      "# TYPE forkd_branches_in_flight gauge\nforkd_branches_in_flight 0\n"
      "# HELP forkd_branch_concurrency_cap Branches allowed at once.\n"
      "# TYPE forkd_branch_concurrency_cap gauge\nforkd_branch_concurrency_cap {}\n"
      "# HELP forkd_build_info Build of this daemon.\n"
      "# TYPE forkd_build_info gauge\nforkd_build_info{{version=\"{}\"}} 1\n",
      snapshots, active, kBranchConcurrencyCap, forkd_version());
}

}  // namespace

std::vector<Route> meta_routes(DaemonContext& ctx) {
  DaemonContext* c = &ctx;
  return {
      {"GET", "/healthz", "/healthz",
       [](const httplib::Request&, httplib::Response& res) {
         send_json(res, 200, {{"ok", true}});
       }},
      {"GET", "/version", "/version",
       [](const httplib::Request&, httplib::Response& res) {
         send_json(res, 200, {{"version", forkd_version()}, {"api", "v1"}});
       }},
      {"GET", "/metrics", "/metrics",
       [c](const httplib::Request&, httplib::Response& res) {
         res.set_content(gauges(c->cfg) + c->metrics.render(), "text/plain; version=0.0.4");
       }},
      {"POST", R"(/v1/sandboxes/(.*)/branch)", "/v1/sandboxes/:id/branch",
       not_implemented("branch")},
      {"POST", R"(/v1/snapshots/(.*)/compact)", "/v1/snapshots/:tag/compact",
       not_implemented("compact")},
      {"GET", "/v1/workspaces", "/v1/workspaces", not_implemented("workspaces")},
      {"POST", "/v1/workspaces", "/v1/workspaces", not_implemented("workspaces")},
      {"GET", R"(/v1/workspaces/(.*))", "/v1/workspaces/:name", not_implemented("workspaces")},
      {"DELETE", R"(/v1/workspaces/(.*))", "/v1/workspaces/:name", not_implemented("workspaces")},
      {"POST", R"(/v1/workspaces/(.*)/(suspend|resume))", "/v1/workspaces/:name/:op",
       not_implemented("workspaces")},
  };
}

}  // namespace forkd::daemon

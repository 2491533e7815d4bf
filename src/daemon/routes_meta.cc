// /healthz, /version, /metrics.
#include <fmt/format.h>

#include "base/paths.h"
#include "daemon/errors.h"
#include "daemon/routes.h"
#include "engine/registry.h"
#include "engine/sandbox_jail.h"
#include "store/snapshot_store.h"

namespace forkd::daemon {

namespace {

std::string gauges(const DaemonContext& ctx) {
  const engine::EngineConfig& cfg = ctx.cfg;
  size_t snapshots = store::SnapshotStore(cfg.home).list().size();
  size_t active = 0;
  for (const auto& s : engine::list_sandboxes(cfg)) {
    if (s.alive()) ++active;
  }
  return fmt::format(
      "# HELP forkd_snapshots_total Snapshot tags on disk.\n"
      "# TYPE forkd_snapshots_total gauge\nforkd_snapshots_total {}\n"
      "# HELP forkd_sandboxes_active Running sandboxes.\n"
      "# TYPE forkd_sandboxes_active gauge\nforkd_sandboxes_active {}\n"
      "# HELP forkd_branches_in_flight Branches being written.\n"
      "# TYPE forkd_branches_in_flight gauge\nforkd_branches_in_flight {}\n"
      "# HELP forkd_branch_concurrency_cap Branches allowed at once.\n"
      "# TYPE forkd_branch_concurrency_cap gauge\nforkd_branch_concurrency_cap {}\n"
      "# HELP forkd_build_info Build of this daemon.\n"
      "# TYPE forkd_build_info gauge\nforkd_build_info{{version=\"{}\"}} 1\n"
      "# HELP forkd_requests_in_flight Connections queued or served (this one included).\n"
      "# TYPE forkd_requests_in_flight gauge\nforkd_requests_in_flight {}\n"
      "# HELP forkd_requests_in_flight_cap Connections allowed at once; beyond: 503.\n"
      "# TYPE forkd_requests_in_flight_cap gauge\nforkd_requests_in_flight_cap {}\n"
      "# HELP forkd_requests_busy_total Connections refused with 503 for the cap.\n"
      "# TYPE forkd_requests_busy_total counter\nforkd_requests_busy_total {}\n"
      "# HELP forkd_execs_in_flight Execs running, all sandboxes.\n"
      "# TYPE forkd_execs_in_flight gauge\nforkd_execs_in_flight {}\n"
      "# HELP forkd_exec_per_sandbox_cap Execs allowed at once per sandbox; beyond: 429.\n"
      "# TYPE forkd_exec_per_sandbox_cap gauge\nforkd_exec_per_sandbox_cap {}\n"
      "# HELP forkd_execs_throttled_total Execs refused with 429 for the per-sandbox cap.\n"
      "# TYPE forkd_execs_throttled_total counter\nforkd_execs_throttled_total {}\n",
      snapshots, active, ctx.branches_in_flight.load(), ctx.branch_cap, forkd_version(),
      ctx.inflight.in_flight.load(), ctx.inflight.cap, ctx.inflight.rejected.load(),
      ctx.exec_slots.total(), ctx.exec_slots.cap(), ctx.exec_slots.rejected());
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
       [c](const httplib::Request&, httplib::Response& res) {
         send_json(
             res, 200,
             {{"version", forkd_version()},
              {"api", "v1"},
              {"boundary", engine::boundary_info(c->cfg.default_limits, c->cfg.expose_address)}});
       }},
      {"GET", "/metrics", "/metrics",
       [c](const httplib::Request&, httplib::Response& res) {
         res.set_content(gauges(*c) + c->metrics.render(), "text/plain; version=0.0.4");
       }},
  };
}

}  // namespace forkd::daemon

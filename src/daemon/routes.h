#pragma once
// Route tables of the daemon. Each handler only decodes the request, calls the engine and maps
// the result (or error) to the contract's response; the engine does the work.
#include <httplib.h>

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "daemon/agent_cache.h"
#include "daemon/limits.h"
#include "daemon/metrics.h"
#include "engine/config.h"

namespace forkd::daemon {

// State shared by every handler; lives as long as the server.
struct DaemonContext {
  explicit DaemonContext(engine::EngineConfig c) : cfg(c), agents(std::move(c)) {}
  engine::EngineConfig cfg;
  Metrics metrics;
  AgentCache agents;
  InflightLimit inflight;
  ExecSlots exec_slots{16};
  // Branches (and workspace suspends) running at once; beyond branch_cap the answer is 503.
  std::atomic<int> branches_in_flight{0};
  int branch_cap = 4;
};

// One of the context's branch slots, held until destroyed (branches and workspace suspends).
class BranchSlot {
 public:
  explicit BranchSlot(DaemonContext& ctx) : ctx_(ctx) {
    held_ = ctx_.branches_in_flight.fetch_add(1) < ctx_.branch_cap;
    if (!held_) ctx_.branches_in_flight.fetch_sub(1);
  }
  BranchSlot(const BranchSlot&) = delete;
  BranchSlot& operator=(const BranchSlot&) = delete;
  ~BranchSlot() {
    if (held_) ctx_.branches_in_flight.fetch_sub(1);
  }
  bool held() const { return held_; }
  // The 503 the contract gives beyond the cap, written to res.
  void refuse(httplib::Response& res) const;

 private:
  DaemonContext& ctx_;
  bool held_ = false;
};

using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;

struct Route {
  std::string method;   // GET | POST | DELETE
  std::string pattern;  // httplib regex over the decoded path
  std::string label;    // the contract's path shape, the metrics and audit route label
  Handler handler;
};

// /healthz, /version, /metrics.
std::vector<Route> meta_routes(DaemonContext& ctx);
// /v1/snapshots...
std::vector<Route> snapshot_routes(DaemonContext& ctx);
// /v1/sandboxes...
std::vector<Route> sandbox_routes(DaemonContext& ctx);
// POST /v1/sandboxes/:id/branch
std::vector<Route> branch_routes(DaemonContext& ctx);
// /v1/workspaces...
std::vector<Route> workspace_routes(DaemonContext& ctx);

}  // namespace forkd::daemon

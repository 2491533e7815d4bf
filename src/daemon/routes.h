#pragma once
// Route tables of the daemon. Each handler only decodes the request, calls the engine and maps
// the result (or error) to the contract's response; the engine does the work.
#include <httplib.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "daemon/agent_cache.h"
#include "daemon/commands.h"
#include "daemon/limits.h"
#include "daemon/metrics.h"
#include "daemon/request_decode.h"
#include "daemon/transfers.h"
#include "engine/config.h"
#include "engine/sandbox.h"

namespace forkd::daemon {

// Threads that outlive the request that started them (a wait:false branch). They are joined when
// the context goes, before anything they use: BackgroundWork is the context's last member.
class BackgroundWork {
 public:
  BackgroundWork() = default;
  BackgroundWork(const BackgroundWork&) = delete;
  BackgroundWork& operator=(const BackgroundWork&) = delete;
  ~BackgroundWork();  // joins every thread
  // Runs body on a new thread under guarded(what, ...); finished threads are joined here.
  void spawn(std::string what, std::function<void()> body);
  int running() const { return running_.load(); }

 private:
  struct Task {
    std::jthread thread;
    std::shared_ptr<std::atomic<bool>> done;  // co-owned by the task's thread
  };
  std::mutex mu_;
  std::vector<Task> tasks_;
  std::atomic<int> running_{0};
};

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
  // Long requests (every POST: exec, eval, fork, snapshot, branch, ...) served at once; beyond
  // the cap the answer is 503 at once. Kept below the worker count, so short requests (healthz,
  // lists, GETs, metrics) always find a worker thread however long the long ones wait.
  std::atomic<int> long_in_flight{0};
  int long_cap = 12;
  std::atomic<uint64_t> long_rejected{0};
  // Collected exec output: the default cap per stream, and the budget shared by every exec.
  size_t max_exec_output = engine::kDefaultMaxOutputBytes;
  engine::OutputBudget exec_output_budget{256ull << 20};
  uint64_t max_file_bytes = 1ull << 30;  // uploads and downloads of /files
  std::string registry_ca_file;          // for push and pull; empty: the system's CAs
  CommandTable commands;
  TransferTable transfers;
  // Last: destroyed (joined) first, while everything its threads use still exists.
  BackgroundWork background;
};

// One of the context's long-request slots, held until destroyed (see DaemonContext::long_cap).
class LongSlot {
 public:
  explicit LongSlot(DaemonContext& ctx) : ctx_(ctx) {
    held_ = ctx_.long_in_flight.fetch_add(1) < ctx_.long_cap;
    if (!held_) {
      ctx_.long_in_flight.fetch_sub(1);
      ctx_.long_rejected.fetch_add(1);
    }
  }
  LongSlot(const LongSlot&) = delete;
  LongSlot& operator=(const LongSlot&) = delete;
  ~LongSlot() {
    if (held_) ctx_.long_in_flight.fetch_sub(1);
  }
  bool held() const { return held_; }

 private:
  DaemonContext& ctx_;
  bool held_ = false;
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
// A handler that reads the request body itself, as it arrives (uploads).
using ReaderHandler =
    std::function<void(const httplib::Request&, httplib::Response&, const httplib::ContentReader&)>;

struct Route {
  std::string method;         // GET | POST | PUT | DELETE
  std::string pattern;        // httplib regex over the decoded path
  std::string label;          // the contract's path shape, the metrics and audit route label
  Handler handler;            // the body, at most --max-body-bytes, is in req.body
  ReaderHandler reader = {};  // instead of handler: the body unread, any size
  // A GET that holds its worker long (a download, a stream) takes a long slot as POSTs do.
  bool long_get = false;
};

// The long slot of the request being handled on this thread (null for short requests). A
// handler whose answer streams after it returns keeps a copy in its content provider, so the
// slot is held until the stream ends.
std::shared_ptr<LongSlot> current_long_slot();

// /healthz, /version, /metrics.
std::vector<Route> meta_routes(DaemonContext& ctx);
// /v1/snapshots...
std::vector<Route> snapshot_routes(DaemonContext& ctx);
// /v1/sandboxes...
std::vector<Route> sandbox_routes(DaemonContext& ctx);
// POST /v1/sandboxes/:id/branch
std::vector<Route> branch_routes(DaemonContext& ctx);
// /v1/sandboxes/:id/files...
std::vector<Route> file_routes(DaemonContext& ctx);
// /v1/sandboxes/:id/commands... (streaming and background exec)
std::vector<Route> command_routes(DaemonContext& ctx);
// POST /v1/sandboxes/:id/exec with `stream` or `background` (r, decoded): answers it.
void exec_streaming_or_background(DaemonContext& ctx, const std::string& id, const ExecRequest& r,
                                  httplib::Response& res);
// /v1/workspaces...
std::vector<Route> workspace_routes(DaemonContext& ctx);
// /v1/hub/... (push, pull, transfers)
std::vector<Route> hub_routes(DaemonContext& ctx);

}  // namespace forkd::daemon

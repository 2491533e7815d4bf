// POST /v1/sandboxes/:id/branch: synchronous (201, tag ready) or wait:false (202 as soon as the
// source runs again; the tag is listed as writing, then ready or failed).
#include <chrono>
#include <future>
#include <memory>
#include <thread>

#include "base/log.h"
#include "base/paths.h"
#include "base/thread_root.h"
#include "daemon/errors.h"
#include "daemon/request_decode.h"
#include "daemon/routes.h"
#include "engine/branch.h"
#include "engine/chain_ops.h"

namespace forkd::daemon {

BackgroundWork::~BackgroundWork() {
  std::lock_guard lock(mu_);
  tasks_.clear();  // jthread joins
}

void BackgroundWork::spawn(std::string what, std::function<void()> body) {
  std::lock_guard lock(mu_);
  std::erase_if(tasks_, [](const Task& t) { return t.done->load(); });  // joins finished ones
  auto done = std::make_shared<std::atomic<bool>>(false);
  running_.fetch_add(1);
  try {
    tasks_.push_back({std::jthread([this, what = std::move(what), body = std::move(body), done] {
                        guarded(what, body);
                        running_.fetch_sub(1);
                        *done = true;
                      }),
                      done});
  } catch (...) {  // no thread (EAGAIN): nothing runs, and the request fails
    running_.fetch_sub(1);
    throw;
  }
}

void BranchSlot::refuse(httplib::Response& res) const {
  res.set_header("Retry-After", "1");
  send_error(res, 503,
             "branch concurrency cap reached (" + std::to_string(ctx_.branch_cap) +
                 " at once); retry later",
             "unavailable");
}

namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

void branch(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto t0 = Clock::now();
  std::string id = req.matches.size() > 1 ? req.matches[1].str() : "";
  if (!is_safe_name(id)) {
    return send_error(
        res, Error(ErrorCode::kInvalidArgument, "invalid sandbox id '" + id.substr(0, 80) + "'"));
  }
  auto r = decode_branch(req.body);
  if (!r) return send_error(res, r.error());
  auto mode = engine::parse_branch_mode(r->mode);
  if (!mode) return send_error(res, mode.error());
  auto slot = std::make_shared<BranchSlot>(ctx);
  if (!slot->held()) return slot->refuse(res);
  // Let our agent connection go before the pause (see branch.h); the next request reconnects.
  ctx.agents.drop(id);
  engine::BranchOptions bo;
  bo.sandbox_id = id;
  bo.tag = r->tag;
  bo.mode = *mode;

  DaemonContext* c = &ctx;
  auto observe = [c, t0](double pause_ms) {
    c->metrics.observe_branch(std::chrono::duration<double>(Clock::now() - t0).count(),
                              pause_ms / 1000);
  };
  if (r->wait) {
    auto made = engine::branch_sandbox(ctx.cfg, bo);
    if (!made) return send_error(res, made.error());
    observe(made->pause_ms);
    return send_json(res, 201, engine::branch_result_json(ctx.cfg, *made));
  }

  // wait:false. The branch runs on its own thread; this request answers as soon as the source
  // runs again (or the branch failed before that).
  struct Resumed {
    std::string tag;
    double pause_ms = 0;
    engine::BranchMode mode = engine::BranchMode::kLive;
  };
  auto promise = std::make_shared<std::promise<Result<Resumed>>>();
  auto answered = std::make_shared<std::atomic<bool>>(false);
  auto answer = [promise, answered](Result<Resumed> v) {
    if (!answered->exchange(true)) promise->set_value(std::move(v));
  };
  bo.on_resumed = [answer, observe](const std::string& tag, double pause_ms,
                                    engine::BranchMode used) {
    observe(pause_ms);
    answer(Resumed{tag, pause_ms, used});
  };
  bo.keep_failed_record = true;  // the client polls for the outcome
  auto future = promise->get_future();
  engine::EngineConfig cfg = ctx.cfg;
  // Joined by the context before it goes (BackgroundWork), so the slot and `observe`'s context
  // pointer never outlive what they point to; an exception answers the request with a 500.
  ctx.background.spawn("branch " + id, [cfg, bo, slot, answer] {
    guarded(
        "branch",
        [&] {
          auto made = engine::branch_sandbox(cfg, bo);
          if (!made) {
            logger("daemon")->warn("event=branch_failed source={} error={}", bo.sandbox_id,
                                   made.error().message());
            answer(tl::unexpected(made.error()));
          }
        },
        [&](const std::string& message) {
          answer(tl::unexpected(Error(ErrorCode::kInternal, message)));
        });
  });
  auto v = future.get();
  if (!v) return send_error(res, v.error());
  Json j = {{"tag", v->tag},
            {"dir", store::SnapshotStore(ctx.cfg.home).dir(v->tag)},
            {"created_at_unix", static_cast<int64_t>(std::time(nullptr))},
            {"branched_from", id},
            {"pause_ms", v->pause_ms},
            {"status", "writing"},
            {"bootable", false},
            {"mode", engine::branch_mode_name(v->mode)}};
  send_json(res, 202, j);
}

}  // namespace

std::vector<Route> branch_routes(DaemonContext& ctx) {
  DaemonContext* c = &ctx;
  return {
      {"POST", R"(/v1/sandboxes/(.*)/branch)", "/v1/sandboxes/:id/branch",
       [c](const httplib::Request& req, httplib::Response& res) { branch(*c, req, res); }},
  };
}

}  // namespace forkd::daemon

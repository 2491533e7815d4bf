// /v1/sandboxes: fork, list, get, delete, ping, exec, eval.
#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>

#include "base/json_escape.h"
#include "base/json_get.h"
#include "base/paths.h"
#include "daemon/errors.h"
#include "daemon/request_decode.h"
#include "daemon/routes.h"
#include "daemon/sandbox_access.h"
#include "engine/fork.h"
#include "engine/registry.h"
#include "engine/sandbox_jail.h"
#include "store/snapshot_store.h"

namespace forkd::daemon {

namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// Deadlines of agent calls, so no request holds a worker thread forever on a wedged guest.
constexpr auto kPingDeadline = std::chrono::seconds(10);
constexpr auto kEvalDeadline = std::chrono::seconds(120);

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// SandboxInfo. netns is the child's own namespace (per_child_netns) or null; guest_addr is where
// the agent answers, its socket path.
Json sandbox_info(const engine::EngineConfig& cfg, const engine::SandboxInfo& s) {
  const Json& r = s.record;
  auto tag = r.find("tag");
  Json iso = engine::isolation_info(r);
  Json info = {{"id", s.id},
               {"snapshot_tag", tag != r.end() && tag->is_string() ? *tag : Json()},
               {"netns", nullptr},
               {"guest_addr", cfg.sandboxes_dir() + "/" + s.id + "/agent.sock"},
               {"created_at_unix", json::int_or<int64_t>(r, "created_at", 0)},
               {"pid", s.pid},
               // The limit applied to its QEMU (null when none), not the guest's RAM.
               {"memory_limit_mib", iso["limits"]["memory_mib"]},
               {"memory_mib", json::int_or<int64_t>(r, "memory_mib", 0)},
               {"state", s.state}};
  info.update(iso);
  if (!s.unresponsive_reason.empty()) info["unresponsive_reason"] = s.unresponsive_reason;
  if (!s.failure_reason.empty()) info["reason"] = s.failure_reason;
  return info;
}

std::optional<engine::SandboxInfo> find_sandbox(const engine::EngineConfig& cfg,
                                                const std::string& id) {
  for (auto& s : engine::list_sandboxes(cfg)) {
    if (s.id == id) return std::move(s);
  }
  return std::nullopt;
}

void fork(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto r = decode_fork(req.body);
  if (!r) return send_error(res, r.error());
  if (auto st = store::SnapshotStore::validate_tag(r->snapshot_tag); !st) {
    return send_error(res, st.error());
  }
  auto t0 = Clock::now();
  engine::ForkOptions fo;
  fo.tag = r->snapshot_tag;
  fo.n = r->n;
  fo.limits = engine::limits_of(r->memory_limit_mib.value_or(0), r->cpu_limit.value_or(0),
                                r->pids_limit.value_or(0));
  fo.network = r->network;
  fo.expose = r->expose;
  fo.per_child_netns = r->per_child_netns;
  fo.allow_list = r->allow_list;
  auto forked = engine::fork_children(ctx.cfg, fo);
  if (!forked) return send_error(res, forked.error());
  // The contract's answer is an array of sandboxes, which cannot express a partial failure: a
  // batch with a failed child is removed whole and answered with that child's error.
  const engine::ForkChild* failed = nullptr;
  for (const auto& c : forked->children) {
    if (c.error && !failed) failed = &c;
  }
  if (failed) {
    for (const auto& c : forked->children) {
      if (!c.error && !c.id.empty()) (void)engine::remove_sandbox(ctx.cfg, c.id);
    }
    return send_error(res, failed->error->wrap("fork " + r->snapshot_tag));
  }
  ctx.metrics.observe_spawn(seconds_since(t0));
  auto all = engine::list_sandboxes(ctx.cfg);
  Json arr = Json::array();
  for (const auto& c : forked->children) {
    for (const auto& s : all) {
      if (s.id == c.id) arr.push_back(sandbox_info(ctx.cfg, s));
    }
  }
  send_json(res, 201, arr);
}

void list_sandboxes(DaemonContext& ctx, httplib::Response& res) {
  Json arr = Json::array();
  for (const auto& s : engine::list_sandboxes(ctx.cfg)) arr.push_back(sandbox_info(ctx.cfg, s));
  send_json(res, 200, arr);
}

void get_sandbox(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto id = path_id(req, res);
  if (!id) return;
  auto s = find_sandbox(ctx.cfg, *id);
  if (!s) return send_error(res, Error(ErrorCode::kNotFound, "no sandbox " + *id));
  send_json(res, 200, sandbox_info(ctx.cfg, *s));
}

void remove_sandbox(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto id = path_id(req, res);
  if (!id) return;
  ctx.agents.drop(*id);
  ctx.commands.drop_sandbox(*id);
  if (auto st = engine::remove_sandbox(ctx.cfg, *id); !st) return send_error(res, st.error());
  res.status = 204;
}

void ping(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto id = path_id(req, res);
  if (!id) return;
  Json out;
  bool ok = with_sandbox(ctx, *id, res, [&](engine::Sandbox& sb) -> std::optional<Error> {
    auto r = sb.ping(kPingDeadline);
    if (!r) return r.error();
    // forkd's agent_lang is the language of the warm worker evals run in; ping returns once that
    // worker has started, so warmup_ready is whether there is one.
    auto py = r->find("python");
    bool python = py != r->end() && py->is_boolean() && py->get<bool>();
    out = {{"pong", true},
           {"pid", json::int_or<int64_t>(*r, "pid", 0)},
           {"agent_lang", python ? "python" : "sh"},
           {"warmup_ready", python}};
    if (auto np = r->find("numpy"); np != r->end() && np->is_string()) out["numpy_version"] = *np;
    return std::nullopt;
  });
  if (ok) send_json(res, 200, out);
}

// The answer to an exec. The daemon holds its body until the client has read it (maybe slowly),
// and guest bytes grow when escaped (a NUL is six bytes in JSON): the output budget is charged
// for the body's size, the streams are cut to what it grants, and the budget comes back only
// once the body is written or the connection is gone.
void send_exec_result(httplib::Response& res, engine::ExecResult& e) {
  auto lease = e.lease ? e.lease : std::make_shared<engine::OutputLease>(nullptr);
  size_t raw = e.stdout_data.size() + e.stderr_data.size();
  size_t esc_out = json_escaped_size(e.stdout_data);
  size_t esc_err = json_escaped_size(e.stderr_data);
  size_t want = esc_out + esc_err;
  size_t allowed = raw + (want > raw ? lease->take(want - raw) : 0);
  if (want > allowed) {
    // stderr (usually the short, telling one) keeps up to half; stdout takes the rest.
    size_t err_room = std::min(esc_err, allowed / 2);
    size_t out_room = allowed - err_room;
    auto cut = [](std::string& s, bool& truncated, size_t room) {
      size_t keep = json_escaped_prefix(s, room);
      if (keep < s.size()) {
        s.resize(keep);
        s.shrink_to_fit();
        truncated = true;
      }
    };
    cut(e.stdout_data, e.stdout_truncated, out_room);
    cut(e.stderr_data, e.stderr_truncated, err_room);
  }
  Json rest = {{"exit_code", e.exit_code},
               {"timed_out", e.timed_out},
               {"duration_ms", e.duration_ms},
               {"truncated", e.stdout_truncated || e.stderr_truncated},
               {"stdout_truncated", e.stdout_truncated},
               {"stderr_truncated", e.stderr_truncated},
               {"stdout_bytes", e.stdout_bytes},
               {"stderr_bytes", e.stderr_bytes}};
  std::string tail = rest.dump();  // {"exit_code":...}
  auto body = std::make_shared<std::string>();
  body->reserve(std::min(want, allowed) + tail.size() + 32);
  *body += "{\"stdout\":\"";
  append_json_escaped(*body, e.stdout_data);
  *body += "\",\"stderr\":\"";
  append_json_escaped(*body, e.stderr_data);
  *body += "\",";
  body->append(tail, 1);
  // The raw streams are not needed any more; the body alone is held (and charged) from here.
  e.stdout_data = std::string();
  e.stderr_data = std::string();
  res.status = 200;
  res.set_content_provider(
      body->size(), "application/json",
      [body](size_t offset, size_t length, httplib::DataSink& sink) {
        if (offset > body->size()) return false;
        return sink.write(body->data() + offset, std::min(length, body->size() - offset));
      },
      [body, lease](bool) {});
}

void exec(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto id = path_id(req, res);
  if (!id) return;
  auto r = decode_exec(req.body);
  if (!r) return send_error(res, r.error());
  if (r->stream || r->background) return exec_streaming_or_background(ctx, *id, *r, res);
  auto slot = acquire_exec_slot(ctx, *id, res);
  if (!slot) return;
  engine::ExecOptions eo = exec_options_of(*r);
  eo.max_output_bytes = r->max_output_bytes ? r->max_output_bytes : ctx.max_exec_output;
  eo.budget = &ctx.exec_output_budget;
  double secs = r->timeout_secs > 0 ? r->timeout_secs : kDefaultExecTimeoutSecs;
  eo.timeout = std::chrono::milliseconds(static_cast<int64_t>(secs * 1000));
  auto t0 = Clock::now();
  Json out;
  std::optional<engine::ExecResult> result;
  bool ok = with_sandbox(ctx, *id, res, [&](engine::Sandbox& sb) -> std::optional<Error> {
    auto e = sb.exec(eo);
    if (!e && e.error().code() == ErrorCode::kGuestCommandNotFound) {
      // What a shell answers: exit 127 with the reason on stderr.
      out = {{"stdout", ""},
             {"stderr", "forkd: " + e.error().message() + "\n"},
             {"exit_code", 127},
             {"timed_out", false},
             {"truncated", false}};
      return std::nullopt;
    }
    if (!e) return e.error();
    result = std::move(*e);
    return std::nullopt;
  });
  if (!ok) return;
  ctx.metrics.observe_exec(seconds_since(t0));
  if (result) return send_exec_result(res, *result);
  send_json(res, 200, out);
}

void eval(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto id = path_id(req, res);
  if (!id) return;
  auto r = decode_eval(req.body);
  if (!r) return send_error(res, r.error());
  Json out;
  bool ok = with_sandbox(ctx, *id, res, [&](engine::Sandbox& sb) -> std::optional<Error> {
    auto e = sb.eval(r->code, kEvalDeadline);
    if (!e) return e.error();
    out = {{"result", e->value ? Json(*e->value) : Json()},
           {"error", e->error ? Json(*e->error) : Json()},
           {"exit_code", e->error ? 1 : 0},
           {"stdout", e->stdout_text}};
    return std::nullopt;
  });
  if (ok) send_json(res, 200, out);
}

}  // namespace

std::vector<Route> sandbox_routes(DaemonContext& ctx) {
  DaemonContext* c = &ctx;
  auto bind = [c](void (*fn)(DaemonContext&, const httplib::Request&, httplib::Response&)) {
    return [c, fn](const httplib::Request& req, httplib::Response& res) { fn(*c, req, res); };
  };
  return {
      {"GET", "/v1/sandboxes", "/v1/sandboxes",
       [c](const httplib::Request&, httplib::Response& res) { list_sandboxes(*c, res); }},
      {"POST", "/v1/sandboxes", "/v1/sandboxes", bind(fork)},
      {"POST", R"(/v1/sandboxes/(.*)/ping)", "/v1/sandboxes/:id/ping", bind(ping)},
      {"POST", R"(/v1/sandboxes/(.*)/exec)", "/v1/sandboxes/:id/exec", bind(exec)},
      {"POST", R"(/v1/sandboxes/(.*)/eval)", "/v1/sandboxes/:id/eval", bind(eval)},
      {"GET", R"(/v1/sandboxes/(.*))", "/v1/sandboxes/:id", bind(get_sandbox)},
      {"DELETE", R"(/v1/sandboxes/(.*))", "/v1/sandboxes/:id", bind(remove_sandbox)},
  };
}

}  // namespace forkd::daemon

// Streaming exec (NDJSON as the output comes) and background commands:
// POST /v1/sandboxes/:id/exec with `stream` or `background`, and /v1/sandboxes/:id/commands...
#include <csignal>
#include <memory>
#include <thread>

#include "base/json_escape.h"
#include "base/json_get.h"
#include "daemon/errors.h"
#include "daemon/request_decode.h"
#include "daemon/routes.h"
#include "daemon/sandbox_access.h"

namespace forkd::daemon {

namespace {

using Json = nlohmann::json;

constexpr double kDefaultWaitSecs = 60;
constexpr double kMaxWaitSecs = 3600;
// A stream waits for output this long per round, and after this much silence writes a keepalive
// line: writing is the only way to learn that the client went away (and to kill its command).
constexpr auto kStreamPoll = std::chrono::seconds(1);
constexpr auto kKeepalive = std::chrono::seconds(2);

Json description_of(const ExecRequest& r) {
  return r.shell ? Json{{"shell", *r.shell}} : Json{{"args", r.args}};
}

engine::ExecOptions exec_options(const ExecRequest& r, const std::string& handle) {
  engine::ExecOptions eo = exec_options_of(r);
  eo.handle = handle;
  double secs = r.timeout_secs > 0 ? r.timeout_secs : r.background ? 0 : kDefaultExecTimeoutSecs;
  eo.timeout = std::chrono::milliseconds(static_cast<int64_t>(secs * 1000));
  return eo;
}

// Runs cmd's exec on a background thread; the command records the outcome.
void start(DaemonContext& ctx, const std::string& sandbox_id, std::shared_ptr<engine::Sandbox> sb,
           std::shared_ptr<Command> cmd, engine::ExecOptions eo) {
  cmd->attach(sb);
  DaemonContext* c = &ctx;
  ctx.background.spawn("command " + cmd->id(), [c, sandbox_id, sb, cmd, eo = std::move(eo)] {
    struct Ended {
      DaemonContext* c;
      ~Ended() { c->commands.ended(); }
    } ended{c};
    auto r = sb->exec(eo, [cmd](const std::string& stream, std::string_view data) {
      cmd->append(stream == "stderr", data);
    });
    if (!r && breaks_connection(r.error())) c->agents.drop(sandbox_id, sb);
    cmd->finish(r);
  });
}

void kill_command(const Command& cmd, int sig) {
  if (auto sb = cmd.sandbox()) (void)sb->signal(cmd.id(), sig);
}

// One NDJSON line per chunk.
void append_chunk_lines(std::string& out, const std::vector<OutputChunk>& chunks) {
  for (const auto& c : chunks) {
    out += c.err ? R"({"type":"stderr","data":")" : R"({"type":"stdout","data":")";
    append_json_escaped(out, c.data);
    out += "\"}\n";
  }
}

// Answers 200 NDJSON: `first` (if any), cmd's output from its first chunk as it comes, then its
// final line. hold is kept until the stream ends (slots). kill_on_cut: a client that goes away
// kills the command (a streaming exec; a background command's stream just stops).
void stream_command(httplib::Response& res, std::shared_ptr<Command> cmd, std::optional<Json> first,
                    std::shared_ptr<void> hold, bool kill_on_cut) {
  struct State {
    uint64_t next = 0;
    std::optional<Json> first;
    bool finished = false;
    std::chrono::steady_clock::time_point last_write = std::chrono::steady_clock::now();
  };
  auto state = std::make_shared<State>();
  state->first = std::move(first);
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "application/x-ndjson",
      [cmd, state, hold](size_t, httplib::DataSink& sink) {
        std::string out;
        if (state->first) {
          out = state->first->dump() + "\n";
          state->first.reset();
          return sink.write(out.data(), out.size());
        }
        auto r = cmd->read(state->next, kStreamPoll);
        state->next = r.next;
        append_chunk_lines(out, r.chunks);
        if (r.done)
          out += cmd->final_line().dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
        auto now = std::chrono::steady_clock::now();
        if (out.empty() && now - state->last_write >= kKeepalive)
          out = "{\"type\":\"keepalive\"}\n";
        if (!out.empty()) {
          if (!sink.write(out.data(), out.size())) return false;
          state->last_write = now;
        }
        if (r.done) {
          state->finished = true;
          sink.done();
        }
        return true;
      },
      [cmd, state, kill_on_cut](bool success) {
        if ((!success || !state->finished) && kill_on_cut && !cmd->done()) {
          cmd->mark_killed();
          kill_command(*cmd, SIGKILL);
        }
      });
}

// The command of a /commands/:cid route, or a 404 written to res.
std::shared_ptr<Command> find_command(DaemonContext& ctx, const httplib::Request& req,
                                      httplib::Response& res, std::string* sandbox_id) {
  auto id = path_id(req, res);
  if (!id) return nullptr;
  *sandbox_id = *id;
  std::string cid = req.matches.size() > 2 ? req.matches[2].str() : "";
  auto cmd = ctx.commands.find(*id, cid);
  if (!cmd) {
    send_error(
        res, Error(ErrorCode::kNotFound, "no command " + cid.substr(0, 80) + " on sandbox " + *id));
  }
  return cmd;
}

Json with_output(const Command& cmd) {
  Json j = cmd.info();
  auto [out, err] = cmd.output();
  j["stdout"] = std::move(out);
  j["stderr"] = std::move(err);
  return j;
}

void list_commands(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto id = path_id(req, res);
  if (!id) return;
  Json arr = Json::array();
  for (const auto& c : ctx.commands.list(*id)) arr.push_back(c->info());
  send_json(res, 200, arr);
}

void get_command(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  std::string sid;
  if (auto cmd = find_command(ctx, req, res, &sid)) send_json(res, 200, cmd->info());
}

void output(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  std::string sid;
  if (auto cmd = find_command(ctx, req, res, &sid)) send_json(res, 200, with_output(*cmd));
}

void stream(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  std::string sid;
  if (auto cmd = find_command(ctx, req, res, &sid)) {
    stream_command(res, cmd, std::nullopt, current_long_slot(), false);
  }
}

void wait(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  std::string sid;
  auto cmd = find_command(ctx, req, res, &sid);
  if (!cmd) return;
  double secs = kDefaultWaitSecs;
  Json j = req.body.empty() ? Json::object() : json::parse_untrusted(req.body);
  if (j.is_discarded() || !j.is_object()) {
    return send_error(res, Error(ErrorCode::kInvalidArgument, "body must be a JSON object"));
  }
  if (auto t = j.find("timeout_secs"); t != j.end() && !t->is_null()) {
    if (!t->is_number() || !(t->get<double>() >= 0 && t->get<double>() <= kMaxWaitSecs)) {
      return send_error(res,
                        Error(ErrorCode::kInvalidArgument, "field 'timeout_secs' must be 0..3600"));
    }
    secs = t->get<double>();
  }
  cmd->wait_done(std::chrono::milliseconds(static_cast<int64_t>(secs * 1000)));
  send_json(res, 200, with_output(*cmd));
}

int signal_number(const Json& v) {
  if (v.is_number_unsigned() && v.get<uint64_t>() >= 1 && v.get<uint64_t>() <= 64) {
    return static_cast<int>(v.get<uint64_t>());
  }
  if (!v.is_string()) return 0;
  std::string s = v.get<std::string>();
  if (s.rfind("SIG", 0) == 0) s = s.substr(3);
  if (s == "KILL") return SIGKILL;
  if (s == "TERM") return SIGTERM;
  if (s == "INT") return SIGINT;
  if (s == "HUP") return SIGHUP;
  if (s == "QUIT") return SIGQUIT;
  if (s == "USR1") return SIGUSR1;
  if (s == "USR2") return SIGUSR2;
  return 0;
}

void kill(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  std::string sid;
  auto cmd = find_command(ctx, req, res, &sid);
  if (!cmd) return;
  Json j = req.body.empty() ? Json::object() : json::parse_untrusted(req.body);
  if (j.is_discarded() || !j.is_object()) {
    return send_error(res, Error(ErrorCode::kInvalidArgument, "body must be a JSON object"));
  }
  int sig = SIGKILL;
  if (auto s = j.find("signal"); s != j.end() && !s->is_null()) {
    sig = signal_number(*s);
    if (sig == 0) {
      return send_error(res, Error(ErrorCode::kInvalidArgument,
                                   "field 'signal' must be KILL, TERM, INT, HUP, QUIT, USR1, USR2 "
                                   "or a number 1..64"));
    }
  }
  // Right after the start the agent may not have registered the handle yet: retry a moment.
  for (int attempt = 0; attempt < 30 && !cmd->done(); ++attempt) {
    auto sb = cmd->sandbox();
    if (!sb) break;
    cmd->mark_killed();  // before the signal: the command may end before the answer comes
    auto st = sb->signal(cmd->id(), sig);
    if (st) {
      // The group usually dies at once: let the answer show it ended.
      if (sig == SIGKILL) cmd->wait_done(std::chrono::seconds(2));
      break;
    }
    if (!cmd->done()) cmd->unmark_killed();
    if (st.error().code() != ErrorCode::kNotFound) return send_error(res, st.error());
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  send_json(res, 200, cmd->info());
}

void remove_command(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  std::string sid;
  auto cmd = find_command(ctx, req, res, &sid);
  if (!cmd) return;
  if (!cmd->done()) {
    cmd->mark_killed();
    kill_command(*cmd, SIGKILL);
  }
  ctx.commands.erase(sid, cmd->id());
  res.status = 204;
}

}  // namespace

void exec_streaming_or_background(DaemonContext& ctx, const std::string& id, const ExecRequest& r,
                                  httplib::Response& res) {
  std::shared_ptr<ExecSlots::Guard> slot;
  if (r.stream) {
    // A streaming exec counts against the sandbox's exec cap as long as it runs.
    slot = acquire_exec_slot(ctx, id, res);
    if (!slot) return;
  }
  auto sb = ctx.agents.get(id);
  if (!sb) return send_error(res, sb.error());
  size_t cap = r.max_output_bytes ? r.max_output_bytes : ctx.max_exec_output;
  auto cmd = ctx.commands.create(id, description_of(r), cap, &ctx.exec_output_budget, r.background);
  if (!cmd) {
    if (cmd.error().code() == ErrorCode::kFailedPrecondition) {
      return send_error(res, 429, cmd.error().message(), "too_many_requests");
    }
    res.set_header("Retry-After", "1");
    return send_error(res, cmd.error());
  }
  start(ctx, id, *sb, *cmd, exec_options(r, (*cmd)->id()));
  if (r.background) return send_json(res, 202, (*cmd)->info());
  struct Hold {
    std::shared_ptr<LongSlot> long_slot;
    std::shared_ptr<ExecSlots::Guard> exec_slot;
  };
  auto hold = std::make_shared<Hold>(Hold{current_long_slot(), slot});
  stream_command(res, *cmd, Json{{"type", "start"}, {"command_id", (*cmd)->id()}}, hold, true);
}

std::vector<Route> command_routes(DaemonContext& ctx) {
  DaemonContext* c = &ctx;
  auto bind = [c](void (*fn)(DaemonContext&, const httplib::Request&, httplib::Response&)) {
    return [c, fn](const httplib::Request& req, httplib::Response& res) { fn(*c, req, res); };
  };
  const std::string base = R"(/v1/sandboxes/([^/]+)/commands)";
  const std::string one = base + R"(/([^/]+))";
  const std::string label = "/v1/sandboxes/:id/commands";
  Route follow{"GET", one + "/stream", label + "/:cid/stream", bind(stream)};
  follow.long_get = true;
  return {
      {"GET", base, label, bind(list_commands)},
      follow,
      {"GET", one + "/output", label + "/:cid/output", bind(output)},
      {"POST", one + "/wait", label + "/:cid/wait", bind(wait)},
      {"POST", one + "/kill", label + "/:cid/kill", bind(kill)},
      {"GET", one, label + "/:cid", bind(get_command)},
      {"DELETE", one, label + "/:cid", bind(remove_command)},
  };
}

}  // namespace forkd::daemon

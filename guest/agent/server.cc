#include "server.h"

#include <string.h>
#include <unistd.h>

#include <exception>
#include <optional>
#include <string>
#include <system_error>
#include <thread>

#include "exec_op.h"
#include "file_ops.h"
#include "log.h"
#include "resumed_fast.h"

namespace forkd::agent {

namespace {

constexpr size_t kReadMax = 256 * 1024;

}  // namespace

Server::Server(Port* port, PythonWorker* python, ResumedOptions opts)
    : port_(port), python_(python), opts_(opts) {
  try {
    lane_thread_ = std::jthread([this](std::stop_token stop) { lane_loop(stop); });
  } catch (const std::system_error&) {
    log_line("no session lane: session requests get threads of their own");
  }
}

Server::~Server() {
  if (lane_thread_.joinable()) {
    lane_thread_.request_stop();
    lane_thread_.join();
  }
}

void Server::lane_loop(std::stop_token stop) {
  for (;;) {
    std::unique_lock lock(lane_mu_);
    if (!lane_cv_.wait(lock, stop, [this] { return !lane_.empty(); })) return;
    auto [req, gen] = std::move(lane_.front());
    lane_.pop_front();
    lock.unlock();
    run_request(req, gen);
  }
}

bool Server::to_lane(Request& req, uint64_t gen) {
  if (!lane_thread_.joinable()) return false;
  {
    std::lock_guard lock(lane_mu_);
    if (lane_.size() >= kLaneDepth) return false;
    lane_.emplace_back(std::move(req), gen);
  }
  lane_cv_.notify_one();
  return true;
}

void Server::run_request(const Request& req, uint64_t gen) {
  // Nothing thrown may leave a request's thread (the lane's least of all).
  AgentResult<OpReply> result = [&]() -> AgentResult<OpReply> {
    try {
      return dispatch(req, gen);
    } catch (const std::exception& e) {
      return agent_error("internal", std::string("request failed: ") + e.what());
    }
  }();
  // Released before the reply goes out, so a host that saw the reply can reuse the slot.
  in_flight_.fetch_sub(1);
  if (req.op == "resumed" || req.op == "hello") sessions_pending_.fetch_sub(1);
  send_reply(req.id, result, gen);
}

void Server::run() {
  proto::FrameDecoder decoder;
  std::string bytes;
  for (;;) {
    bytes.clear();
    if (port_->read_some(&bytes, kReadMax) == ReadEvent::kReset) {
      // The host went away mid-frame (or a clone got a fresh connection): start clean. The port
      // has moved to a new generation, so replies still being computed for the old host are
      // dropped.
      if (decoder.buffered() > 0) log_line("dropping partial frame after disconnect");
      decoder = proto::FrameDecoder();
      continue;
    }
    if (bytes.empty()) continue;
    decoder.feed(bytes);
    // Bounded: each iteration consumes a frame or at least one byte of garbage.
    for (int guard = 0; guard < 100'000; ++guard) {
      auto next = decoder.next();
      if (!next) break;
      if (!*next) {
        log_limited("bad frame: " + next->error().message());
        send_json(error_reply(0, {"bad_request", next->error().message()}), {},
                  port_->generation());
        continue;
      }
      handle_frame(std::move(**next));
    }
  }
}

bool Server::try_flat_resumed(proto::Frame& frame) {
  // Only the reader thread adds session requests, so none can start between this and the run.
  if (sessions_pending_.load() != 0) return false;
  auto r = parse_flat_resumed(frame.json, frame.bin);
  if (!r) return false;
  explicit_bzero(frame.bin.data(), frame.bin.size());  // the seed, now in r
  port_->new_generation();  // as handle_frame does for every session request
  const uint64_t gen = port_->generation();
  // Nothing thrown may leave the reader thread.
  try {
    ResumedOutcome outcome = run_resumed(r->spec, python_, opts_);
    auto text = resumed_reply_text(r->id, outcome);
    std::string wire;
    if (proto::encode_frame(text ? *text : to_wire(ok_reply(r->id, resumed_result(outcome))), {},
                            &wire)) {
      port_->write(wire, gen);
    }
  } catch (const std::exception& e) {
    send_reply(r->id, agent_error("internal", std::string("request failed: ") + e.what()), gen);
  }
  return true;
}

void Server::handle_frame(proto::Frame frame) {
  if (try_flat_resumed(frame)) return;
  // Runs on the reader thread, so this is the generation the frame's bytes arrived on.
  uint64_t gen = port_->generation();
  auto req = parse_request(frame.json, std::move(frame.bin));
  if (!req) {
    log_limited("bad request: " + req.error().error.message);
    send_json(error_reply(req.error().id, req.error().error), {}, gen);
    return;
  }
  if (!is_known_op(req->op)) {
    send_reply(req->id, agent_error("unknown_op", "unknown op: " + req->op.substr(0, 64)), gen);
    return;
  }
  // Answered here, on the reader thread: it shows the host that this agent still reads.
  if (req->op == "heartbeat") {
    send_reply(req->id, OpReply{}, gen);
    return;
  }
  // `hello` and `resumed` open a host session: the first request on every host connection.
  const bool resumed = req->op == "resumed" || req->op == "hello";
  if (resumed) {
    if (req->op == "resumed") {
      if (auto spec = parse_resumed(*req); !spec) {
        send_reply(req->id, tl::unexpected(spec.error()), gen);
        return;
      }
    }
    // A clone's first request: whatever arrived before it came from the snapshotted host (whose
    // close+open a virtio port can hide when both land at once), so cut those replies off here,
    // on the reader thread, before any later frame is read.
    port_->new_generation();
    gen = port_->generation();
  }
  // `resumed` is never refused as busy: requests inherited from the snapshot may fill the slots.
  if (in_flight_.fetch_add(1) >= kMaxInFlight && !resumed) {
    in_flight_.fetch_sub(1);
    send_reply(req->id, agent_error("busy", "too many requests in flight"), gen);
    return;
  }
  if (resumed) sessions_pending_.fetch_add(1);
  if (resumed && to_lane(*req, gen)) return;
  const uint64_t id = req->id;
  // Detached: the server outlives every request (it never returns from run()). std::thread
  // reports resource exhaustion by throwing; convert that at this library boundary.
  try {
    std::thread([this, gen, r = std::move(*req)]() { run_request(r, gen); }).detach();
  } catch (const std::system_error&) {
    in_flight_.fetch_sub(1);
    if (resumed) sessions_pending_.fetch_sub(1);
    send_reply(id, agent_error("busy", "cannot start a request thread"), gen);
  }
}

AgentResult<OpReply> Server::dispatch(const Request& req, uint64_t gen) {
  const std::string& op = req.op;
  if (op == "ping") return ping();
  if (op == "hello") return hello();
  if (op == "resumed") return resumed_op(req, python_, opts_);
  if (op == "exec") {
    return run_exec(req, [this, gen, id = req.id](std::string_view kind, std::string_view bytes) {
      send_event(id, kind, bytes, gen);
    });
  }
  if (op == "eval") return python_->eval(req);
  if (op == "file_write") return file_write_op(req);
  if (op == "file_read") return file_read_op(req);
  if (op == "file_list") return file_list_op(req);
  if (op == "file_stat") return file_stat_op(req);
  if (op == "mkdir") return mkdir_op(req);
  if (op == "remove") return remove_op(req);
  if (op == "rename") return rename_op(req);
  if (op == "signal") return signal_op(req);
  if (op == "sync") return sync_op(req);
  return agent_error("unknown_op", "unknown op: " + op.substr(0, 64));
}

AgentResult<OpReply> Server::hello() {
  // Answered at once (unlike ping, it never waits for the Python worker).
  std::optional<Identity> id = current_identity();
  OpReply reply;
  reply.result = Json{{"version", kAgentVersion},
                      {"protocol", 1},
                      {"pid", ::getpid()},
                      {"sandbox_id", id ? Json(id->sandbox_id) : Json(nullptr)},
                      {"epoch", id ? Json(id->epoch) : Json(nullptr)}};
  return reply;
}

AgentResult<OpReply> Server::ping() {
  // Waits for a worker that is still importing numpy, so a snapshot taken after the first ping
  // captures it warm.
  PythonWorker::Info info = python_->info(120'000);
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  auto uptime = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start_);
  std::optional<Identity> id = current_identity();
  OpReply reply;
  reply.result = Json{{"version", kAgentVersion},
                      {"protocol", proto::kProtocolVersion},
                      {"pid", static_cast<int64_t>(::getpid())},
                      {"hostname", std::string(host)},
                      {"numpy", info.numpy},
                      {"python", info.python},
                      {"uptime_ms", static_cast<int64_t>(uptime.count())},
                      {"sandbox_id", id ? Json(id->sandbox_id) : Json(nullptr)},
                      {"epoch", id ? Json(id->epoch) : Json(nullptr)}};
  return reply;
}

void Server::send_reply(uint64_t id, const AgentResult<OpReply>& result, uint64_t gen) {
  if (!result) {
    send_json(error_reply(id, result.error()), {}, gen);
    return;
  }
  send_json(ok_reply(id, result->result), result->body, gen);
}

void Server::send_event(uint64_t id, std::string_view kind, std::string_view bytes, uint64_t gen) {
  // Callers pass at most 64 KiB; split anyway so no event exceeds one chunk.
  for (size_t off = 0; off < bytes.size() || off == 0; off += proto::kChunkLen) {
    send_json(Json{{"id", id}, {"event", kind}}, bytes.substr(off, proto::kChunkLen), gen);
    if (bytes.size() <= off + proto::kChunkLen) break;
  }
}

void Server::send_json(const Json& j, std::string_view bin, uint64_t gen) {
  std::string wire;
  auto st = proto::encode_frame(to_wire(j), bin, &wire);
  if (!st) {
    // Only an oversized reply gets here; tell the host rather than going silent.
    uint64_t id = j.contains("id") && j["id"].is_number_unsigned() ? j["id"].get<uint64_t>() : 0;
    wire.clear();
    auto fallback = to_wire(error_reply(id, {"internal", "reply too large"}));
    if (!proto::encode_frame(fallback, {}, &wire)) return;
  }
  port_->write(wire, gen);
}

}  // namespace forkd::agent

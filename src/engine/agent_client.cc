#include "engine/agent_client.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/files.h"
#include "base/json_get.h"
#include "base/log.h"
#include "engine/agent_replies.h"
#include "engine/config.h"
#include "proto/frame.h"

namespace forkd::engine {

using Clock = std::chrono::steady_clock;

ErrorCode agent_error_code(std::string_view code) {
  if (code == "not_found") return ErrorCode::kNotFound;
  if (code == "timeout") return ErrorCode::kTimeout;
  if (code == "bad_request") return ErrorCode::kInvalidArgument;
  if (code == "busy") return ErrorCode::kUnavailable;
  if (code == "io_error") return ErrorCode::kIo;
  if (code == "no_python") return ErrorCode::kNoPython;
  return ErrorCode::kAgentError;
}

namespace {

// Guest-triggered log lines (bad frames, forged replies) are rate-limited across all clients.
RateLimit g_guest_log(20, std::chrono::seconds(60));

void set_nonblocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) (void)::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int64_t now_us(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

int ms_left(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::clamp<int64_t>(left.count(), 0, 60'000));
}

}  // namespace

Result<std::unique_ptr<AgentClient>> AgentClient::connect(const std::string& socket_path,
                                                          std::chrono::milliseconds timeout) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof addr.sun_path) {
    return make_error(ErrorCode::kInvalidArgument, "socket path too long: " + socket_path);
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  auto deadline = Clock::now() + timeout;
  for (;;) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return errno_error(errno, "socket");
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      return std::unique_ptr<AgentClient>(new AgentClient(std::move(fd), Deadlines{}));
    }
    int err = errno;
    if ((err != ENOENT && err != ECONNREFUSED) || Clock::now() > deadline) {
      return errno_error(err, "connect " + socket_path);
    }
    ::usleep(5000);
  }
}

std::unique_ptr<AgentClient> AgentClient::from_fd(UniqueFd fd, Deadlines deadlines) {
  return std::unique_ptr<AgentClient>(new AgentClient(std::move(fd), deadlines));
}

AgentClient::AgentClient(UniqueFd fd, Deadlines deadlines)
    : fd_(std::move(fd)), deadlines_(deadlines) {
  // Every write has a deadline (send_frame polls), so the socket never blocks a caller.
  set_nonblocking(fd_.get());
  // Ids start at a random point: a reply the agent still owes an earlier connection can then
  // never be mistaken for the answer to one of ours.
  next_id_ = (std::stoull(random_hex(5), nullptr, 16) << 8) + 1;
  reader_ = std::jthread([this](std::stop_token st) {
    // The root of the reader thread: nothing the guest sends may end the process.
    try {
      reader_loop(st);
    } catch (const std::exception& e) {
      logger("agent")->error("event=reader_failed error=\"{}\"", e.what());
    } catch (...) {
      logger("agent")->error("event=reader_failed error=unknown");
    }
    closed_ = true;
    fail_all(Error(ErrorCode::kAgentError, "agent connection closed"));
  });
}

AgentClient::~AgentClient() {
  reader_.request_stop();
  ::shutdown(fd_.get(), SHUT_RDWR);
  if (reader_.joinable()) reader_.join();
}

void AgentClient::shutdown() { ::shutdown(fd_.get(), SHUT_RDWR); }

void AgentClient::reader_loop(std::stop_token stop) {
  proto::FrameDecoder decoder;
  std::string buf(256 * 1024, '\0');
  while (!stop.stop_requested()) {
    struct pollfd p = {fd_.get(), POLLIN, 0};
    int rc = ::poll(&p, 1, 200);
    if (rc < 0 && errno != EINTR) break;
    if (rc <= 0) continue;
    ssize_t n = ::read(fd_.get(), buf.data(), buf.size());
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) break;
    decoder.feed(std::string_view(buf.data(), static_cast<size_t>(n)));
    while (auto frame = decoder.next()) {
      if (!*frame) {
        if (g_guest_log.allow()) {
          logger("agent")->warn("event=bad_frame error=\"{}\"", frame->error().message());
        }
        continue;
      }
      Json msg = json::parse_untrusted((*frame)->json);
      if (msg.is_discarded() || !msg.is_object()) {
        if (g_guest_log.allow()) logger("agent")->warn("event=bad_json");
        continue;
      }
      deliver(std::move(msg), std::move((*frame)->bin));
    }
  }
}

void AgentClient::deliver(Json msg, std::string bin) {
  auto id = json::get_int<uint64_t>(msg, "id");
  if (!id) return;
  std::shared_ptr<Pending> p;
  {
    std::lock_guard lock(mu_);
    auto it = pending_.find(*id);
    if (it == pending_.end()) return;  // a request whose caller gave up, or a forged id
    p = it->second;
  }
  if (json::member(msg, "event")) {
    auto ev = json::get_string(msg, "event");
    std::lock_guard ev_lock(p->event_mu);
    if (ev && p->on_event && !p->cancelled) {
      // Time spent here is time this reader does not read (a streaming caller writing to a slow
      // pipe): a heartbeat that goes unanswered meanwhile proves nothing about the agent.
      auto t0 = Clock::now();
      busy_since_us_ = now_us(t0);
      p->on_event(*ev, bin);
      // The total first: a probe reading both meanwhile counts this call twice (no verdict,
      // the safe side), never not at all (a stall verdict from a busy reader).
      reader_busy_us_ += now_us(Clock::now()) - now_us(t0);
      busy_since_us_ = 0;
    }
    return;
  }
  Result<AgentReply> reply = tl::unexpected(Error(ErrorCode::kInternal, "unset"));
  if (json::bool_or(msg, "ok", false)) {
    reply = AgentReply{std::move(msg), std::move(bin)};
  } else {
    const Json* e = json::member(msg, "error");
    std::string code = e ? json::string_or(*e, "code", "internal") : "internal";
    std::string message = e ? json::string_or(*e, "message", "agent error") : "agent error";
    if (message.size() > 4096) message.resize(4096);
    reply = tl::unexpected(Error(agent_error_code(code), message));
  }
  {
    std::lock_guard lock(mu_);
    if (p->done) return;  // a second final reply for one id: keep the first
    p->reply = std::move(reply);
    p->done = true;
  }
  cv_.notify_all();
}

void AgentClient::fail_all(const Error& err) {
  {
    std::lock_guard lock(mu_);
    for (auto& [id, p] : pending_) {
      if (!p->done) {
        p->reply = tl::unexpected(err);
        p->done = true;
      }
    }
  }
  cv_.notify_all();
}

Error AgentClient::closed_error() const {
  if (stalled_) {
    return Error(ErrorCode::kAgentTimeout,
                 "the guest agent stopped reading its channel (connection given up)");
  }
  return Error(ErrorCode::kAgentError, "agent connection closed");
}

void AgentClient::stall(const std::string& why) {
  if (!stalled_.exchange(true)) {
    if (g_guest_log.allow()) logger("agent")->warn("event=agent_unresponsive why=\"{}\"", why);
  }
  closed_ = true;
  // The reader sees EOF and fails every waiting call with the connection closed.
  ::shutdown(fd_.get(), SHUT_RDWR);
}

Status AgentClient::send_frame(const std::string& frame) {
  const auto deadline = Clock::now() + deadlines_.write;
  const std::string ms = std::to_string(deadlines_.write.count());
  std::unique_lock lock(write_mu_, std::defer_lock);
  if (!lock.try_lock_until(deadline)) {
    // Nothing of this frame was sent. Another request's write is the one waiting on the guest
    // (and its own deadline judges the agent): for this one, and for a heartbeat, no verdict.
    return make_error(ErrorCode::kUnavailable,
                      "the channel to the guest agent is busy (another request has been "
                      "writing to it for " +
                          ms + " ms); retry later");
  }
  std::string_view rest = frame;
  while (!rest.empty()) {
    if (closed_) return tl::unexpected(closed_error());
    ssize_t n = ::send(fd_.get(), rest.data(), rest.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      rest.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) return errno_error(errno, "write to agent");
    int wait = ms_left(deadline);
    if (wait == 0) {
      // Part of a frame may be out: this stream cannot carry another frame.
      stall("a request could not be written within " + ms + " ms");
      return make_error(ErrorCode::kAgentTimeout,
                        "the guest agent stopped reading its channel (a request could not be "
                        "written within " +
                            ms + " ms)");
    }
    struct pollfd p = {fd_.get(), POLLOUT, 0};
    (void)::poll(&p, 1, std::min(wait, 200));
  }
  return {};
}

void AgentClient::probe() {
  if (probing_.exchange(true)) return;  // another caller is checking already
  // Time the reader has spent inside on_event so far, the call in progress included.
  auto busy_now = [this] {
    int64_t since = busy_since_us_.load();
    return reader_busy_us_.load() + (since > 0 ? now_us(Clock::now()) - since : 0);
  };
  int64_t busy_before = busy_now();
  auto r = call_impl(Json{{"op", "heartbeat"}}, {}, deadlines_.probe_timeout, {}, false);
  // Any answer, an error reply included, shows that the agent reads and answers. No answer
  // while our own reader was mostly busy handing events to a slow caller is no verdict.
  int64_t busy_us = busy_now() - busy_before;
  bool host_slow =
      busy_us * 2 >
      std::chrono::duration_cast<std::chrono::microseconds>(deadlines_.probe_timeout).count();
  bool alive = r || host_slow || (r.error().code() != ErrorCode::kAgentTimeout && !closed_);
  if (!alive && !closed_) {
    stall("no answer to a heartbeat within " + std::to_string(deadlines_.probe_timeout.count()) +
          " ms");
  }
  probing_ = false;
}

Result<AgentReply> AgentClient::call(Json request, std::string_view bin,
                                     std::chrono::milliseconds timeout, EventFn on_event) {
  return call_impl(std::move(request), bin, timeout, std::move(on_event), true);
}

Result<AgentReply> AgentClient::call_impl(Json request, std::string_view bin,
                                          std::chrono::milliseconds timeout, EventFn on_event,
                                          bool probe_while_waiting) {
  if (closed_) {
    return tl::unexpected(closed_error());
  }
  auto pending = std::make_shared<Pending>();
  pending->on_event = std::move(on_event);
  uint64_t id;
  {
    std::lock_guard lock(mu_);
    id = next_id_++;
    pending_[id] = pending;
  }
  request["id"] = id;
  std::string op = json::string_or(request, "op", "");
  // After this, the reader never calls this request's on_event again.
  auto finish = [&] {
    {
      std::lock_guard lock(mu_);
      pending_.erase(id);
    }
    std::lock_guard ev_lock(pending->event_mu);
    pending->cancelled = true;
  };
  auto frame =
      proto::encode_frame(request.dump(-1, ' ', false, Json::error_handler_t::replace), bin);
  Status sent = frame ? send_frame(*frame) : Status(tl::unexpected(frame.error()));
  if (!sent) {
    finish();
    return tl::unexpected(sent.error().wrap("agent " + op));
  }
  const auto deadline = Clock::now() + timeout;
  bool done = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    auto slice = probe_while_waiting ? std::min(left, deadlines_.probe_interval) : left;
    {
      std::unique_lock lock(mu_);
      done = cv_.wait_for(lock, std::max(slice, std::chrono::milliseconds(0)),
                          [&] { return pending->done; });
    }
    if (done || Clock::now() >= deadline) break;
    // A call that ends before a heartbeat could is bounded by its own deadline anyway.
    if (deadline - Clock::now() > deadlines_.probe_timeout) {
      probe();  // fails every call (this one included) when the agent no longer answers
    }
  }
  finish();
  if (!done) {
    return make_error(ErrorCode::kAgentTimeout, "agent " + op + ": no reply within " +
                                                    std::to_string(timeout.count()) + " ms");
  }
  std::lock_guard lock(mu_);
  if (!pending->reply && stalled_) {
    return make_error(ErrorCode::kAgentTimeout,
                      "agent " + op + ": the guest agent stopped reading its channel");
  }
  return std::move(pending->reply);
}

Result<Json> AgentClient::open_session(std::chrono::milliseconds timeout,
                                       std::chrono::milliseconds interval) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) break;
    auto r = call(Json{{"op", "hello"}}, {}, std::min(left, interval));
    if (r) return decode_hello_reply(r->json);
    if (r.error().code() != ErrorCode::kAgentTimeout || stalled()) return tl::unexpected(r.error());
  }
  return make_error(ErrorCode::kAgentTimeout,
                    "agent did not answer within " + std::to_string(timeout.count()) + " ms");
}

Result<Json> AgentClient::wait_ready(std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  auto hello = open_session(timeout);
  if (!hello) return hello;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  auto r = call(Json{{"op", "ping"}}, {}, std::max(left, std::chrono::milliseconds(1000)));
  if (!r) return tl::unexpected(r.error());
  return decode_hello_reply(r->json);
}

}  // namespace forkd::engine

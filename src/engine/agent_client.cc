#include "engine/agent_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/files.h"
#include "base/log.h"
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
      return std::unique_ptr<AgentClient>(new AgentClient(std::move(fd)));
    }
    int err = errno;
    if ((err != ENOENT && err != ECONNREFUSED) || Clock::now() > deadline) {
      return errno_error(err, "connect " + socket_path);
    }
    ::usleep(5000);
  }
}

std::unique_ptr<AgentClient> AgentClient::from_fd(UniqueFd fd) {
  return std::unique_ptr<AgentClient>(new AgentClient(std::move(fd)));
}

AgentClient::AgentClient(UniqueFd fd) : fd_(std::move(fd)) {
  // Ids start at a random point: a reply the agent still owes an earlier connection can then
  // never be mistaken for the answer to one of ours.
  next_id_ = (std::stoull(random_hex(5), nullptr, 16) << 8) + 1;
  reader_ = std::jthread([this](std::stop_token st) { reader_loop(st); });
}

AgentClient::~AgentClient() {
  reader_.request_stop();
  ::shutdown(fd_.get(), SHUT_RDWR);
  if (reader_.joinable()) reader_.join();
}

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
        logger("agent")->warn("event=bad_frame error=\"{}\"", frame->error().message());
        continue;
      }
      Json msg = Json::parse((*frame)->json, nullptr, false);
      if (msg.is_discarded() || !msg.is_object()) {
        logger("agent")->warn("event=bad_json");
        continue;
      }
      deliver(std::move(msg), std::move((*frame)->bin));
    }
  }
  closed_ = true;
  fail_all(Error(ErrorCode::kAgentError, "agent connection closed"));
}

void AgentClient::deliver(Json msg, std::string bin) {
  auto id_it = msg.find("id");
  if (id_it == msg.end() || !id_it->is_number_unsigned()) return;
  uint64_t id = id_it->get<uint64_t>();
  std::shared_ptr<Pending> p;
  {
    std::lock_guard lock(mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return;  // a request whose caller gave up
    p = it->second;
  }
  auto ev = msg.find("event");
  if (ev != msg.end()) {
    if (ev->is_string() && p->on_event) p->on_event(ev->get<std::string>(), bin);
    return;
  }
  Result<AgentReply> reply = AgentReply{msg, std::move(bin)};
  auto ok = msg.find("ok");
  if (ok == msg.end() || !ok->is_boolean() || !ok->get<bool>()) {
    std::string code = "internal", message = "agent error";
    if (auto e = msg.find("error"); e != msg.end() && e->is_object()) {
      if (auto c = e->find("code"); c != e->end() && c->is_string()) code = c->get<std::string>();
      if (auto m = e->find("message"); m != e->end() && m->is_string()) {
        message = m->get<std::string>();
      }
    }
    reply = tl::unexpected(Error(agent_error_code(code), message));
  }
  {
    std::lock_guard lock(mu_);
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

Result<AgentReply> AgentClient::call(Json request, std::string_view bin,
                                     std::chrono::milliseconds timeout, EventFn on_event) {
  if (closed_) return make_error(ErrorCode::kAgentError, "agent connection closed");
  auto pending = std::make_shared<Pending>();
  pending->on_event = std::move(on_event);
  uint64_t id;
  {
    std::lock_guard lock(mu_);
    id = next_id_++;
    pending_[id] = pending;
  }
  request["id"] = id;
  std::string op = request.value("op", "");
  auto frame = proto::encode_frame(request.dump(), bin);
  Status sent = frame ? Status{} : Status(tl::unexpected(frame.error()));
  if (sent) {
    std::lock_guard lock(write_mu_);
    sent = write_all(fd_.get(), *frame);
  }
  std::unique_lock lock(mu_);
  if (!sent) {
    pending_.erase(id);
    return tl::unexpected(sent.error().wrap("agent " + op));
  }
  bool done = cv_.wait_for(lock, timeout, [&] { return pending->done; });
  pending_.erase(id);
  if (!done) {
    return make_error(ErrorCode::kAgentTimeout, "agent " + op + ": no reply within " +
                                                    std::to_string(timeout.count()) + " ms");
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
    if (r) return r->json;
    if (r.error().code() != ErrorCode::kAgentTimeout) return tl::unexpected(r.error());
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
  return r->json;
}

}  // namespace forkd::engine

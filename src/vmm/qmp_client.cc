#include "vmm/qmp_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include "base/json_get.h"

namespace forkd::vmm {

namespace {

using Clock = std::chrono::steady_clock;

// QMP replies (query-* on a big VM) stay far below this; anything longer is a broken peer.
constexpr size_t kMaxLineBytes = 16u << 20;
constexpr size_t kReadChunk = 64u << 10;
constexpr size_t kMaxQueuedEvents = 1024;  // bound memory if events are never consumed

int ms_until(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return 0;
  if (left.count() > 1'000'000'000) return 1'000'000'000;
  return static_cast<int>(left.count());
}

std::string id_string(const Json& obj) {
  auto it = obj.find("id");
  if (it == obj.end()) return {};
  if (it->is_string()) return it->get<std::string>();
  return it->dump();  // QMP echoes any JSON value; compare numbers by their text
}

}  // namespace

Result<QmpMessage> parse_qmp_message(std::string_view line) {
  Json j = json::parse_untrusted(line);
  if (j.is_discarded()) return make_error(ErrorCode::kProtocol, "qmp: malformed JSON message");
  if (!j.is_object()) return make_error(ErrorCode::kProtocol, "qmp: message is not an object");
  QmpMessage msg{QmpMessage::Kind::kReturn, Json(), id_string(j)};
  if (auto it = j.find("return"); it != j.end()) {
    msg.kind = QmpMessage::Kind::kReturn;
    msg.body = std::move(*it);
  } else if (auto er = j.find("error"); er != j.end()) {
    if (!er->is_object()) return make_error(ErrorCode::kProtocol, "qmp: error is not an object");
    msg.kind = QmpMessage::Kind::kError;
    msg.body = std::move(*er);
  } else if (auto ev = j.find("event"); ev != j.end()) {
    if (!ev->is_string()) return make_error(ErrorCode::kProtocol, "qmp: event name not a string");
    msg.kind = QmpMessage::Kind::kEvent;
    msg.body = std::move(j);
  } else if (auto gr = j.find("QMP"); gr != j.end()) {
    if (!gr->is_object()) return make_error(ErrorCode::kProtocol, "qmp: bad greeting");
    msg.kind = QmpMessage::Kind::kGreeting;
    msg.body = std::move(*gr);
  } else {
    return make_error(ErrorCode::kProtocol, "qmp: message of unknown shape");
  }
  return msg;
}

Result<QmpClient> QmpClient::connect(const std::string& socket_path,
                                     std::chrono::milliseconds timeout) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof(addr.sun_path)) {
    return make_error(ErrorCode::kInvalidArgument,
                      "qmp connect: socket path empty or too long: " + socket_path);
  }
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  const auto deadline = Clock::now() + timeout;
  UniqueFd fd;
  for (;;) {
    fd = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return errno_error(errno, "qmp connect: socket");
    int rc;
    do {
      rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    } while (rc != 0 && errno == EINTR);
    if (rc == 0) break;
    int err = errno;
    if ((err != ENOENT && err != ECONNREFUSED) || Clock::now() >= deadline) {
      Error e = errno_error(err, "qmp connect " + socket_path).value();
      if (err == ENOENT || err == ECONNREFUSED) {
        return tl::unexpected(Error(
            ErrorCode::kTimeout,
            e.message() + " (gave up after " + std::to_string(timeout.count()) + " ms)", err));
      }
      return tl::unexpected(e);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }

  QmpClient client(std::move(fd));
  auto greeting = client.read_message(deadline);
  if (!greeting) return tl::unexpected(greeting.error().wrap("qmp greeting"));
  if (greeting->kind != QmpMessage::Kind::kGreeting) {
    return make_error(ErrorCode::kProtocol, "qmp greeting: first message is not a greeting");
  }
  auto caps = client.execute(
      "qmp_capabilities", Json::object(),
      std::max(std::chrono::milliseconds(1000),
               std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now())));
  if (!caps) return tl::unexpected(caps.error());
  return client;
}

Status QmpClient::send_line(const std::string& line, int fd_to_pass, Clock::time_point deadline) {
  size_t off = 0;
  bool fd_sent = fd_to_pass < 0;
  while (off < line.size()) {
    iovec iov{const_cast<char*>(line.data() + off), line.size() - off};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    if (!fd_sent) {
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      cmsghdr* cm = CMSG_FIRSTHDR(&msg);
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(cm), &fd_to_pass, sizeof(int));
    }
    ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        // QEMU is not reading its monitor: wait, but never past the deadline.
        int wait = ms_until(deadline);
        if (wait <= 0) return make_error(ErrorCode::kTimeout, "qmp send: QEMU is not reading");
        pollfd p{fd_.get(), POLLOUT, 0};
        (void)::poll(&p, 1, wait);
        continue;
      }
      int err = errno;
      auto e = errno_error(err, "qmp send");
      if (err == EPIPE || err == ECONNRESET) {
        return make_error(ErrorCode::kQemuFailed, e.value().message() + " (QEMU went away)");
      }
      return e;
    }
    fd_sent = true;  // the fd travels with the first byte only
    off += static_cast<size_t>(n);
  }
  return {};
}

Result<QmpMessage> QmpClient::read_message(Clock::time_point deadline) {
  for (;;) {
    size_t nl = rbuf_.find('\n');
    if (nl != std::string::npos) {
      std::string line = rbuf_.substr(0, nl);
      rbuf_.erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      return parse_qmp_message(line);
    }
    if (rbuf_.size() > kMaxLineBytes) {
      return make_error(ErrorCode::kProtocol, "qmp: line longer than 16 MiB");
    }
    pollfd p{fd_.get(), POLLIN, 0};
    int rc = ::poll(&p, 1, ms_until(deadline));
    if (rc < 0) {
      if (errno == EINTR) continue;
      return errno_error(errno, "qmp poll");
    }
    if (rc == 0) return make_error(ErrorCode::kTimeout, "qmp: no reply in time");
    char buf[kReadChunk];
    ssize_t n = ::read(fd_.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      int err = errno;
      if (err == ECONNRESET) return make_error(ErrorCode::kQemuFailed, "qmp: connection reset");
      return errno_error(err, "qmp read");
    }
    if (n == 0) return make_error(ErrorCode::kQemuFailed, "qmp: QEMU closed the connection");
    rbuf_.append(buf, static_cast<size_t>(n));
  }
}

Result<Json> QmpClient::execute(std::string_view command, const Json& arguments,
                                std::chrono::milliseconds timeout) {
  return execute_with_fd(command, arguments, -1, timeout);
}

std::string QmpClient::request_line(const std::string& command, const Json& arguments,
                                    uint64_t id) const {
  Json req = {{"execute", command}, {"id", id}};
  if (!arguments.is_null() && !(arguments.is_object() && arguments.empty())) {
    req["arguments"] = arguments;
  }
  return req.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Result<Json> QmpClient::execute_with_fd(std::string_view command, const Json& arguments, int fd,
                                        std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const std::string cmd(command);
  if (armed_) {
    if (auto d = disarm(); !d) return tl::unexpected(d.error().wrap(cmd));
  }
  const uint64_t id = next_id_++;
  std::string line = request_line(cmd, arguments, id);
  line += '\n';
  if (auto s = send_line(line, fd, deadline); !s) return tl::unexpected(s.error().wrap(cmd));
  return await_reply(cmd, id, deadline, timeout);
}

Status QmpClient::arm(std::string_view command, const Json& arguments) {
  const std::string cmd(command);
  if (armed_) FORKD_TRY(disarm());
  const uint64_t id = next_id_++;
  std::string line = request_line(cmd, arguments, id);
  line.pop_back();  // the object's closing brace, sent by fire()
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  if (auto s = send_line(line, -1, deadline); !s) return tl::unexpected(s.error().wrap(cmd));
  armed_ = Armed{cmd, id};
  return {};
}

Result<Json> QmpClient::fire(std::chrono::milliseconds timeout) {
  if (!armed_) return make_error(ErrorCode::kInternal, "qmp: fire with no command armed");
  const Armed a = *std::exchange(armed_, std::nullopt);
  const auto deadline = Clock::now() + timeout;
  if (auto s = send_line("}\n", -1, deadline); !s) return tl::unexpected(s.error().wrap(a.command));
  return await_reply(a.command, a.id, deadline, timeout);
}

Status QmpClient::disarm() {
  if (!armed_) return {};
  const Armed a = *std::exchange(armed_, std::nullopt);
  const auto timeout = std::chrono::seconds(10);
  const auto deadline = Clock::now() + timeout;
  const std::string what = "disarm " + a.command;
  if (auto s = send_line(",\"forkd-disarmed\":true}\n", -1, deadline); !s) {
    return tl::unexpected(s.error().wrap(what));
  }
  auto r = await_reply(a.command, a.id, deadline, timeout);
  if (r) return make_error(ErrorCode::kQemuFailed, what + ": QEMU ran it instead of rejecting it");
  if (r.error().code() != ErrorCode::kQemuFailed) return tl::unexpected(r.error().wrap(what));
  return {};  // rejected, as meant
}

Result<Json> QmpClient::await_reply(const std::string& cmd, uint64_t id_number,
                                    Clock::time_point deadline, std::chrono::milliseconds timeout) {
  const std::string id = std::to_string(id_number);
  // Bounded by the deadline; each iteration consumes one message.
  for (;;) {
    auto msg = read_message(deadline);
    if (!msg) {
      if (msg.error().code() == ErrorCode::kTimeout) {
        return make_error(ErrorCode::kTimeout,
                          cmd + ": no reply within " + std::to_string(timeout.count()) + " ms");
      }
      return tl::unexpected(msg.error().wrap(cmd));
    }
    switch (msg->kind) {
      case QmpMessage::Kind::kEvent:
        if (events_.size() >= kMaxQueuedEvents) events_.pop_front();
        events_.push_back(std::move(msg->body));
        continue;
      case QmpMessage::Kind::kGreeting:
        continue;  // stray greeting: ignore
      case QmpMessage::Kind::kReturn:
        if (msg->id != id) continue;  // a late reply to an earlier, timed-out command
        return std::move(msg->body);
      case QmpMessage::Kind::kError: {
        // Errors for unparsable input carry no id; they can only be ours.
        if (!msg->id.empty() && msg->id != id) continue;
        const Json& e = msg->body;
        std::string cls = json::string_or(e, "class", "GenericError");
        std::string desc = json::string_or(e, "desc", "(no description)");
        return make_error(ErrorCode::kQemuFailed, cmd + ": " + cls + ": " + desc);
      }
    }
  }
}

Result<Json> QmpClient::wait_event(std::string_view name, std::chrono::milliseconds timeout) {
  auto matches = [name](const Json& ev) {
    auto it = ev.find("event");
    return it != ev.end() && it->is_string() && it->get_ref<const std::string&>() == name;
  };
  for (auto it = events_.begin(); it != events_.end(); ++it) {
    if (matches(*it)) {
      Json ev = std::move(*it);
      events_.erase(it);
      return ev;
    }
  }
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    auto msg = read_message(deadline);
    if (!msg) {
      if (msg.error().code() == ErrorCode::kTimeout) {
        return make_error(ErrorCode::kTimeout, "qmp: no " + std::string(name) + " event within " +
                                                   std::to_string(timeout.count()) + " ms");
      }
      return tl::unexpected(msg.error().wrap("wait for " + std::string(name)));
    }
    if (msg->kind != QmpMessage::Kind::kEvent) continue;  // stale replies
    if (matches(msg->body)) return std::move(msg->body);
    if (events_.size() >= kMaxQueuedEvents) events_.pop_front();
    events_.push_back(std::move(msg->body));
  }
}

std::deque<Json> QmpClient::take_events() { return std::exchange(events_, {}); }

}  // namespace forkd::vmm

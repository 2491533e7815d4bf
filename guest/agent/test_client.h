#pragma once
// Test helpers: a host-side client for the agent protocol over a unix socket, and a launcher for
// the real forkd-agent binary in --listen-unix mode.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/unique_fd.h"
#include "proto/frame.h"
#include "request.h"

namespace forkd::agent::testing {

using Clock = std::chrono::steady_clock;

inline std::atomic<uint64_t> g_next_id{1};

struct Reply {
  Json final;
  std::string out, err, bin;
};

class Client {
 public:
  explicit Client(const std::string& path) {
    for (int i = 0; i < 100 && !fd_; ++i) {
      UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
      if (::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
        fd_ = std::move(s);
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
    timeval tv{60, 0};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  bool connected() const { return fd_.valid(); }

  void send_raw(std::string_view bytes) {
    ASSERT_EQ(::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }
  uint64_t send(Json req, std::string_view bin = {}) {
    uint64_t id = g_next_id++;
    req["id"] = id;
    send_raw(*proto::encode_frame(to_wire(req), bin));
    return id;
  }
  std::optional<proto::Frame> read_frame() {
    for (;;) {
      if (auto f = dec_.next()) {
        if (!*f) return std::nullopt;
        return std::move(**f);
      }
      char buf[65536];
      ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
      if (n <= 0) return std::nullopt;
      dec_.feed(std::string_view(buf, static_cast<size_t>(n)));
    }
  }
  // Reads until the final reply for id; events for id are collected, other ids ignored.
  Reply wait(uint64_t id) {
    Reply r;
    while (auto f = read_frame()) {
      Json j = Json::parse(f->json);
      if (j["id"] != id) continue;
      if (j.contains("event")) {
        (j["event"] == "stdout" ? r.out : r.err) += f->bin;
        continue;
      }
      r.final = j;
      r.bin = f->bin;
      return r;
    }
    ADD_FAILURE() << "connection ended before the reply to " << id;
    return r;
  }
  Reply call(Json req, std::string_view bin = {}) { return wait(send(std::move(req), bin)); }
  // Every frame (as JSON) that arrives within ms.
  std::vector<Json> collect_for(int ms) {
    std::vector<Json> out;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    for (;;) {
      while (auto f = dec_.next()) {
        if (*f) out.push_back(Json::parse((*f)->json));
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return out;
      pollfd p{fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[65536];
      ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
      if (n <= 0) return out;
      dec_.feed(std::string_view(buf, static_cast<size_t>(n)));
    }
  }

 private:
  UniqueFd fd_;
  proto::FrameDecoder dec_;
};

// Starts FORKD_AGENT_BIN --listen-unix sock [extra args] and waits for the socket to appear.
inline pid_t start_agent(const std::string& sock, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args = {"forkd-agent", "--listen-unix", sock};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::execv(FORKD_AGENT_BIN, argv.data());
    ::_exit(127);
  }
  struct stat st;
  for (int i = 0; i < 100 && ::stat(sock.c_str(), &st) != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pid;
}

inline void stop_agent(pid_t pid) {
  if (pid > 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
}

}  // namespace forkd::agent::testing

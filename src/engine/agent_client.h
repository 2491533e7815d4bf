#pragma once
// Host side of the agent protocol (src/proto/PROTOCOL.md): one connection to a sandbox's
// agent.sock, many concurrent requests. Thread-safe: any thread may call(); a reader thread
// routes replies and stream events to the waiting caller by request id.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "base/error.h"
#include "base/unique_fd.h"

namespace forkd::engine {

using Json = nlohmann::json;

struct AgentReply {
  Json json;        // the final reply ("ok": true ...)
  std::string bin;  // its binary body
};

// Called on the reader thread for each stream event ("stdout"/"stderr") of a request.
using EventFn = std::function<void(const std::string& event, std::string_view data)>;

class AgentClient {
 public:
  // Connects to a unix socket, retrying while it does not exist yet, until timeout.
  static Result<std::unique_ptr<AgentClient>> connect(const std::string& socket_path,
                                                      std::chrono::milliseconds timeout);
  // Takes an already connected stream (tests use a socketpair).
  static std::unique_ptr<AgentClient> from_fd(UniqueFd fd);
  ~AgentClient();
  AgentClient(const AgentClient&) = delete;
  AgentClient& operator=(const AgentClient&) = delete;

  // Sends request (an object with "op"; the id is assigned here) and waits for its final reply.
  // An "ok": false reply becomes an Error whose code follows the agent's error code. No reply in
  // time is kAgentTimeout; a closed connection is kAgentError.
  Result<AgentReply> call(Json request, std::string_view bin, std::chrono::milliseconds timeout,
                          EventFn on_event = {});

  // Opens a session: sends `hello` (retried every interval: a virtio port can drop the reply
  // to a request that raced the port's close/open) until one is answered. Every new
  // connection must do this (or `resumed`) before other requests.
  Result<Json> open_session(std::chrono::milliseconds timeout,
                            std::chrono::milliseconds interval = std::chrono::milliseconds(250));

  // open_session, then one ping (which waits for the guest's warm Python worker).
  Result<Json> wait_ready(std::chrono::milliseconds timeout);

  bool connected() const { return !closed_.load(); }

 private:
  explicit AgentClient(UniqueFd fd);
  struct Pending {
    EventFn on_event;
    bool done = false;
    Result<AgentReply> reply = tl::unexpected(Error(ErrorCode::kAgentError, "no reply"));
  };
  void reader_loop(std::stop_token stop);
  void deliver(Json msg, std::string bin);
  void fail_all(const Error& err);

  UniqueFd fd_;
  std::mutex write_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  // Owned by the waiting caller's stack frame and this map; the map entry is erased by the caller.
  std::map<uint64_t, std::shared_ptr<Pending>> pending_;
  uint64_t next_id_ = 1;
  std::atomic<bool> closed_{false};
  std::jthread reader_;
};

// Maps an agent error code ("not_found", "timeout", ...) to an ErrorCode.
ErrorCode agent_error_code(std::string_view code);

}  // namespace forkd::engine

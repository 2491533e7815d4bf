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

// Deadlines against a guest that stops reading its channel. When one is missed the agent is
// taken to be unresponsive: every waiting call fails (kAgentTimeout), the connection is closed
// and stalled() says so.
struct AgentDeadlines {
  // A request frame must be accepted (written to the socket) within this long.
  std::chrono::milliseconds write{15000};
  // A call still waiting after this long checks that the agent still reads and answers: it
  // sends a `heartbeat` request, which any live agent answers at once (an agent that does not
  // know the op answers unknown_op, which is as good), and gives it probe_timeout.
  std::chrono::milliseconds probe_interval{10000};
  std::chrono::milliseconds probe_timeout{20000};
};

class AgentClient {
 public:
  using Deadlines = AgentDeadlines;

  // Connects to a unix socket, retrying while it does not exist yet, until timeout.
  static Result<std::unique_ptr<AgentClient>> connect(const std::string& socket_path,
                                                      std::chrono::milliseconds timeout);
  // Takes an already connected stream (tests use a socketpair).
  static std::unique_ptr<AgentClient> from_fd(UniqueFd fd, Deadlines deadlines = {});
  ~AgentClient();
  AgentClient(const AgentClient&) = delete;
  AgentClient& operator=(const AgentClient&) = delete;

  // Sends request (an object with "op"; the id is assigned here) and waits for its final reply.
  // An "ok": false reply becomes an Error whose code follows the agent's error code. No reply in
  // time is kAgentTimeout; a closed connection is kAgentError. on_event runs on the reader thread
  // and is never called again once call() has returned.
  Result<AgentReply> call(Json request, std::string_view bin, std::chrono::milliseconds timeout,
                          EventFn on_event = {});

  // Opens a session: sends `hello` (retried every interval: a virtio port can drop the reply
  // to a request that raced the port's close/open) until one is answered. Every new
  // connection must do this (or `resumed`) before other requests. The reply is checked
  // (decode_hello_reply): a forged one is kAgentProtocol.
  Result<Json> open_session(std::chrono::milliseconds timeout,
                            std::chrono::milliseconds interval = std::chrono::milliseconds(250));

  // open_session, then one ping (which waits for the guest's warm Python worker).
  Result<Json> wait_ready(std::chrono::milliseconds timeout);

  bool connected() const { return !closed_.load(); }
  // Closes the connection under every waiting call: they fail with kAgentError at once (a daemon
  // stopping does this to calls that would wait for hours). Thread-safe; the object stays valid.
  void shutdown();
  // True once the guest missed a write deadline or a heartbeat: it stopped reading its channel.
  bool stalled() const { return stalled_.load(); }

 private:
  AgentClient(UniqueFd fd, Deadlines deadlines);
  struct Pending {
    EventFn on_event;
    bool done = false;
    Result<AgentReply> reply = tl::unexpected(Error(ErrorCode::kAgentError, "no reply"));
    // Held while on_event runs; the caller sets cancelled under it before it returns, so no
    // event reaches a caller whose frame is gone.
    std::mutex event_mu;
    bool cancelled = false;
  };
  void reader_loop(std::stop_token stop);
  void deliver(Json msg, std::string bin);
  void fail_all(const Error& err);
  Status send_frame(const std::string& frame);
  Result<AgentReply> call_impl(Json request, std::string_view bin,
                               std::chrono::milliseconds timeout, EventFn on_event, bool probe);
  // Sends a heartbeat unless another caller is already doing so; on no answer, gives up on the
  // agent (stall()).
  void probe();
  void stall(const std::string& why);
  // The error for a call on a closed connection: kAgentTimeout once the agent stalled.
  Error closed_error() const;

  UniqueFd fd_;
  const Deadlines deadlines_;
  std::atomic<bool> probing_{false};
  // Time the reader spent inside on_event (total), and since when it is in one now (0: not).
  std::atomic<int64_t> reader_busy_us_{0};
  std::atomic<int64_t> busy_since_us_{0};
  std::timed_mutex write_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  // Co-owned by the waiting caller's stack frame and this map (the reader takes a copy while it
  // delivers); the map entry is erased by the caller.
  std::map<uint64_t, std::shared_ptr<Pending>> pending_;
  uint64_t next_id_ = 1;
  std::atomic<bool> closed_{false};
  std::atomic<bool> stalled_{false};
  std::jthread reader_;
};

// Maps an agent error code ("not_found", "timeout", ...) to an ErrorCode.
ErrorCode agent_error_code(std::string_view code);

}  // namespace forkd::engine

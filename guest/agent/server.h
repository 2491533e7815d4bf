#pragma once
// The request loop: one reader thread decodes frames from the Port; each request runs on its own
// thread (at most kMaxInFlight at once, beyond that the reply is `busy`; `resumed` is exempt) and
// writes its events and final reply through the Port, which serializes frames. `resumed` and
// `hello` run on one thread that lives as long as the server (the session lane): a restored
// clone's first request then starts no thread, which cost ~15-20 ms of its first wake-up under
// TCG. When the lane is busy (at most kLaneDepth waiting), they get a thread of their own too.
// A `resumed` as the host sends it does not even wake the lane when no other session request is
// queued or running: the reader thread reads, runs and answers it itself (resumed_fast.h).
// Events and replies are tagged with the connection generation their request arrived on and dropped
// if the host has reconnected since; a valid `resumed` starts a new generation itself.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string_view>
#include <thread>

#include "identity.h"
#include "port.h"
#include "proto/frame.h"
#include "python_worker.h"
#include "request.h"

namespace forkd::agent {

inline constexpr int kMaxInFlight = 64;
inline constexpr size_t kLaneDepth = 8;
inline constexpr char kAgentVersion[] = "0.1.0";

class Server {
 public:
  // Both pointers must outlive the server; request threads are detached and use them.
  Server(Port* port, PythonWorker* python, ResumedOptions opts = {});
  // Stops the session lane (after the request it runs, if any).
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Reads and dispatches forever.
  [[noreturn]] void run();

  // Handles one decoded frame: parses, validates and dispatches it (on a new thread unless the
  // reply is immediate). Exposed for tests.
  void handle_frame(proto::Frame frame);

 private:
  // A `resumed` as the host sends it (resumed_fast.h), run here on the reader thread when no
  // other session request is queued or running; true when it was (and answered).
  bool try_flat_resumed(proto::Frame& frame);
  AgentResult<OpReply> dispatch(const Request& req, uint64_t gen);
  // Runs req (already counted in in_flight_) and sends its reply.
  void run_request(const Request& req, uint64_t gen);
  // Queues a session request for the lane; false when there is no lane or it is full.
  bool to_lane(Request& req, uint64_t gen);
  void lane_loop(std::stop_token stop);
  AgentResult<OpReply> ping();
  AgentResult<OpReply> hello();
  void send_reply(uint64_t id, const AgentResult<OpReply>& result, uint64_t gen);
  void send_event(uint64_t id, std::string_view kind, std::string_view bytes, uint64_t gen);
  void send_json(const Json& j, std::string_view bin, uint64_t gen);

  Port* port_;
  PythonWorker* python_;
  const ResumedOptions opts_;
  std::atomic<int> in_flight_{0};
  std::atomic<int> sessions_pending_{0};  // resumed and hello requests queued or running
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::mutex lane_mu_;
  std::condition_variable_any lane_cv_;
  std::deque<std::pair<Request, uint64_t>> lane_;  // guarded by lane_mu_
  std::jthread lane_thread_;                       // last: it uses the members above
};

}  // namespace forkd::agent

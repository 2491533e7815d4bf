#pragma once
// The warm Python worker behind the eval op: one `python3 -u -c <kWorkerScript>` child, started
// at agent start (so a snapshot captures it warm, numpy imported), restarted on the next eval
// after it dies. Evals are serialized; globals persist across evals.
#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/unique_fd.h"
#include "request.h"

namespace forkd::agent {

inline constexpr uint32_t kMaxWorkerMessage = 16u << 20;
// Bound on a PRNG reseed of the worker (waiting for a running eval included).
inline constexpr int kWorkerReseedMs = 2000;

// u32 little-endian length + the JSON text.
std::string encode_worker_message(const Json& msg);

// Variables a reseed sets in the worker's os.environ.
using WorkerEnv = std::vector<std::pair<std::string, std::string>>;
// Reads the length prefix of buf (at least 4 bytes).
uint32_t decode_worker_length(std::string_view buf);

struct WorkerHello {
  Json numpy;  // version string or null
  std::string python;
};
AgentResult<WorkerHello> parse_worker_hello(std::string_view json);
// Validates a worker reply; returns {"value", "stdout", "error"} with checked types.
AgentResult<Json> parse_eval_reply(std::string_view json);
// Validates the reply to a reseed message: ok only for {"reseeded": true, ...}.
AgentStatus parse_reseed_reply(std::string_view json);

class PythonWorker {
 public:
  PythonWorker() = default;
  PythonWorker(const PythonWorker&) = delete;
  PythonWorker& operator=(const PythonWorker&) = delete;
  ~PythonWorker();

  // Starts the worker on a background thread when python3 is on PATH; returns at once.
  void start_async();

  struct Info {
    bool python = false;
    Json numpy;  // null when unknown or absent
  };
  // Waits up to wait_ms for a pending start to finish. Thread-safe; never waits behind an eval.
  Info info(int wait_ms);

  // The eval op: args "code" (string), optional "timeout_ms" (kills and restarts the worker).
  AgentResult<OpReply> eval(const Request& req);

  // Reseeds the worker's `random` module and numpy's legacy global RNG (when numpy is imported)
  // from os.urandom mixed with salt_hex (64 hex chars), and sets env in its os.environ. Waits at
  // most timeout_ms in all, also for a running eval. True when the running worker confirmed it.
  // The request is remembered: when it cannot be applied now (worker busy, starting, or dead)
  // it is applied before the next eval, and to every worker started later.
  bool reseed(const std::string& salt_hex, const WorkerEnv& env, int timeout_ms);

  // Records the reseed like reseed() without applying it: the next eval applies it first, and
  // nothing else runs in the worker. So `resumed` never waits for Python, and a child that never
  // evaluates never pays for it (cold Python code under TCG: 60-100 ms of the host's CPU per
  // child, measured, which a fan-out of 100 children paid whether they evaluated or not).
  // It builds no JSON: the message is made when it is sent.
  void defer_reseed(const std::string& salt_hex, const WorkerEnv& env);

 private:
  AgentStatus start_locked();
  // Sends the remembered reseed unless this worker already had it (true then too). A worker that
  // does not answer in time is stopped.
  bool apply_reseed_locked(int64_t timeout_ms);
  bool send_locked(const std::string& msg);
  void stop_locked();
  AgentResult<std::string> read_message_locked(int64_t timeout_ms);
  void set_info(bool python, Json numpy, bool starting);

  std::timed_mutex eval_mu_;  // serializes evals and (re)starts; guards the fields below
  pid_t pid_ = -1;
  UniqueFd to_worker_;
  UniqueFd from_worker_;
  uint64_t applied_reseed_ = 0;  // the reseed_gen_ this worker has had

  std::mutex info_mu_;  // guards the fields below
  std::condition_variable info_cv_;
  bool starting_ = false;
  bool python_ = false;
  Json numpy_;
  std::string reseed_salt_;  // the latest reseed request
  WorkerEnv reseed_env_;
  uint64_t reseed_gen_ = 0;  // bumped with every reseed() call
};

}  // namespace forkd::agent

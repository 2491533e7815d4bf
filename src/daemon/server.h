#pragma once
// `forkd serve`: the REST daemon. Listens on loopback TCP and/or a unix socket (mode 0600),
// checks the bearer token, writes the audit log, caps request bodies, and hands each request to
// the route tables (routes.h). Sandboxes outlive the daemon: stop() stops listening and waits
// for in-flight requests, and leaves every sandbox running.
#include <atomic>
#include <memory>
#include <optional>
#include <string>

#include "base/error.h"
#include "engine/config.h"

namespace forkd::daemon {

struct ServeOptions {
  std::optional<std::string> listen = "127.0.0.1:8889";  // host:port; nullopt: no TCP
  std::string socket;                                    // unix socket path; empty: none
  std::string token_file;                                // empty: no auth (loopback only)
  std::string audit_log;                                 // empty: no audit log
  // PEM files: both set, the TCP listener serves HTTPS (the unix socket stays plain HTTP);
  // both empty, plain HTTP. One without the other is refused.
  std::string tls_cert;
  std::string tls_key;
  size_t max_body_bytes = 1 << 20;
  int threads = 16;  // requests served at once
  // Connections queued or served at once, over every listener; beyond it the answer is 503.
  int max_inflight = 64;
  // Long requests (every POST: exec, eval, fork, snapshot, branch ...) at once, all sandboxes;
  // beyond it 503. At most threads - 1: the rest of the workers stay free for short requests
  // (healthz, lists, GETs), which do not wait behind a guest (only behind other short work:
  // DELETEs, which end with a QEMU's exit, and idle keep-alive connections, held up to httplib's 5
  // s). 0: threads - 4.
  int max_long_requests = 0;
  // Execs running at once on one sandbox; beyond it the answer is 429. Well under the long cap,
  // so one sandbox cannot take every long slot either.
  int max_execs_per_sandbox = 4;
  // Collected exec output kept per stream unless a request asks otherwise, and the total held
  // at once by all execs (beyond it, output is truncated early).
  size_t max_exec_output = 16u << 20;
  size_t exec_output_budget = 256u << 20;
  // Branches (and workspace suspends) writing at once; beyond it the answer is 503.
  int max_branches = 4;
  // Largest file uploaded or downloaded through /v1/sandboxes/:id/files; beyond it 413.
  uint64_t max_file_bytes = 1ull << 30;
  // PEM CA bundle for registries' HTTPS (push and pull); empty: the system's CAs. Given, it
  // also asks for HTTPS on loopback registries (hub/oci_tag.h open_registry).
  std::string registry_ca_file;
};

class Server {
 public:
  // Validates the options (token strength, loopback without a token, TLS files), opens the audit
  // log and binds the sockets. kInvalidArgument for refused configurations, with the reason.
  static Result<std::unique_ptr<Server>> create(const engine::EngineConfig& cfg,
                                                const ServeOptions& opts);
  ~Server();

  // Serves until stop(); returns once every listener has stopped and in-flight requests ended.
  Status run();
  // Thread-safe; callable before or during run(). Not async-signal-safe.
  void stop();

  // Where it listens, for the start-up message ("http://127.0.0.1:8889", "https://...",
  // "unix:/path").
  std::string endpoints() const;

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace forkd::daemon

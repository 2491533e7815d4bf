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
  // Execs running at once on one sandbox; beyond it the answer is 429.
  int max_execs_per_sandbox = 16;
  // Branches (and workspace suspends) writing at once; beyond it the answer is 503.
  int max_branches = 4;
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

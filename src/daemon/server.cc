#include "daemon/server.h"

#include <httplib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include "base/log.h"
#include "base/thread_root.h"
#include "base/unique_fd.h"
#include "daemon/audit.h"
#include "daemon/auth.h"
#include "daemon/errors.h"
#include "daemon/limits.h"
#include "daemon/routes.h"
#include "daemon/tls.h"
#include "engine/gc.h"
#include "engine/registry.h"

namespace forkd::daemon {

namespace {

using Clock = std::chrono::steady_clock;

// Per-request state, kept per worker thread: httplib runs pre-routing, the handler and the logger
// of one request on the same thread.
struct RequestState {
  Clock::time_point start = Clock::now();
  std::string route = "unmatched";
  std::shared_ptr<LongSlot> slot;  // the long slot held by this request, if any
};
thread_local RequestState t_request;

// httplib 0.11 binds only TCP; its protected listening socket lets a subclass serve a unix socket.
// Base is httplib::Server, or httplib::SSLServer for HTTPS on TCP.
template <typename Base>
class Listener : public Base {
 public:
  using Base::Base;

  // httplib listens with a backlog of 5: a burst of clients overflows the accept queue and their
  // connections are reset before the in-flight cap can answer them 503. Linux lets listen()
  // on a listening socket raise the backlog.
  void widen_backlog() {
    if (this->svr_sock_ != INVALID_SOCKET) (void)::listen(this->svr_sock_, SOMAXCONN);
  }

  Status bind_unix(const std::string& path) {
    sockaddr_un addr{};
    if (path.size() >= sizeof addr.sun_path) {
      return make_error(ErrorCode::kInvalidArgument, "socket path too long: " + path);
    }
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) {
        return make_error(ErrorCode::kAlreadyExists, path + " exists and is not a socket");
      }
      ::unlink(path.c_str());  // a stale socket of an earlier daemon
    }
    // Bound inside a fresh 0700 directory beside the target, made 0600, then renamed into
    // place: nobody else can connect at any moment, and no process-wide umask is touched while
    // other threads run.
    std::string parent = std::filesystem::path(path).parent_path().string();
    if (parent.empty()) parent = ".";
    std::string private_dir = parent + "/.fsk-XXXXXX";  // short: sun_path has 108 bytes
    if (::mkdtemp(private_dir.data()) == nullptr) return errno_error(errno, "mkdtemp " + parent);
    struct RemoveDir {
      std::string d;
      ~RemoveDir() { ::rmdir(d.c_str()); }
    } remove_dir{private_dir};
    std::string staged = private_dir + "/s";
    if (staged.size() >= sizeof addr.sun_path) {
      return make_error(ErrorCode::kInvalidArgument, "socket path too long: " + staged);
    }
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return errno_error(errno, "socket");
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, staged.c_str(), staged.size() + 1);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      return errno_error(errno, "bind " + path);
    }
    if (::chmod(staged.c_str(), 0600) != 0 || ::rename(staged.c_str(), path.c_str()) != 0) {
      int err = errno;
      ::unlink(staged.c_str());
      return errno_error(err, "bind " + path);
    }
    if (::listen(fd.get(), SOMAXCONN) != 0) {
      int err = errno;
      ::unlink(path.c_str());
      return errno_error(err, "listen " + path);
    }
    this->svr_sock_ = fd.release();
    return {};
  }
};
using PlainListener = Listener<httplib::Server>;
using TlsListener = Listener<httplib::SSLServer>;

struct HostPort {
  std::string host;
  int port = 0;
};

Result<HostPort> parse_listen(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return make_error(ErrorCode::kInvalidArgument, "--listen wants HOST:PORT, got '" + s + "'");
  }
  HostPort hp{s.substr(0, colon), 0};
  std::string port = s.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != port.npos ||
      std::stoi(port) > 65535) {
    return make_error(ErrorCode::kInvalidArgument, "--listen: bad port in '" + s + "'");
  }
  hp.port = std::stoi(port);
  if (hp.host.size() > 2 && hp.host.front() == '[' && hp.host.back() == ']') {
    hp.host = hp.host.substr(1, hp.host.size() - 2);
  }
  return hp;
}

std::string default_message(int status, const httplib::Request& req, size_t max_body) {
  switch (status) {
    case 404:
      return "no route for " + req.method + " " + req.path.substr(0, 200);
    case 413:
      return "request body larger than " + std::to_string(max_body) + " bytes";
    case 400:
      return "malformed HTTP request";
    default:
      return "HTTP error " + std::to_string(status);
  }
}

// Re-adoption after a restart (even after kill -9): sandboxes live in the run dir, not in the
// daemon, so live ones need nothing (the agent cache attaches on first use). gc removes records
// whose QEMU is gone, so the list shows only drivable sandboxes, and what dead processes left
// (orphan QEMUs, staging dirs, dead writers' records), so nothing accumulates.
void collect_garbage(const engine::EngineConfig& cfg) {
  auto r = engine::gc(cfg);
  for (const auto& id : r.dead_sandboxes) spdlog::info("reaped sandbox {}: its QEMU is gone", id);
  for (const auto& d : r.orphan_dirs) spdlog::info("reaped {}: nothing owned it", d);
}

// Reads a request body into a string, refusing more than max bytes (also for chunked bodies,
// which httplib itself does not bound). False after writing a 413 or 400 to res.
bool read_body(const httplib::ContentReader& reader, size_t max, std::string* out,
               httplib::Response& res) {
  bool too_large = false;
  bool ok = reader([&](const char* data, size_t len) {
    if (out->size() + len > max) {
      too_large = true;
      return false;
    }
    out->append(data, len);
    return true;
  });
  if (too_large || res.status == 413) {
    send_error(res, 413, "request body larger than " + std::to_string(max) + " bytes",
               "body_too_large");
    return false;
  }
  if (!ok) {
    send_error(res, 400, "could not read the request body", "http_error");
    return false;
  }
  return true;
}

}  // namespace

std::shared_ptr<LongSlot> current_long_slot() { return t_request.slot; }

struct Server::Impl {
  explicit Impl(const engine::EngineConfig& cfg) : ctx(cfg) {}

  DaemonContext ctx;
  ServeOptions opts;
  std::string token;  // empty: no auth
  std::optional<AuditLog> audit;
  std::vector<std::unique_ptr<httplib::Server>> servers;
  std::vector<std::string> endpoints;

  std::mutex mu;
  std::condition_variable cv;
  bool stop_requested = false;

  void install(httplib::Server& svr);
};

void Server::Impl::install(httplib::Server& svr) {
  int threads = opts.threads;
  svr.new_task_queue = [this, threads] {
    return new AdmissionQueue(ctx.inflight, static_cast<size_t>(threads));
  };
  // Upload routes take bodies up to the file cap; every other route is held to max_body_bytes
  // by read_body.
  svr.set_payload_max_length(std::max<uint64_t>(opts.max_body_bytes, opts.max_file_bytes));
  svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    t_request = RequestState{};
    // Before auth: refusing costs nothing and tells nothing. /healthz is refused too, so a
    // load balancer sees the daemon as saturated.
    if (over_inflight_cap()) {
      t_request.route = "busy";
      res.set_header("Retry-After", "1");
      send_error(res, 503,
                 "busy: more than " + std::to_string(ctx.inflight.cap) +
                     " requests in flight, retry later",
                 "busy");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (token.empty() || req.path == "/healthz") return httplib::Server::HandlerResponse::Unhandled;
    if (!bearer_matches(req.get_header_value("Authorization"), token)) {
      t_request.route = "auth";
      res.set_header("WWW-Authenticate", "Bearer");
      send_error(res, 401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                 "unauthorized");
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  std::vector<Route> routes = meta_routes(ctx);
  for (auto* more : {&snapshot_routes, &file_routes, &command_routes, &sandbox_routes,
                     &branch_routes, &workspace_routes, &hub_routes}) {
    auto r = (*more)(ctx);
    routes.insert(routes.end(), r.begin(), r.end());
  }
  for (auto& r : routes) {
    // Every POST waits on a guest, QEMU or the disk (exec, fork, branch, snapshot): it takes a
    // long slot. GETs read records and /proc only. DELETEs are bounded (a QEMU's exit, a few
    // seconds at most) and stay outside the cap on purpose: removing a sandbox is how a user
    // frees the slots its execs hold.
    bool long_work = r.method == "POST" || r.method == "PUT" || r.long_get;
    size_t max_body = opts.max_body_bytes;
    // Takes the long slot (false after answering 503), then runs body.
    auto admit = [this, label = r.label, long_work](httplib::Response& res) {
      t_request.route = label;
      t_request.slot.reset();
      if (!long_work) return true;
      auto slot = std::make_shared<LongSlot>(ctx);
      if (!slot->held()) {
        res.set_header("Retry-After", "1");
        send_error(res, 503,
                   "busy: " + std::to_string(ctx.long_cap) +
                       " long requests (exec, eval, fork, snapshot, branch...) running; "
                       "retry later",
                   "busy");
        return false;
      }
      t_request.slot = std::move(slot);
      return true;
    };
    if (r.method == "GET") {
      svr.Get(r.pattern,
              [admit, fn = r.handler](const httplib::Request& req, httplib::Response& res) {
                if (admit(res)) fn(req, res);
                t_request.slot.reset();
              });
      continue;
    }
    // Bodies are read here, bounded, never by httplib (which does not bound chunked ones).
    httplib::Server::HandlerWithContentReader h =
        [admit, fn = r.handler, reader = r.reader, max_body](
            const httplib::Request& req, httplib::Response& res,
            const httplib::ContentReader& content) {
          if (admit(res)) {
            if (reader) {
              reader(req, res, content);
            } else {
              // httplib's Request is its own non-const object; the handler gets the body in it.
              auto& mutable_req = const_cast<httplib::Request&>(req);
              if (read_body(content, max_body, &mutable_req.body, res)) fn(req, res);
            }
          }
          t_request.slot.reset();
        };
    if (r.method == "POST") svr.Post(r.pattern, h);
    if (r.method == "PUT") svr.Put(r.pattern, h);
    if (r.method == "DELETE") svr.Delete(r.pattern, h);
  }
  // A handler that throws (a bug, memory exhaustion) answers 500 in our error shape; httplib
  // catches it on the worker thread, so the daemon goes on.
  svr.set_exception_handler(
      [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        logger("daemon")->error("event=handler_exception path={} error=\"{}\"",
                                req.path.substr(0, 200), what);
        send_error(res, 500, "internal error: " + what, "internal");
      });
  svr.set_error_handler(
      [max_body = opts.max_body_bytes](const httplib::Request& req, httplib::Response& res) {
        if (res.body.empty()) {
          send_error(res, res.status, default_message(res.status, req, max_body),
                     res.status == 413 ? "body_too_large" : "http_error");
        }
      });
  svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t_request.start);
    ctx.metrics.count_request(t_request.route, res.status);
    if (audit) {
      std::string remote = req.remote_addr.empty()
                               ? "unix"
                               : req.remote_addr + ":" + std::to_string(req.remote_port);
      audit->append({req.method, req.path, res.status, us.count(),
                     req.get_header_value("User-Agent").substr(0, 256), remote});
    }
    t_request = RequestState{};
  });
}

Result<std::unique_ptr<Server>> Server::create(const engine::EngineConfig& cfg,
                                               const ServeOptions& opts) {
  auto impl = std::make_unique<Impl>(cfg);
  impl->opts = opts;
  if (opts.threads < 1 || opts.max_inflight < 1 || opts.max_execs_per_sandbox < 1 ||
      opts.max_branches < 1) {
    return make_error(ErrorCode::kInvalidArgument,
                      "threads, max_inflight, max_execs_per_sandbox and max_branches must be >= 1");
  }
  int long_cap = opts.max_long_requests > 0 ? opts.max_long_requests : opts.threads - 4;
  if (long_cap < 1 || long_cap > opts.threads - 1) {
    return make_error(ErrorCode::kInvalidArgument,
                      "max_long_requests must be 1.." + std::to_string(opts.threads - 1) +
                          " (fewer than the " + std::to_string(opts.threads) +
                          " worker threads, so short requests always find one)");
  }
  if (opts.max_exec_output < 1 || opts.exec_output_budget < opts.max_exec_output) {
    return make_error(ErrorCode::kInvalidArgument,
                      "exec output: the budget must be at least the per-exec cap (>= 1 byte)");
  }
  impl->ctx.long_cap = long_cap;
  impl->ctx.max_exec_output = opts.max_exec_output;
  impl->ctx.exec_output_budget.set_cap(opts.exec_output_budget);
  impl->ctx.branch_cap = opts.max_branches;
  impl->ctx.max_file_bytes = opts.max_file_bytes;
  if (!opts.registry_ca_file.empty() && ::access(opts.registry_ca_file.c_str(), R_OK) != 0) {
    return errno_error(errno, "registry CA file " + opts.registry_ca_file);
  }
  impl->ctx.registry_ca_file = opts.registry_ca_file;
  impl->ctx.inflight.cap = opts.max_inflight;
  impl->ctx.exec_slots.set_cap(opts.max_execs_per_sandbox);
  if (!opts.listen && opts.socket.empty()) {
    return make_error(ErrorCode::kInvalidArgument, "nothing to listen on (--listen or --socket)");
  }
  if (opts.tls_cert.empty() != opts.tls_key.empty()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "--tls-cert and --tls-key go together: give both, or neither");
  }
  bool tls = !opts.tls_cert.empty();
  if (tls && !opts.listen) {
    return make_error(ErrorCode::kInvalidArgument,
                      "--tls-cert/--tls-key apply to the TCP listener: add --listen HOST:PORT "
                      "(the unix socket is plain HTTP)");
  }
  if (!opts.token_file.empty()) {
    auto t = load_token(opts.token_file);
    if (!t) return tl::unexpected(t.error());
    impl->token = *t;
  }
  std::optional<HostPort> hp;
  if (opts.listen) {
    auto p = parse_listen(*opts.listen);
    if (!p) return tl::unexpected(p.error());
    if (!is_loopback_host(p->host) && impl->token.empty()) {
      return make_error(ErrorCode::kInvalidArgument,
                        "refusing to listen on non-loopback address " + p->host +
                            " without a token (give --token-file, or listen on 127.0.0.1)");
    }
    hp = *p;
    if (impl->token.empty()) {
      // An outbound guest reaches the host's loopback through its gateway (10.0.2.2): an API
      // with no token on a loopback port would be the guest's to drive.
      impl->ctx.cfg.outbound_refusal =
          "this daemon listens on " + *opts.listen +
          " without a token, and an outbound guest reaches the host's loopback through its "
          "gateway 10.0.2.2: restart it with --token-file (or with --socket only)";
      logger("daemon")->warn("event=outbound_refused why=\"no token on a TCP listener\"");
    }
  }
  if (!opts.audit_log.empty()) {
    auto a = AuditLog::open(opts.audit_log);
    if (!a) return tl::unexpected(a.error());
    impl->audit.emplace(std::move(*a));
  }
  if (hp) {
    std::unique_ptr<PlainListener> plain;
    std::unique_ptr<TlsListener> secure;
    httplib::Server* svr = nullptr;
    if (tls) {
      Status tls_status;
      secure = std::make_unique<TlsListener>([&](SSL_CTX& ssl) {
        tls_status = configure_tls(ssl, opts.tls_cert, opts.tls_key);
        return tls_status.has_value();
      });
      if (!tls_status) return tl::unexpected(tls_status.error());
      if (!secure->is_valid()) {
        return make_error(ErrorCode::kInternal, "TLS: cannot create an OpenSSL context");
      }
      svr = secure.get();
    } else {
      plain = std::make_unique<PlainListener>();
      svr = plain.get();
    }
    impl->install(*svr);
    int port = hp->port;
    if (port == 0) {
      port = svr->bind_to_any_port(hp->host);
      if (port < 0) port = 0;
    } else if (!svr->bind_to_port(hp->host, port)) {
      port = 0;
    }
    if (port == 0) {
      return make_error(ErrorCode::kUnavailable,
                        "cannot listen on " + *opts.listen + " (address in use or not local?)");
    }
    if (secure) {
      secure->widen_backlog();
      impl->servers.push_back(std::move(secure));
    } else {
      plain->widen_backlog();
      impl->servers.push_back(std::move(plain));
    }
    impl->endpoints.push_back((tls ? "https://" : "http://") + hp->host + ":" +
                              std::to_string(port));
  }
  if (!opts.socket.empty()) {
    auto svr = std::make_unique<PlainListener>();
    impl->install(*svr);
    if (auto st = svr->bind_unix(opts.socket); !st) return tl::unexpected(st.error());
    impl->endpoints.push_back("unix:" + opts.socket);
    impl->servers.push_back(std::move(svr));
  }
  collect_garbage(cfg);
  for (const auto& id : engine::resume_stopped_sandboxes(cfg)) {
    spdlog::warn("resumed sandbox {}: it was left stopped (a branch interrupted by a crash)", id);
  }
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() {
  if (!impl_->opts.socket.empty()) ::unlink(impl_->opts.socket.c_str());
}

std::string Server::endpoints() const {
  std::string out;
  for (const auto& e : impl_->endpoints) out += (out.empty() ? "" : " ") + e;
  return out;
}

Status Server::run() {
  std::vector<std::atomic<bool>> done(impl_->servers.size());
  std::vector<std::jthread> threads;
  // gc every minute while serving (a CLI killed mid-fork leaves an orphan QEMU behind).
  std::jthread janitor([this](std::stop_token st) {
    std::mutex m;
    std::condition_variable_any cv;
    while (!st.stop_requested()) {
      std::unique_lock lock(m);
      if (cv.wait_for(lock, st, std::chrono::seconds(60), [] { return false; })) break;
      if (st.stop_requested()) break;
      guarded("gc", [this] { collect_garbage(impl_->ctx.cfg); });
    }
  });
  for (size_t i = 0; i < impl_->servers.size(); ++i) {
    threads.emplace_back([this, i, &done] {
      impl_->servers[i]->listen_after_bind();
      std::lock_guard g(impl_->mu);
      done[i] = true;
      impl_->cv.notify_all();
    });
  }
  std::unique_lock lock(impl_->mu);
  impl_->cv.wait(lock, [&] {
    if (impl_->stop_requested) return true;
    for (auto& d : done) {
      if (d) return true;  // a listener failed on its own: stop the others too
    }
    return false;
  });
  lock.unlock();
  // Streaming and background commands may run for hours: end their agent calls, so the workers
  // streaming them and the threads running them finish now.
  impl_->ctx.commands.shutdown();
  // Pushes and pulls (wait:true ones hold a worker) stop at their next registry read or write.
  impl_->ctx.transfers.cancel_all();
  // stop() before a listener reached its accept loop is lost, so repeat until each has ended.
  for (;;) {
    bool all = true;
    for (size_t i = 0; i < impl_->servers.size(); ++i) {
      if (!done[i]) {
        impl_->servers[i]->stop();
        all = false;
      }
    }
    if (all) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  threads.clear();
  janitor.request_stop();
  janitor = {};
  // A wait:false branch still writing finishes its tag (its source already runs again); give it
  // time rather than leave a failed tag behind.
  for (int i = 0; i < 1200 && impl_->ctx.branches_in_flight.load() > 0; ++i) {
    if (i == 0)
      spdlog::info("waiting for {} branch(es) to finish", impl_->ctx.branches_in_flight.load());
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return {};
}

void Server::stop() {
  std::lock_guard lock(impl_->mu);
  impl_->stop_requested = true;
  impl_->cv.notify_all();
}

}  // namespace forkd::daemon

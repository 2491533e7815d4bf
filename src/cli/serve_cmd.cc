// serve: the REST daemon (src/daemon) in the foreground.
#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <memory>

#include "cli/output.h"
#include "daemon/server.h"
#include "engine/sandbox_jail.h"
#include "engine/vm_setup.h"
#include "vmm/ksm.h"

namespace forkd::cli {

namespace {

struct ServeArgs {
  std::string listen = "127.0.0.1:8889";
  std::string expose_address;  // empty: the config's (FORKD_EXPOSE_ADDRESS or 127.0.0.1)
  std::string socket;
  std::string token_file;
  std::string audit_log;
  std::string tls_cert;
  std::string tls_key;
  std::string registry_ca_file;
  size_t max_body_bytes = 1 << 20;
  int max_inflight = 64;
  int max_execs_per_sandbox = 4;
  int max_branches = 4;
  int max_long_requests = 12;
  size_t max_exec_output_mib = 16;
  uint64_t max_file_mib = 1024;
  size_t exec_output_budget_mib = 256;
  LimitArgs limits;  // default host-side limits of every sandbox's QEMU
  bool listen_given = false;
};

std::atomic<daemon::Server*> g_server{nullptr};

// Runs on main's signal thread: SIGTERM/SIGINT/SIGHUP stop the daemon gracefully, and the
// sandboxes stay running (they are not owned by this process).
void on_signal(int sig) {
  std::fprintf(stderr, "\nforkd: %s, stopping the daemon (sandboxes keep running)\n",
               strsignal(sig));
  if (auto* s = g_server.load()) s->stop();
}

int do_serve(const GlobalOptions& g, const ServeArgs& a) {
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  // A setting every fork would fail on is refused before the daemon serves anything.
  if (auto st = engine::check_ksm(*cfg); !st) return report_error(st.error());
  if (cfg->ksm && !vmm::read_ksm_state().running) {
    std::fprintf(stderr,
                 "forkd: FORKD_KSM=1, but ksmd is not running: nothing will be merged "
                 "(echo 1 > /sys/kernel/mm/ksm/run)\n");
  }
  cfg->default_limits = engine::merge_limits(cfg->default_limits, a.limits.limits());
  if (!a.expose_address.empty()) cfg->expose_address = a.expose_address;
  daemon::ServeOptions o;
  // With only --socket, no TCP listener.
  if (!a.socket.empty() && !a.listen_given) {
    o.listen.reset();
  } else {
    o.listen = a.listen;
  }
  o.socket = a.socket;
  o.token_file = a.token_file;
  o.audit_log = a.audit_log;
  o.tls_cert = a.tls_cert;
  o.tls_key = a.tls_key;
  o.registry_ca_file = a.registry_ca_file;
  o.max_body_bytes = a.max_body_bytes;
  o.max_inflight = a.max_inflight;
  o.max_execs_per_sandbox = a.max_execs_per_sandbox;
  o.max_branches = a.max_branches;
  o.max_long_requests = a.max_long_requests;
  o.threads = a.max_long_requests + 4;  // 4 workers always free for short requests
  o.max_exec_output = a.max_exec_output_mib << 20;
  o.max_file_bytes = a.max_file_mib << 20;
  o.exec_output_budget = a.exec_output_budget_mib << 20;
  auto server = daemon::Server::create(*cfg, o);
  if (!server) return report_error(server.error());
  g_server = server->get();
  set_signal_hook(&on_signal);
  std::fprintf(stderr, "forkd: serving on %s%s\n", (*server)->endpoints().c_str(),
               a.token_file.empty() ? " (no token: loopback only)" : "");
  auto st = (*server)->run();
  g_server = nullptr;
  if (!st) return report_error(st.error());
  std::fprintf(stderr, "forkd: stopped\n");
  return 0;
}

}  // namespace

void register_serve(CLI::App& app, GlobalOptions& g, Action& action) {
  auto a = std::make_shared<ServeArgs>();
  auto* sub = app.add_subcommand("serve", "Run the REST API daemon (forkd API v1)");
  sub->add_option("--listen", a->listen, "TCP HOST:PORT (non-loopback needs --token-file)")
      ->capture_default_str();
  sub->add_option("--socket", a->socket, "Unix socket path (created mode 0600)");
  sub->add_option("--token-file", a->token_file,
                  "File holding the bearer token (>= 32 random characters)");
  sub->add_option("--audit-log", a->audit_log, "Append one JSON line per request here");
  sub->add_option("--tls-cert", a->tls_cert,
                  "PEM certificate (chain) for HTTPS on the TCP listener; needs --tls-key");
  sub->add_option("--tls-key", a->tls_key, "PEM private key (unencrypted) for --tls-cert");
  sub->add_option("--registry-ca-file", a->registry_ca_file,
                  "PEM CA bundle for registries' HTTPS in push and pull (also asks for HTTPS on "
                  "loopback); default: the system's CAs");
  sub->add_option("--max-body-bytes", a->max_body_bytes, "Largest request body accepted")
      ->check(CLI::Range(size_t{1}, size_t{64} << 20))
      ->capture_default_str();
  sub->add_option("--max-inflight", a->max_inflight,
                  "Requests queued or running at once; beyond: 503")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  sub->add_option("--max-execs-per-sandbox", a->max_execs_per_sandbox,
                  "Concurrent execs per sandbox; beyond: 429")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  sub->add_option("--max-long-requests", a->max_long_requests,
                  "Long requests (every POST: exec, eval, fork, snapshot, branch) at once; beyond: "
                  "503. Short ones (healthz, lists, GETs) get 4 more workers of their own")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  sub->add_option(
         "--max-file-mib", a->max_file_mib,
         "Largest file uploaded or downloaded through /v1/sandboxes/:id/files; beyond: 413")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 20))
      ->capture_default_str();
  sub->add_option("--max-exec-output-mib", a->max_exec_output_mib,
                  "MiB of stdout and of stderr an exec answer keeps, each, unless the request "
                  "sets max_output_bytes; the rest is dropped and the answer says truncated")
      ->check(CLI::Range(size_t{1}, size_t{256}))
      ->capture_default_str();
  sub->add_option("--exec-output-budget-mib", a->exec_output_budget_mib,
                  "MiB of exec output held at once by all execs together (bounds the daemon's "
                  "memory under many floods at once)")
      ->check(CLI::Range(size_t{1}, size_t{65536}))
      ->capture_default_str();
  sub->add_option("--max-branches", a->max_branches,
                  "Branches being written at once (the contract's cap); beyond: 503")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  sub->add_option("--expose-address", a->expose_address,
                  "IPv4 address exposed guest ports listen on (default 127.0.0.1)")
      ->check([](const std::string& v) {
        return engine::is_ipv4_address(v) ? std::string() : "not an IPv4 address: " + v;
      });
  // Defaults: a spawn's memory_limit_mib, cpu_limit and pids_limit override them.
  add_limit_options(sub, &a->limits, "each sandbox's QEMU by default");
  sub->callback([&action, &g, a, sub] {
    a->listen_given = sub->count("--listen") > 0;
    action = [&g, a] { return do_serve(g, *a); };
  });
}

}  // namespace forkd::cli

#include "bench/api_bench.h"

#include <chrono>
#include <cstdio>
#include <memory>
#include <numeric>
#include <thread>

#include "bench/bench_home.h"
#include "bench/stats.h"
#include "daemon/server.h"
#include "engine/fork.h"
#include "engine/registry.h"
#include "engine/snapshot.h"

namespace forkd::bench {

namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

// Untimed calls before each series: the first execs in a fresh child translate cold guest code,
// and the daemon attaches to the agent on its first exec.
constexpr int kWarmupCalls = 5;

// Everything the bench starts, torn down in reverse order on every exit path: the daemon (its
// agent connections with it), then the sandbox's QEMU. The bench home itself is a TempDir
// declared before this, so it goes last, with the tag in it.
struct Teardown {
  engine::EngineConfig cfg;
  std::unique_ptr<daemon::Server> server;
  std::jthread serving;
  std::string sandbox_id;

  ~Teardown() {
    if (server) server->stop();
    if (serving.joinable()) serving.join();
    server.reset();
    if (!sandbox_id.empty()) {
      if (auto st = engine::remove_sandbox(cfg, sandbox_id); !st) {
        std::fprintf(stderr, "forkd: bench api: removing sandbox %s: %s\n", sandbox_id.c_str(),
                     st.error().describe().c_str());
      }
    }
  }
};

Json series_json(const std::vector<double>& ms) {
  Json j = summarize(ms).to_json();
  j["mean"] = ms.empty() ? 0.0 : std::accumulate(ms.begin(), ms.end(), 0.0) / ms.size();
  return j;
}

// Runs call kWarmupCalls times untimed, then n times timed (ms each). Stops at the first error.
template <typename Call>
Result<std::vector<double>> time_series(const char* what, int n, Call call) {
  std::vector<double> ms;
  ms.reserve(static_cast<size_t>(n));
  for (int i = 0; i < kWarmupCalls + n; ++i) {
    FORKD_TRY(check_interrupted());
    auto t = Clock::now();
    if (auto st = call(); !st) return tl::unexpected(st.error().wrap(what));
    if (i >= kWarmupCalls) {
      ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t).count());
    }
  }
  return ms;
}

Status exit_zero(int code, const char* via) {
  if (code == 0) return {};
  return make_error(ErrorCode::kInternal,
                    std::string("`true` exited ") + std::to_string(code) + " via " + via);
}

}  // namespace

Result<Json> run_api_bench(engine::EngineConfig cfg, const ApiBenchOptions& a) {
  if (!a.connect) return make_error(ErrorCode::kInvalidArgument, "bench api: no REST client");
  auto home = make_bench_home(cfg, "forkd-bench-api");
  if (!home) return tl::unexpected(home.error());
  cfg.home = home->path();
  Teardown td;
  td.cfg = cfg;

  engine::SnapshotOptions so;
  so.tag = "bench-api";
  so.image = a.image;
  so.memory_mib = a.memory_mib;
  so.progress = a.progress;
  std::fprintf(stderr, "forkd: bench api: creating a %s tag\n", a.image.c_str());
  auto snap = engine::create_snapshot(cfg, so);
  if (!snap) return tl::unexpected(snap.error());
  FORKD_TRY(check_interrupted());
  auto forked = fork_one(cfg, so.tag);
  if (!forked) return tl::unexpected(forked.error());
  const auto& child = *forked;
  td.sandbox_id = child.id;
  if (child.error) return tl::unexpected(*child.error);
  FORKD_TRY(check_interrupted());

  engine::ExecOptions eo;
  eo.argv = {"true"};
  std::vector<double> direct;
  {
    // The attached object holds the agent connection, which QEMU gives one client at a time:
    // it is closed before the daemon is started.
    auto sb = engine::Sandbox::attach(cfg, child.id);
    if (!sb) return tl::unexpected(sb.error());
    std::fprintf(stderr, "forkd: bench api: %d execs through the engine\n", a.runs);
    auto r = time_series("direct exec", a.runs, [&]() -> Status {
      auto res = (*sb)->exec(eo);
      if (!res) return tl::unexpected(res.error());
      return exit_zero(res->exit_code, "the engine");
    });
    if (!r) return tl::unexpected(r.error());
    direct = std::move(*r);
  }

  daemon::ServeOptions opts;
  opts.listen = "127.0.0.1:0";  // any free port; loopback without a token is allowed
  auto server = daemon::Server::create(cfg, opts);
  if (!server) return tl::unexpected(server.error().wrap("start daemon"));
  td.server = std::move(*server);
  std::string url = td.server->endpoints();
  td.serving = std::jthread([s = td.server.get()] { (void)s->run(); });
  auto client = a.connect(url);
  if (!client) return tl::unexpected(client.error());

  std::fprintf(stderr, "forkd: bench api: %d execs and %d GET /healthz through %s\n", a.runs,
               a.runs, url.c_str());
  Json body = {{"args", eo.argv}};
  std::string exec_path = "/v1/sandboxes/" + child.id + "/exec";
  auto rest = time_series("REST exec", a.runs, [&]() -> Status {
    auto res = client->post(exec_path, body);
    if (!res) return tl::unexpected(res.error());
    return exit_zero(res->value("exit_code", -1), "the daemon");
  });
  if (!rest) return tl::unexpected(rest.error());
  auto healthz = time_series("GET /healthz", a.runs, [&]() -> Status {
    auto res = client->get("/healthz");
    if (!res) return tl::unexpected(res.error());
    return {};
  });
  if (!healthz) return tl::unexpected(healthz.error());

  Json d = series_json(direct), r = series_json(*rest);
  Json out = {{"bench", "api"},
              {"image", a.image},
              {"memory_mib", a.memory_mib},
              {"runs", a.runs},
              {"warmup_calls", kWarmupCalls},
              {"transport", "tcp loopback, one connection per request"},
              {"exec_direct_ms", d},
              {"exec_rest_ms", r},
              {"healthz_rest_ms", series_json(*healthz)},
              {"rest_overhead_ms",
               {{"p50", r["median"].get<double>() - d["median"].get<double>()},
                {"p90", r["p90"].get<double>() - d["p90"].get<double>()},
                {"mean", r["mean"].get<double>() - d["mean"].get<double>()}}}};
  // The hosts are shared: the load says how much to trust a sub-millisecond difference.
  add_host_facts(out, cfg);
  return out;
}

void print_api_bench(const Json& r) {
  std::printf("REST overhead per request, image %s, %d calls each (loopback TCP), ms\n",
              r["image"].get<std::string>().c_str(), r["runs"].get<int>());
  std::printf("%-28s %8s %8s %8s\n", "", "p50", "p90", "mean");
  auto row = [&r](const char* label, const char* key, const char* p50 = "median") {
    const auto& s = r[key];
    std::printf("%-28s %8.2f %8.2f %8.2f\n", label, s[p50].get<double>(), s["p90"].get<double>(),
                s["mean"].get<double>());
  };
  row("exec `true`, engine direct", "exec_direct_ms");
  row("exec `true`, through REST", "exec_rest_ms");
  row("GET /healthz", "healthz_rest_ms");
  row("REST minus direct", "rest_overhead_ms", "p50");
}

}  // namespace forkd::bench

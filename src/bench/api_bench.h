#pragma once
// forkd bench api: what the REST daemon adds to a request. One sandbox, forked from a throw-away
// tag in a throw-away FORKD_HOME, runs `true` N times straight through the engine and N times
// through a daemon (in this process, on a loopback port); N GET /healthz give the cost of HTTP
// alone. Everything is torn down on every exit path, Ctrl-C (check_interrupted) included.
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "base/error.h"
#include "engine/config.h"
#include "engine/image_store.h"

namespace forkd::bench {

// The daemon's REST API as the bench calls it: POST with a JSON body, and GET; each gives the
// answer's JSON or the error (a non-2xx answer included).
struct RestClient {
  std::function<Result<nlohmann::json>(const std::string& path, const nlohmann::json& body)> post;
  std::function<Result<nlohmann::json>(const std::string& path)> get;
};

struct ApiBenchOptions {
  std::string image = "minimal";
  int runs = 200;  // calls per series
  int memory_mib = 256;
  engine::ProgressFn progress;  // the tag's creation
  // A client of the daemon at url ("http://127.0.0.1:PORT", no token). The CLI passes its client
  // mode's (a new TCP connection per request), so the figure is what `forkd --url` pays.
  std::function<Result<RestClient>(const std::string& url)> connect;
};

// JSON: exec_direct_ms, exec_rest_ms, healthz_rest_ms (summaries with mean), rest_overhead_ms
// (p50, p90, mean of REST minus direct), host_loadavg, accel.
Result<nlohmann::json> run_api_bench(engine::EngineConfig cfg, const ApiBenchOptions& o);

// The result as a table on stdout.
void print_api_bench(const nlohmann::json& r);

}  // namespace forkd::bench

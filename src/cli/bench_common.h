#pragma once
// Plumbing shared by the benchmarks that run in a throw-away FORKD_HOME (bench api, bench
// branch): the home itself, Ctrl-C handling, and the verb's run/print/exit-code frame.
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "base/error.h"
#include "base/files.h"
#include "cli/output.h"
#include "engine/config.h"

namespace forkd::cli {

// A private FORKD_HOME for a benchmark: its own sandboxes, tags and assembled chain memory; the
// real home's images and build-cache entries (kernel, rootfs) through symlinks, so nothing is
// rebuilt and no file of the bench lands in the real home (removing the TempDir removes links,
// never what they point at).
Result<TempDir> make_bench_home(const engine::EngineConfig& real, const std::string& prefix);

// Adds what says how far to trust a result of this host: host_loadavg (1 and 5 min) and accel.
void add_host_facts(nlohmann::json& out, const engine::EngineConfig& cfg);

// kCancelled once Ctrl-C/SIGTERM arrived during run_bench_verb (the bench then cleans up).
Status check_interrupted();

// Runs a benchmark verb: installs the signal hook, runs, prints JSON or the human table, and
// returns the CLI exit code (130 when interrupted).
int run_bench_verb(const GlobalOptions& g, const std::string& name, bool json,
                   const std::function<Result<nlohmann::json>(const engine::EngineConfig&)>& run,
                   const std::function<void(const nlohmann::json&)>& print_human);

}  // namespace forkd::cli

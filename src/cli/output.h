#pragma once
// Shared CLI plumbing: error printing, exit codes, global options, progress lines.
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "engine/agent_client.h"
#include "engine/config.h"
#include "engine/image_store.h"
#include "engine/sandbox.h"

// CLI11 is header-only and emits code in every file that includes it: only the files that build
// options include <CLI/CLI.hpp>.
namespace CLI {
class App;
}  // namespace CLI

namespace forkd::cli {

// Exit codes of the CLI itself (a `run` passes the guest command's code through instead).
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitTimeout = 124;
inline constexpr int kExitNotFound = 127;
inline constexpr int kExitInterrupted = 130;

struct GlobalOptions {
  std::string accel = "auto";
  std::string machine;  // empty: engine default (FORKD_MACHINE or microvm)
  bool verbose = false;
  // CLI client mode: the daemon's URL (--url or FORKD_URL). Empty: the embedded engine.
  std::string url;
};

// Prints "forkd: <message> [code]" to stderr and returns the exit code for it.
int report_error(const Error& err);

// The engine configuration from the environment and the global flags. kInvalidArgument for a
// bad --machine.
Result<engine::EngineConfig> make_config(const GlobalOptions& g);

// Host-side limits of a QEMU as given on a command line (0: unset), and their options
// --memory-limit, --cpus, --pids on sub; `whose` completes their help ("each child's QEMU").
struct LimitArgs {
  int memory_limit_mib = 0;
  double cpus = 0;
  int pids = 0;
  vmm::Limits limits() const;
};
void add_limit_options(CLI::App* sub, LimitArgs* a, const std::string& whose);

// A sandbox's exposed ports for people: "  8080->127.0.0.1:34137" each ([] gives "").
std::string ports_text(const nlohmann::json& ports);

// How long ago a Unix time was, for tables: "42s", "17m", "5h".
std::string age_text(int64_t created_unix);

// Progress printer for long operations: "forkd: <line>" on stderr.
engine::ProgressFn stderr_progress();

// Byte progress for a transfer ("forkd: pack py: 45% of 912.4 MB"), redrawn in place at most 5
// times a second when stderr is a terminal; nothing otherwise. Thread-safe.
std::function<void(uint64_t done, uint64_t total)> byte_progress(std::string label);

// Each verb registers its subcommand; when CLI11 selects it, its callback stores the action to run
// in `action`, and main runs it after parsing (CLI11 callbacks cannot return an exit code).
using Action = std::function<int()>;
void register_run(CLI::App& app, GlobalOptions& g, Action& action);
void register_doctor(CLI::App& app, GlobalOptions& g, Action& action);
void register_bench(CLI::App& app, GlobalOptions& g, Action& action);
void register_demo(CLI::App& app, GlobalOptions& g, Action& action);
void register_snapshot(CLI::App& app, GlobalOptions& g, Action& action);
void register_fork(CLI::App& app, GlobalOptions& g, Action& action);
void register_sandbox_verbs(CLI::App& app, GlobalOptions& g, Action& action);
void register_serve(CLI::App& app, GlobalOptions& g, Action& action);
void register_branch(CLI::App& app, GlobalOptions& g, Action& action);
void register_workspace(CLI::App& app, GlobalOptions& g, Action& action);
void register_mcp(CLI::App& app, GlobalOptions& g, Action& action);
void register_hub(CLI::App& app, GlobalOptions& g, Action& action);
void register_image(CLI::App& app, GlobalOptions& g, Action& action);

// SIGINT/SIGTERM/SIGHUP normally tear down every sandbox this process owns and exit 130. A verb
// that handles them itself (serve: graceful stop, sandboxes left running) installs a hook, which
// then runs on the signal thread instead, once per signal. Defined in main.cc.
using SignalHook = void (*)(int sig);
void set_signal_hook(SignalHook hook);

// The output sink of an exec: streams to stdout/stderr, or nothing (collected) for --json.
engine::EventFn exec_stream(bool json);
// Finishes an exec for the CLI: prints the JSON result (with extra fields) when json, reports a
// timeout, and returns the exit code the CLI should exit with.
int finish_exec(const engine::ExecResult& res, bool json, double timeout_s,
                nlohmann::json extra = nlohmann::json::object());

// Prints JSON to stdout (invalid UTF-8 replaced, never thrown on).
void print_json(const nlohmann::json& j);

// Parses KEY=VALUE strings into env; kInvalidArgument naming the bad one.
Status parse_env(const std::vector<std::string>& kvs, std::map<std::string, std::string>* env);

}  // namespace forkd::cli

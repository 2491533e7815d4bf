// forkd run: boot a sandbox, run one command, stream its output, exit with its code.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "base/files.h"
#include "cli/output.h"
#include "engine/sandbox.h"

namespace forkd::cli {

namespace {

struct RunArgs {
  std::string image = "minimal";
  int memory_mib = 256;
  int cpus = 1;
  double timeout_s = 0;
  double boot_timeout_s = 90;
  std::string cwd;
  std::vector<std::string> env;
  bool json = false;
  std::string extra_append;
  std::vector<std::string> command;
};

int do_run(const GlobalOptions& g, const RunArgs& a) {
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  engine::BootOptions bo;
  bo.image = a.image;
  bo.memory_mib = a.memory_mib;
  bo.cpus = a.cpus;
  bo.boot_timeout = std::chrono::milliseconds(static_cast<int64_t>(a.boot_timeout_s * 1000));
  bo.progress = stderr_progress();
  bo.extra_append = a.extra_append;
  engine::ExecOptions eo;
  eo.argv = a.command;
  eo.cwd = a.cwd;
  eo.timeout = std::chrono::milliseconds(static_cast<int64_t>(a.timeout_s * 1000));
  if (auto st = parse_env(a.env, &eo.env); !st) return report_error(st.error());

  auto sb = engine::Sandbox::boot(*cfg, bo);
  if (!sb) return report_error(sb.error());
  auto res = (*sb)->exec(eo, exec_stream(a.json));
  double boot_ms = (*sb)->timings().agent_ms;
  (*sb)->destroy();
  if (!res) return report_error(res.error());
  return finish_exec(*res, a.json, a.timeout_s, {{"boot_ms", boot_ms}});
}

}  // namespace

void register_run(CLI::App& app, GlobalOptions& g, Action& action) {
  auto a = std::make_shared<RunArgs>();
  auto* sub = app.add_subcommand("run", "Boot a sandbox, run a command in it, tear it down");
  sub->add_option("--image", a->image, "Guest image: minimal, python or a local one (forkd images)")
      ->capture_default_str();
  sub->add_option("--memory", a->memory_mib, "Guest memory in MiB")
      ->check(CLI::Range(64, 65536))
      ->capture_default_str();
  sub->add_option("--cpus", a->cpus, "Guest vCPUs")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  sub->add_option("--timeout", a->timeout_s, "Kill the command after S seconds (0: none)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--boot-timeout", a->boot_timeout_s, "Give up if the agent has not answered")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--cwd", a->cwd, "Working directory in the guest");
  sub->add_option("-e,--env", a->env, "KEY=VALUE added to the command's environment");
  sub->add_flag("--json", a->json, "Print one JSON result instead of streaming output");
  sub->add_option("--kernel-append", a->extra_append, "Extra kernel arguments (debugging)")
      ->group("");
  sub->add_option("command", a->command, "Command and arguments (after --)")->required();
  sub->callback([&action, &g, a] { action = [&g, a] { return do_run(g, *a); }; });
}

}  // namespace forkd::cli

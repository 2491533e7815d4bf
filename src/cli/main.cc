// forkd command line: thin front end over the engine library.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <thread>

#include "base/log.h"
#include "base/paths.h"
#include "cli/output.h"
#include "cli/remote_verbs.h"
#include "engine/gc.h"
#include "engine/sandbox.h"
#include "vmm/ksm.h"
#include "vmm/vm_process.h"

namespace {

std::atomic<forkd::cli::SignalHook> g_signal_hook{nullptr};

std::atomic<bool> g_tearing_down{false};

// Ctrl-C, SIGTERM and SIGHUP are taken by a dedicated thread (the signals are blocked everywhere
// else), which tears down every sandbox this process owns before exiting.
void start_signal_thread() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    int sig = 0;
    for (;;) {
      if (sigwait(&set, &sig) != 0) return;
      auto hook = g_signal_hook.load();
      if (!hook) break;
      hook(sig);
    }
    g_tearing_down = true;  // main() now waits for the _exit below (the exit code is 130)
    std::fprintf(stderr, "\nforkd: %s, tearing down sandboxes\n", strsignal(sig));
    // No QEMU starts from here on, and any being started runs (and so can be found) by now.
    forkd::vmm::VmProcess::stop_launches();
    forkd::engine::Sandbox::destroy_all_owned();
    // QEMUs this process started that have no record yet (a fork in progress) die with it.
    (void)forkd::engine::kill_unrecorded_children(forkd::engine::EngineConfig::from_env());
    forkd::vmm::restore_ksmd();  // what a bench changed for its run
    _exit(forkd::cli::kExitInterrupted);
  }).detach();
}

}  // namespace

void forkd::cli::set_signal_hook(SignalHook hook) { g_signal_hook = hook; }

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  start_signal_thread();
  forkd::init_logging(spdlog::level::warn);

  CLI::App app{"forkd: fork-able microVM sandboxes for AI agents"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(forkd::forkd_version()));
  forkd::cli::GlobalOptions g;
  app.add_option("--accel", g.accel, "Accelerator: auto (default), kvm or tcg")
      ->check(CLI::IsMember({"auto", "kvm", "tcg"}));
  app.add_option("--machine", g.machine, "QEMU machine type: microvm (default) or pc");
  app.add_flag("-v,--verbose", g.verbose, "Log engine steps to stderr");
  app.add_option("--url", g.url,
                 "Client mode: send fork/ps/exec/eval/rm/snapshot/images/rmi to the forkd daemon "
                 "at this URL (http://HOST:PORT or unix:///PATH; token from FORKD_TOKEN)")
      ->envname("FORKD_URL");
  app.parse_complete_callback([&g] {
    if (g.verbose) forkd::init_logging(spdlog::level::info);
  });

  forkd::cli::Action action;
  forkd::cli::register_run(app, g, action);
  forkd::cli::register_doctor(app, g, action);
  forkd::cli::register_bench(app, g, action);
  forkd::cli::register_demo(app, g, action);
  forkd::cli::register_snapshot(app, g, action);
  forkd::cli::register_fork(app, g, action);
  forkd::cli::register_sandbox_verbs(app, g, action);
  forkd::cli::register_serve(app, g, action);
  forkd::cli::register_branch(app, g, action);
  forkd::cli::register_workspace(app, g, action);
  forkd::cli::register_mcp(app, g, action);
  forkd::cli::register_hub(app, g, action);
  forkd::cli::register_image(app, g, action);

  // CLI11 reports usage errors by exception; this is the library boundary where they end.
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : forkd::cli::kExitUsage;
  }
  // Client mode covers the verbs the REST API can express. Verbs that drive this machine's engine
  // directly are refused rather than silently run locally; doctor and serve ignore --url (they are
  // about this machine: serve is the daemon itself).
  if (!g.url.empty()) {
    for (const char* verb : {"run", "demo", "bench", "pool", "cp", "image"}) {
      if (app.got_subcommand(verb)) return forkd::cli::remote_unsupported(verb);
    }
  }
  int code = action ? action() : 0;
  // A verb that failed because Ctrl-C's teardown killed its VM must not exit first with its own
  // code: the signal thread ends the process (130) once the teardown is done.
  while (g_tearing_down.load()) pause();
  return code;
}

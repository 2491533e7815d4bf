// forkd bench VERB: the flags of each benchmark; the measuring and the tables are src/bench's.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <functional>
#include <memory>

#include "base/files.h"
#include "bench/api_bench.h"
#include "bench/bench_home.h"
#include "bench/boot_bench.h"
#include "bench/branch_bench.h"
#include "bench/exec_bench.h"
#include "bench/pack_bench.h"
#include "bench/spawn_bench.h"
#include "cli/output.h"
#include "cli/remote_client.h"

namespace forkd::cli {

namespace {

using Json = nlohmann::json;

// The engine config from the global flags, run, then its JSON (--json) or print's table; out:
// also write the JSON there. An interruptible bench cleans up by itself on Ctrl-C (it checks
// bench::check_interrupted between steps); the others keep the CLI's default: every sandbox of
// this process torn down, exit 130. Returns the CLI exit code (130 when interrupted).
int run_bench(const GlobalOptions& g, const char* name, bool interruptible,
              const std::function<Result<Json>(const engine::EngineConfig&)>& run,
              void (*print)(const Json&), bool json, const std::string& out) {
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  if (interruptible) {
    bench::clear_interrupt();
    set_signal_hook([](int) { bench::interrupt(); });
  }
  auto r = run(*cfg);
  if (interruptible) set_signal_hook(nullptr);
  if (!r) {
    if (interruptible && bench::interrupted()) {
      std::fprintf(stderr, "forkd: bench %s: interrupted, cleaned up\n", name);
      return kExitInterrupted;
    }
    return report_error(r.error());
  }
  if (!out.empty()) {
    if (auto st = write_file_atomic(out, r->dump(2) + "\n"); !st) return report_error(st.error());
  }
  if (json) {
    print_json(*r);
  } else {
    print(*r);
  }
  return 0;
}

// A verb's options, its --json flag and (spawn) --out file, shared by CLI11's callback.
template <typename Options>
struct Verb {
  Options o;
  bool json = false;
  std::string out;
};

// Adds --json to sub, and the action CLI11 stores when it selects sub: run(config, options)
// through run_bench, with progress lines on stderr where the bench takes them.
template <typename Options, typename Run>
void add_action(CLI::App* sub, GlobalOptions& g, Action& action,
                const std::shared_ptr<Verb<Options>>& v, const char* name, bool interruptible,
                Run run, void (*print)(const Json&)) {
  sub->add_flag("--json", v->json, "Machine-readable output");
  sub->callback([&action, &g, v, name, interruptible, run, print] {
    action = [&g, v, name, interruptible, run, print] {
      if constexpr (requires { v->o.progress; }) v->o.progress = stderr_progress();
      return run_bench(
          g, name, interruptible, [&](const engine::EngineConfig& cfg) { return run(cfg, v->o); },
          print, v->json, v->out);
    };
  });
}

void add_boot(CLI::App& bench, GlobalOptions& g, Action& action) {
  auto v = std::make_shared<Verb<bench::BootBenchOptions>>();
  auto* sub = bench.add_subcommand("boot", "Cold boot to first ping, and exec round trip");
  sub->add_option("--image", v->o.image, "minimal or python")->capture_default_str();
  sub->add_option("--runs", v->o.runs, "Boots per machine type")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  sub->add_option("--execs", v->o.execs, "Exec round trips per boot")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  sub->add_option("--memory", v->o.memory_mib, "Guest memory in MiB")->check(CLI::Range(64, 65536));
  sub->add_option("--machines", v->o.machines, "Machine types to compare (microvm, pc)")
      ->check(CLI::IsMember({"microvm", "pc"}))
      ->delimiter(',');
  add_action(sub, g, action, v, "boot", false, bench::run_boot_bench, bench::print_boot_bench);
}

void add_spawn(CLI::App& bench, GlobalOptions& g, Action& action) {
  auto v = std::make_shared<Verb<bench::SpawnBenchOptions>>();
  auto* sub =
      bench.add_subcommand("spawn", "Fork N children; compare with cold boot and plain restore");
  sub->add_option("--tag", v->o.tag, "Tag to fork from")->required();
  sub->add_option("-n", v->o.n, "Children")->check(CLI::Range(1, 1000))->capture_default_str();
  sub->add_option("--pool", v->o.pool, "Pre-start this many QEMUs before timing")
      ->check(CLI::Range(0, 256));
  sub->add_flag("--warm", v->o.warm, "Warm pool members (see forkd pool fill --warm)");
  sub->add_option("--parallel", v->o.parallel, "Children restored at once")
      ->check(CLI::Range(1, 64));
  sub->add_option("--idle", v->o.idle_s, "Seconds to let children idle before measuring memory");
  sub->add_flag("!--no-baselines", v->o.baselines, "Skip the cold-boot and plain-restore runs");
  sub->add_option("--out", v->out, "Also write the JSON result to this file");
  sub->add_option("--compare-tag", v->o.compare_tag,
                  "Tag for the unjailed side of the one-at-a-time forks (default: --tag); give "
                  "one made without a network to measure an outbound tag's NIC too");
  sub->add_flag("--per-child-netns", v->o.netns,
                "Also time children in a network namespace of their own against children on "
                "slirp (an outbound tag; root)");
  sub->add_flag("--ksm", v->o.ksm,
                "Children's memory mergeable by KSM (as FORKD_KSM=1); starts ksmd for the run "
                "if it is off (root)");
  sub->add_option("--ksm-pages", v->o.ksm_pages,
                  "With --ksm: pages ksmd scans every 20 ms or so during the run (its "
                  "pages_to_scan; the kernel's default is 100)")
      ->check(CLI::Range(1, 100000));
  add_action(sub, g, action, v, "spawn", true, bench::run_spawn_bench, bench::print_spawn_bench);
}

void add_api(CLI::App& bench, GlobalOptions& g, Action& action) {
  auto v = std::make_shared<Verb<bench::ApiBenchOptions>>();
  auto* sub = bench.add_subcommand(
      "api", "Per-request overhead of the REST daemon: exec through the engine vs through REST");
  sub->add_option("--image", v->o.image, "minimal or python")->capture_default_str();
  sub->add_option("--runs", v->o.runs, "Calls per series")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  sub->add_option("--memory", v->o.memory_mib, "Guest memory in MiB")->check(CLI::Range(64, 65536));
  // The CLI client mode's HTTP client, so the figure is what `forkd --url` pays.
  v->o.connect = [](const std::string& url) -> Result<bench::RestClient> {
    auto c = RemoteClient::create(url, "");
    if (!c) return tl::unexpected(c.error());
    auto client = std::make_shared<RemoteClient>(std::move(*c));  // shared by both calls
    return bench::RestClient{
        [client](const std::string& path, const Json& body) { return client->post(path, body); },
        [client](const std::string& path) { return client->get(path); }};
  };
  add_action(sub, g, action, v, "api", true, bench::run_api_bench, bench::print_api_bench);
}

void add_exec(CLI::App& bench, GlobalOptions& g, Action& action) {
  auto v = std::make_shared<Verb<bench::ExecBenchOptions>>();
  auto* sub = bench.add_subcommand(
      "exec", "Exec and eval round trips in children of a warm tag: the first call and later ones");
  sub->add_option("--image", v->o.image, "python (exec and eval) or minimal (exec)")
      ->capture_default_str();
  sub->add_option("--children", v->o.children, "Children, forked and measured one at a time")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  sub->add_option("--runs", v->o.runs, "Later calls of each kind per child")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  sub->add_option("--memory", v->o.memory_mib, "Guest memory in MiB")
      ->check(CLI::Range(64, 65536))
      ->capture_default_str();
  add_action(sub, g, action, v, "exec", true, bench::run_exec_bench, bench::print_exec_bench);
}

void add_branch(CLI::App& bench, GlobalOptions& g, Action& action) {
  auto v = std::make_shared<Verb<bench::BranchBenchOptions>>();
  auto* sub = bench.add_subcommand(
      "branch", "BRANCH pause per mode vs QEMU's plain stop + save, and chain spawn by depth");
  sub->add_option("--image", v->o.image, "minimal or python")->capture_default_str();
  sub->add_option("--memory", v->o.memory_mib, "Guest memory in MiB")
      ->check(CLI::Range(64, 65536))
      ->capture_default_str();
  sub->add_option("--dirty-mibps", v->o.dirty_mibps, "Guest writer dirtying this many MiB/s")
      ->check(CLI::Range(0.0, 10000.0));
  sub->add_option("--runs", v->o.runs, "Branches per mode")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  sub->add_option("--modes", v->o.modes, "Modes to measure (live, full)")
      ->check(CLI::IsMember({"live", "full", "diff"}))
      ->delimiter(',');
  sub->add_option("--baseline-runs", v->o.baseline_runs,
                  "Plain saves (default: --runs up to 512 MiB, else 3)")
      ->check(CLI::Range(1, 1000));
  sub->add_option("--chain-spawns", v->o.chain_spawns, "Later spawns per chain depth")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  add_action(sub, g, action, v, "branch", true, bench::run_branch_bench, bench::print_branch_bench);
}

void add_pack(CLI::App& bench, GlobalOptions& g, Action& action) {
  auto v = std::make_shared<Verb<bench::PackBenchOptions>>();
  auto* sub = bench.add_subcommand(
      "pack", "PACK and UNPACK a tag vs tar --sparse | zstd -T0 of the same files");
  sub->add_option("--tag", v->o.tag, "Tag to pack (default: a fresh idle python tag)");
  sub->add_option("--image", v->o.image, "Image of the fresh tag")->capture_default_str();
  sub->add_option("--memory", v->o.memory_mib, "Memory of the fresh tag in MiB")
      ->check(CLI::Range(64, 65536))
      ->capture_default_str();
  sub->add_option("--runs", v->o.runs, "Rounds (medians are printed)")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  add_action(sub, g, action, v, "pack", true, bench::run_pack_bench, bench::print_pack_bench);
}

}  // namespace

void register_bench(CLI::App& app, GlobalOptions& g, Action& action) {
  auto* bench = app.add_subcommand("bench", "Benchmarks that print figures");
  bench->require_subcommand(1);
  add_boot(*bench, g, action);
  add_spawn(*bench, g, action);
  add_api(*bench, g, action);
  add_exec(*bench, g, action);
  add_branch(*bench, g, action);
  add_pack(*bench, g, action);
}

}  // namespace forkd::cli

// forkd demo: the tour. Build a warm python tag (numpy imported in the agent's worker), fork 20
// children from it, evaluate numpy in each, branch one of them mid-task, and put fork time and
// memory beside a cold boot plus warm-up of the same image.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <memory>

#include "base/clock.h"
#include "bench/baseline.h"
#include "bench/stats.h"
#include "cli/output.h"
#include "engine/branch.h"
#include "engine/chain_ops.h"
#include "engine/fork.h"
#include "engine/pool.h"
#include "engine/registry.h"
#include "engine/snapshot.h"
#include "store/snapshot_store.h"

namespace forkd::cli {

namespace {

using Clock = std::chrono::steady_clock;

// Step 4: branch a running child mid-task and fork from the branch. Returns the pause (ms) or
// the error; the branch tag and its child are removed again.
struct BranchStep {
  double pause_ms = 0;
  bool child_ok = false;
  bool source_ok = false;
};

Result<std::string> eval_in(const engine::EngineConfig& cfg, const std::string& id,
                            const std::string& code) {
  // Attached only for this call: no connection of ours is open at a branch (see branch.h).
  auto sb = engine::Sandbox::attach(cfg, id);
  if (!sb) return tl::unexpected(sb.error());
  auto r = (*sb)->eval(code);
  if (!r) return tl::unexpected(r.error());
  if (r->error) return make_error(ErrorCode::kAgentError, *r->error);
  return r->value.value_or("None");
}

Result<BranchStep> branch_step(const engine::EngineConfig& cfg, const std::string& source,
                               const std::string& tag) {
  (void)engine::remove_tag(cfg, tag, engine::RemoveMode::kCascade);  // a leftover of a past run
  FORKD_TRY(eval_in(cfg, source, "x = numpy.arange(10) * 7").map([](auto&&) {}));
  engine::BranchOptions bo;
  bo.sandbox_id = source;
  bo.tag = tag;
  auto br = engine::branch_sandbox(cfg, bo);
  if (!br) return tl::unexpected(br.error());
  BranchStep out;
  out.pause_ms = br->pause_ms;
  std::printf("   %s paused %.1f ms; its state is now tag %s (a link storing %.1f MiB)\n",
              source.c_str(), br->pause_ms, tag.c_str(),
              static_cast<double>(br->link_bytes) / 1048576);
  auto src_after = eval_in(cfg, source, "x = x + 1");
  if (src_after) src_after = eval_in(cfg, source, "int(x.sum())");
  out.source_ok = src_after && *src_after == "325";
  engine::ForkOptions fo;
  fo.tag = tag;
  auto forked = engine::fork_children(cfg, fo);
  if (forked && !forked->children[0].error) {
    std::string child = forked->children[0].id;
    auto v = eval_in(cfg, child, "int(x.sum())");
    out.child_ok = v && *v == "315";
    std::printf("   child %s of %s: x.sum() = %s; the source went on: %s\n", child.c_str(),
                tag.c_str(), v ? v->c_str() : v.error().describe().c_str(),
                src_after ? src_after->c_str() : src_after.error().describe().c_str());
    (void)engine::remove_sandbox(cfg, child);
  }
  (void)engine::remove_tag(cfg, tag, engine::RemoveMode::kCascade);
  return out;
}

struct DemoArgs {
  std::string image = "python";
  std::string tag = "demo-py";
  int children = 20;
};

int do_demo(const GlobalOptions& g, const DemoArgs& a) {
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  std::printf("== forkd demo: %d children from a warm %s tag ==\n\n", a.children, a.image.c_str());
  std::fflush(stdout);

  std::printf("1. snapshot: boot the %s image, import numpy, freeze it as tag %s\n",
              a.image.c_str(), a.tag.c_str());
  std::fflush(stdout);
  engine::SnapshotOptions so;
  so.tag = a.tag;
  so.image = a.image;
  so.memory_mib = 512;
  so.force = true;
  so.warmup_eval = {"import numpy, random\nwarm_since = 'snapshot'"};
  so.progress = stderr_progress();
  auto snap = engine::create_snapshot(*cfg, so);
  if (!snap) return report_error(snap.error());
  std::printf("   tag ready: boot %.0f ms, warm-up %.0f ms, device state saved in %.0f ms\n\n",
              snap->boot_ms, snap->warmup_ms, snap->save_ms);

  // Two ways to fork: straight from the tag, and from a warm pool prepared in advance.
  std::vector<std::string> ids;
  auto fork_n = [&](const char* how, bench::Summary* lat, double* wall) -> Status {
    engine::ForkOptions fo;
    fo.tag = a.tag;
    fo.n = a.children;
    auto forked = engine::fork_children(*cfg, fo);
    if (!forked) return tl::unexpected(forked.error());
    std::vector<double> latency;
    for (const auto& c : forked->children) {
      if (c.error) {
        std::fprintf(stderr, "forkd: child failed: %s\n", c.error->describe().c_str());
        continue;
      }
      latency.push_back(c.timings.launch_ms + c.timings.ready_ms);
      ids.push_back(c.id);
    }
    *lat = bench::summarize(latency);
    *wall = forked->wall_ms;
    std::printf("   %s: %zu children ready in %.0f ms (each: %.1f ms p50)\n", how, latency.size(),
                *wall, lat->median);
    return {};
  };
  std::printf("2. fork %d children from %s\n", a.children, a.tag.c_str());
  std::fflush(stdout);
  bench::Summary lat, pool_lat;
  double wall = 0, pool_wall = 0;
  if (auto st = fork_n("straight from the tag", &lat, &wall); !st) return report_error(st.error());
  for (const auto& id : ids) (void)engine::remove_sandbox(*cfg, id);
  ids.clear();
  engine::Pool pool(*cfg);
  store::SnapshotStore snaps(cfg->home);
  auto t_pool = Clock::now();
  if (auto st = pool.configure(a.tag, {a.children, true}); !st) return report_error(st.error());
  auto filled = pool.fill(snap->meta, snaps.dir(a.tag));
  (void)pool.configure(a.tag, {});
  if (!filled) return report_error(filled.error());
  std::printf("   (a warm pool of %d was prepared beforehand in %.0f ms)\n", *filled,
              ms_since(t_pool));
  if (auto st = fork_n("from the warm pool", &pool_lat, &pool_wall); !st) {
    return report_error(st.error());
  }
  std::printf("\n");

  std::printf("3. numpy.zeros(5).tolist() in each child's warm worker\n");
  std::vector<double> eval_ms;
  int good = 0;
  for (const auto& id : ids) {
    auto sb = engine::Sandbox::attach(*cfg, id);
    if (!sb) {
      std::fprintf(stderr, "forkd: %s\n", sb.error().describe().c_str());
      continue;
    }
    auto t = Clock::now();
    auto r = (*sb)->eval("numpy.zeros(5).tolist()");
    eval_ms.push_back(ms_since(t));
    bool ok = r && !r->error && r->value == "[0.0, 0.0, 0.0, 0.0, 0.0]";
    good += ok;
    std::printf(
        "   %s  %-28s %6.1f ms\n", id.c_str(),
        r ? (r->error ? "error" : r->value.value_or("None").c_str()) : r.error().describe().c_str(),
        eval_ms.back());
  }
  std::vector<double> uss, pss;
  for (const auto& s : engine::list_sandboxes(*cfg)) {
    if (s.record.value("tag", "") != a.tag) continue;
    uss.push_back(static_cast<double>(s.uss_kib) / 1024);
    pss.push_back(static_cast<double>(s.pss_kib) / 1024);
  }
  std::printf("\n4. branch %s mid-task: x = numpy.arange(10) * 7, snapshot it live, go on\n",
              ids.empty() ? "(none)" : ids[0].c_str());
  std::fflush(stdout);
  Result<BranchStep> branched = make_error(ErrorCode::kInternal, "no child to branch");
  if (!ids.empty()) branched = branch_step(*cfg, ids[0], a.tag + "-branch");
  if (!branched) std::fprintf(stderr, "forkd: branch: %s\n", branched.error().describe().c_str());

  std::printf("\n5. the same warm state the slow way: cold boot + numpy import\n");
  std::fflush(stdout);
  auto cold = bench::cold_boot_and_warm(*cfg, snap->meta);
  for (const auto& id : ids) (void)engine::remove_sandbox(*cfg, id);
  if (!cold) return report_error(cold.error());

  std::printf("\n%-46s %12s\n", "", "result");
  std::printf("%-46s %9.0f ms\n", "cold boot + warm-up (one sandbox)", cold->total_ms);
  std::string n = std::to_string(a.children);
  std::printf("%-46s %9.1f ms\n", "fork from the tag, per child (p50)", lat.median);
  std::printf("%-46s %9.0f ms\n", ("fork of " + n + " from the tag, all ready").c_str(), wall);
  std::printf("%-46s %9.1f ms\n", "fork from a warm pool, per child (p50)", pool_lat.median);
  std::printf("%-46s %9.0f ms\n", ("fork of " + n + " from a warm pool, all ready").c_str(),
              pool_wall);
  std::printf("%-46s %9.0fx\n", "speed-up per child, from the tag",
              lat.median > 0 ? cold->total_ms / lat.median : 0);
  std::printf("%-46s %9.0fx\n", "speed-up per child, from a warm pool",
              pool_lat.median > 0 ? cold->total_ms / pool_lat.median : 0);
  std::printf("%-46s %9.1f ms\n", "eval in a child (p50)", bench::summarize(eval_ms).median);
  std::printf("%-46s %8.1f MiB\n", "unique memory per child (USS, p50)",
              bench::summarize(uss).median);
  std::printf("%-46s %8.1f MiB\n", "proportional memory per child (PSS, p50)",
              bench::summarize(pss).median);
  std::printf("%-46s %5d / %zu\n", "children that answered correctly", good, ids.size());
  bool branch_ok = branched && branched->child_ok && branched->source_ok;
  if (branched) {
    std::printf("%-46s %9.1f ms\n", "branch: source paused", branched->pause_ms);
  }
  std::printf("%-46s %12s\n", "branch: child and source both correct", branch_ok ? "yes" : "NO");
  return good == a.children && branch_ok ? 0 : kExitError;
}

}  // namespace

void register_demo(CLI::App& app, GlobalOptions& g, Action& action) {
  auto a = std::make_shared<DemoArgs>();
  auto* sub = app.add_subcommand(
      "demo", "Tour: warm python tag, fork 20, numpy in each, branch one, vs cold boot");
  sub->add_option("--image", a->image, "Image for the tag")->capture_default_str();
  sub->add_option("--tag", a->tag, "Tag to (re)create")->capture_default_str();
  sub->add_option("-n", a->children, "Children")->check(CLI::Range(1, 1000))->capture_default_str();
  sub->callback([&action, &g, a] { action = [&g, a] { return do_demo(g, *a); }; });
}

}  // namespace forkd::cli

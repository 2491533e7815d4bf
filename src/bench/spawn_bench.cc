#include "bench/spawn_bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <thread>
#include <vector>

#include "bench/baseline.h"
#include "bench/bench_home.h"
#include "bench/proc_cpu.h"
#include "bench/stats.h"
#include "engine/fork.h"
#include "engine/pool.h"
#include "engine/registry.h"
#include "engine/vm_setup.h"
#include "store/snapshot_store.h"
#include "vmm/jail.h"
#include "vmm/ksm.h"

namespace forkd::bench {

namespace {

using Clock = std::chrono::steady_clock;

// One child alone, no pool: its timings (launch_ms and ready_ms).
Result<engine::RestoreTimings> time_one_child(const engine::EngineConfig& cfg,
                                              engine::ForkOptions one) {
  one.n = 1;
  one.use_pool = false;
  auto r = engine::fork_children(cfg, one);
  if (!r) return tl::unexpected(r.error());
  const auto& c = r->children[0];
  if (!c.id.empty()) (void)engine::remove_sandbox(cfg, c.id);
  if (c.error) return tl::unexpected(*c.error);
  return c.timings;
}

// One child at a time from a pool of one member of the tag's kind (warm or cold), the member
// started and settled before each claim so that no start-up shares the machine with it: the
// latency a single fork from a ready pool has (claim, state, cont, identity).
Result<std::vector<double>> time_pooled_children(const engine::EngineConfig& cfg,
                                                 engine::Pool& pool,
                                                 const store::SnapshotMeta& meta,
                                                 const std::string& tag_dir,
                                                 const SpawnBenchOptions& a, int runs) {
  std::vector<double> out;
  FORKD_TRY(pool.configure(a.tag, {1, a.warm}));
  struct Reset {  // whatever happens: the tag's pool as the batch left it (off), no member left
    engine::Pool& pool;
    const std::string& tag;
    ~Reset() {
      (void)pool.configure(tag, {});
      pool.drain(tag);
    }
  } reset{pool, a.tag};
  for (int i = 0; i < runs; ++i) {
    FORKD_TRY(check_interrupted());
    auto filled = pool.fill(meta, tag_dir);
    if (!filled) return tl::unexpected(filled.error());
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    engine::ForkOptions one;
    one.tag = a.tag;
    one.n = 1;
    auto r = engine::fork_children(cfg, one);
    if (!r) return tl::unexpected(r.error());
    const auto& c = r->children[0];
    if (!c.id.empty()) (void)engine::remove_sandbox(cfg, c.id);
    if (c.error) return tl::unexpected(*c.error);
    if (!c.from_pool) {
      return make_error(ErrorCode::kInternal,
                        "bench spawn: a single fork did not get the pool's member");
    }
    out.push_back(c.timings.launch_ms + c.timings.ready_ms);
  }
  return out;
}

// KSM over a run (--ksm or FORKD_KSM=1): ksmd started if it was off and its scan rate set if
// asked (both set back at the end, or by the CLI's Ctrl-C teardown), and its CPU time read at
// each mark.
class KsmRun {
 public:
  Status start(int pages_to_scan) {
    if (std::string why = vmm::ksm_unsupported_reason(); !why.empty()) {
      return make_error(ErrorCode::kFailedPrecondition, "bench spawn --ksm: " + why);
    }
    auto started = vmm::run_ksmd_for_measurement(pages_to_scan);
    on_ = true;  // whatever it changed is set back, even when it failed halfway
    if (!started) return tl::unexpected(started.error().wrap("bench spawn --ksm"));
    started_ = *started;
    if (started_) std::fprintf(stderr, "forkd: bench spawn: started ksmd for this run\n");
    pid_ = vmm::ksmd_pid();
    return {};
  }
  ~KsmRun() {
    if (on_) vmm::restore_ksmd();
  }
  // ksmd's CPU seconds so far (0 without KSM).
  double cpu() const { return pid_ ? process_cpu_seconds(*pid_).value_or(0) : 0; }
  nlohmann::json to_json(double batch_cpu_s, double batch_s, double idle_cpu_s,
                         double idle_s) const {
    if (!on_) return {{"enabled", false}};
    auto k = vmm::read_ksm_state();
    nlohmann::json out = {{"enabled", true},
                          {"ksmd_started_by_bench", started_},
                          {"pages_to_scan", k.pages_to_scan},
                          {"sleep_ms", k.sleep_ms},
                          {"saved_mib", static_cast<double>(k.pages_sharing) * 4 / 1024}};
    if (pid_) {  // ksmd is not visible from every pid namespace
      out["ksmd_cpu_pct_batch"] = batch_s > 0 ? batch_cpu_s / batch_s * 100 : 0;
      out["ksmd_cpu_pct_idle"] = idle_s > 0 ? idle_cpu_s / idle_s * 100 : 0;
    }
    return out;
  }

 private:
  bool on_ = false;
  bool started_ = false;
  std::optional<pid_t> pid_;
};

}  // namespace

Result<nlohmann::json> run_spawn_bench(const engine::EngineConfig& given,
                                       const SpawnBenchOptions& a) {
  engine::EngineConfig cfg = given;
  cfg.ksm = cfg.ksm || a.ksm;
  KsmRun ksm;
  if (a.ksm_pages > 0 && !cfg.ksm) {
    return make_error(ErrorCode::kInvalidArgument, "bench spawn: --ksm-pages needs --ksm");
  }
  if (cfg.ksm) FORKD_TRY(ksm.start(a.ksm_pages));
  store::SnapshotStore snaps(cfg.home);
  auto meta = snaps.load(a.tag);
  if (!meta) return tl::unexpected(meta.error());
  FORKD_TRY(snaps.verify(*meta));
  engine::Pool pool(cfg);
  pool.drain(a.tag);
  // Whatever ends the run (an error, Ctrl-C), it leaves no child of the batch and no member of
  // the tag's pool behind.
  struct Leftovers {
    const engine::EngineConfig& cfg;
    engine::Pool& pool;
    const std::string& tag;
    std::vector<std::string> ids;
    void remove_children() {
      for (const auto& id : ids) (void)engine::remove_sandbox(cfg, id);
      ids.clear();
    }
    ~Leftovers() {
      remove_children();
      pool.drain(tag);
    }
  } leftovers{cfg, pool, a.tag, {}};
  double prestart_ms = 0;
  if (a.pool > 0) {
    FORKD_TRY(pool.configure(a.tag, {a.pool, a.warm}));
    auto t = Clock::now();
    auto filled = pool.fill(*meta, snaps.dir(a.tag));
    if (!filled) return tl::unexpected(filled.error());
    prestart_ms = std::chrono::duration<double, std::milli>(Clock::now() - t).count();
    FORKD_TRY(pool.configure(a.tag, {}));  // no refill during the measurement
  }
  FORKD_TRY(check_interrupted());
  std::fprintf(stderr, "forkd: bench spawn: forking %d children from %s\n", a.n, a.tag.c_str());
  engine::ForkOptions fo;
  fo.tag = a.tag;
  fo.n = a.n;
  fo.parallel = a.parallel;
  const double ksmd_before = ksm.cpu();
  auto forked = engine::fork_children(cfg, fo);
  const double ksmd_batch = ksm.cpu() - ksmd_before;
  if (!forked) return tl::unexpected(forked.error());
  for (const auto& c : forked->children) {
    if (!c.id.empty()) leftovers.ids.push_back(c.id);
  }
  FORKD_TRY(check_interrupted());
  std::vector<double> latency, since_start, launch, claim, incoming, identity;
  int failed = 0, from_pool = 0;
  for (const auto& c : forked->children) {
    if (c.error) {
      ++failed;
      continue;
    }
    from_pool += c.from_pool;
    // launch_ms includes the pool claim (QMP connect and handshake) for a pooled child.
    latency.push_back(c.timings.launch_ms + c.timings.ready_ms);
    since_start.push_back(c.total_ms);
    launch.push_back(c.timings.launch_ms);
    if (c.from_pool) claim.push_back(c.timings.claim_ms);
    incoming.push_back(c.timings.incoming_ms);
    identity.push_back(c.timings.ready_ms - c.timings.incoming_ms);
  }
  // The idle window: each child's QEMU CPU time before and after it (a child that exits
  // meanwhile is left out), then its memory.
  std::vector<std::pair<int, double>> cpu_before;
  for (const auto& s : engine::list_sandboxes(cfg)) {
    if (s.record.value("tag", "") != a.tag || !s.alive()) continue;
    if (auto c = process_cpu_seconds(s.pid)) cpu_before.emplace_back(s.pid, *c);
  }
  auto t_idle = Clock::now();
  const double ksmd_idle_before = ksm.cpu();
  const auto idle_end = t_idle + std::chrono::milliseconds(static_cast<int64_t>(a.idle_s * 1000));
  while (Clock::now() < idle_end && !interrupted()) {  // Ctrl-C ends the wait
    std::this_thread::sleep_for(
        std::min<Clock::duration>(std::chrono::milliseconds(200), idle_end - Clock::now()));
  }
  FORKD_TRY(check_interrupted());
  const double idle_s = std::chrono::duration<double>(Clock::now() - t_idle).count();
  const double ksmd_idle = ksm.cpu() - ksmd_idle_before;
  auto ksm_json = ksm.to_json(ksmd_batch, forked->wall_ms / 1000, ksmd_idle, idle_s);
  std::vector<double> idle_cpu;
  double idle_cpu_total = 0;
  for (const auto& [pid, before] : cpu_before) {
    auto after = process_cpu_seconds(pid);
    if (!after || a.idle_s <= 0) continue;
    idle_cpu.push_back((*after - before) / idle_s * 100);
    idle_cpu_total += idle_cpu.back();
  }
  std::vector<double> uss, pss;
  for (const auto& s : engine::list_sandboxes(cfg)) {
    if (s.record.value("tag", "") != a.tag || !s.alive()) continue;
    uss.push_back(static_cast<double>(s.uss_kib) / 1024);
    pss.push_back(static_cast<double>(s.pss_kib) / 1024);
  }
  leftovers.remove_children();
  // The same fork one child at a time on an otherwise idle machine: what the single-VM baselines
  // below compare with fairly (a batch's p50 includes queueing behind its siblings). Where the
  // jail is on, each jailed fork (with limits) alternates with one unjailed (no cgroup, this
  // process's uid), so that the jail's cost is measured side by side. The jailed side has the
  // tag's network (outbound for a tag with a NIC); the bare side forks compare_tag (default: the
  // tag) with network none.
  const bool jail_on = vmm::host_jail().active && cfg.jail;
  const std::string bare_tag = a.compare_tag.empty() ? a.tag : a.compare_tag;
  engine::EngineConfig bare = cfg;
  bare.jail = false;
  bare.default_limits = {};
  std::vector<double> single, unjailed;
  // The batch's QEMUs are still being torn down (pages freed, cgroups removed): let that pass
  // so it does not weigh on the first forks, and start with the bare side.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  for (int i = 0; i < (jail_on ? 12 : 6); ++i) {
    FORKD_TRY(check_interrupted());
    const bool jailed = jail_on && i % 2 == 1;
    engine::ForkOptions one;
    one.tag = jailed || !jail_on ? a.tag : bare_tag;
    // With a compare tag (made without a network), the bare side is today's plain child.
    if (!jailed && jail_on && !a.compare_tag.empty()) one.network = "none";
    if (jailed) {
      one.limits.memory_bytes = 4ull << 30;
      one.limits.cpus = 2;
      one.limits.pids = 512;
    }
    auto t = time_one_child(jailed || !jail_on ? cfg : bare, one);
    if (!t) return tl::unexpected(t.error());
    (jailed || !jail_on ? single : unjailed).push_back(t->launch_ms + t->ready_ms);
  }
  // Children on slirp against children in a namespace of their own, alternating, same limits.
  // Launch includes making the namespace.
  std::vector<double> on_slirp, in_netns, launch_slirp, launch_netns, ready_slirp, ready_netns;
  if (a.netns) {
    for (int i = 0; i < 12; ++i) {
      FORKD_TRY(check_interrupted());
      engine::ForkOptions one;
      one.tag = a.tag;
      one.per_child_netns = i % 2 == 1;
      auto t = time_one_child(cfg, one);
      if (!t) return tl::unexpected(t.error());
      (one.per_child_netns ? in_netns : on_slirp).push_back(t->launch_ms + t->ready_ms);
      (one.per_child_netns ? launch_netns : launch_slirp).push_back(t->launch_ms);
      (one.per_child_netns ? ready_netns : ready_slirp).push_back(t->ready_ms);
    }
  }
  std::vector<double> pooled_single;
  if (a.pool > 0) {
    std::fprintf(stderr, "forkd: bench spawn: single forks from a pool of one\n");
    auto p = time_pooled_children(cfg, pool, *meta, snaps.dir(a.tag), a, 10);
    if (!p) return tl::unexpected(p.error());
    pooled_single = std::move(*p);
  }
  Summary lat = summarize(latency);
  Summary one = summarize(single);
  nlohmann::json out = {
      {"bench", "spawn"},
      {"tag", a.tag},
      {"image", meta->image},
      {"memory_mib", meta->memory_mib},
      {"n", a.n},
      {"pool", a.pool},
      {"pool_warm", a.warm},
      {"parallel", a.parallel},
      {"tb_size_mib", cfg.tb_size_mib},
      {"failed", failed},
      {"from_pool", from_pool},
      {"pool_prestart_ms", prestart_ms},
      {"wall_ms", forked->wall_ms},
      {"verify_ms", forked->verify_ms},
      {"child_latency_ms", lat.to_json()},
      {"child_latency_includes_claim", true},
      {"single_child_ms", one.to_json()},
      {"jailed", jail_on},
      {"qemu_version", vmm::host_jail().qemu_version},
      // Children without a network ran forkd's static QEMU build (vmm/static_qemu.h).
      {"qemu_static_build", !engine::static_qemu_binary(cfg).empty()},
      {"single_child_unjailed_ms", summarize(unjailed).to_json()},
      {"single_child_pooled_ms", summarize(pooled_single).to_json()},
      {"network", meta->network},
      {"unjailed_tag", bare_tag},
      {"unjailed_network", a.compare_tag.empty() ? meta->network : "none"},
      {"ready_since_start_ms", summarize(since_start).to_json()},
      {"single_child_slirp_ms", summarize(on_slirp).to_json()},
      {"single_child_netns_ms", summarize(in_netns).to_json()},
      {"single_child_launch_ms",
       {{"slirp", summarize(launch_slirp).to_json()},
        {"netns", summarize(launch_netns).to_json()}}},
      {"single_child_ready_ms",
       {{"slirp", summarize(ready_slirp).to_json()}, {"netns", summarize(ready_netns).to_json()}}},
      {"breakdown_ms",
       {{"qemu_launch", summarize(launch).to_json()},
        {"pool_claim", summarize(claim).to_json()},
        {"device_state_load", summarize(incoming).to_json()},
        {"identity", summarize(identity).to_json()}}},
      {"idle_s", idle_s},
      {"idle_cpu_pct", summarize(idle_cpu).to_json()},
      {"idle_cpu_pct_all_children", idle_cpu_total},
      {"uss_mib", summarize(uss).to_json()},
      {"pss_mib", summarize(pss).to_json()},
      {"ksm", ksm_json}};
  if (a.baselines) {
    FORKD_TRY(check_interrupted());
    std::fprintf(stderr, "forkd: bench spawn: cold boot + warm-up baseline\n");
    auto cold = cold_boot_and_warm(cfg, *meta);
    if (!cold) return tl::unexpected(cold.error());
    FORKD_TRY(check_interrupted());
    std::fprintf(stderr, "forkd: bench spawn: plain QEMU restore baseline\n");
    auto plain = plain_restore(cfg, *meta);
    if (!plain) return tl::unexpected(plain.error());
    out["cold_boot_ms"] = {
        {"boot", cold->boot_ms}, {"warmup", cold->warmup_ms}, {"total", cold->total_ms}};
    out["plain_restore_ms"] = {{"save", plain->save_ms},
                               {"save_includes_fsync", true},
                               {"save_without_fsync", plain->save_no_fsync_ms},
                               {"state_mib", plain->state_bytes >> 20},
                               {"launch", plain->launch_ms},
                               {"load", plain->load_ms},
                               {"agent", plain->agent_ms},
                               {"total", plain->total_ms}};
    out["speedup_vs_cold_p50"] = lat.median > 0 ? cold->total_ms / lat.median : 0;
    out["speedup_vs_plain_restore_p50"] = lat.median > 0 ? plain->total_ms / lat.median : 0;
    out["single_speedup_vs_cold"] = one.median > 0 ? cold->total_ms / one.median : 0;
    out["single_speedup_vs_plain_restore"] = one.median > 0 ? plain->total_ms / one.median : 0;
  }
  out["accel"] = accel_label(cfg);
  return out;
}

void print_spawn_bench(const nlohmann::json& r) {
  auto ms = [](const nlohmann::json& s) { return s["median"].get<double>(); };
  std::printf("spawn %d children from %s (%s, %d MiB, pool %d%s): %d failed\n", r["n"].get<int>(),
              r["tag"].get<std::string>().c_str(), r["image"].get<std::string>().c_str(),
              r["memory_mib"].get<int>(), r["pool"].get<int>(),
              r["pool_warm"].get<bool>() ? " warm" : "", r["failed"].get<int>());
  std::printf("  all ready after          %9.0f ms\n", r["wall_ms"].get<double>());
  std::printf("  per child p50 / p99      %9.1f / %.1f ms\n", ms(r["child_latency_ms"]),
              r["child_latency_ms"]["p99"].get<double>());
  std::printf("  one child alone, p50      %9.1f ms (no pool%s, network %s%s)\n",
              ms(r["single_child_ms"]), r["jailed"].get<bool>() ? "; jailed, with limits" : "",
              r["network"].get<std::string>().c_str(),
              r.value("qemu_static_build", false) ? "; forkd's static QEMU" : "");
  if (r.contains("single_child_pooled_ms") && r["single_child_pooled_ms"]["n"].get<size_t>() > 0) {
    std::printf("  one child from the pool   %9.1f ms p50 (max %.1f; a pool of one, %s)\n",
                ms(r["single_child_pooled_ms"]), r["single_child_pooled_ms"]["max"].get<double>(),
                r["pool_warm"].get<bool>() ? "warm" : "cold");
  }
  if (r["jailed"].get<bool>()) {
    double bare = ms(r["single_child_unjailed_ms"]);
    const bool nic_measured = r["network"] == "outbound" && r["unjailed_network"] == "none";
    std::printf(
        "  unjailed, no limits, network %s (tag %s), p50 %.1f ms -> the jail%s cost "
        "%+.1f%%\n",
        r["unjailed_network"].get<std::string>().c_str(),
        r["unjailed_tag"].get<std::string>().c_str(), bare,
        nic_measured ? ", the limits and the NIC" : " and the limits",
        bare > 0 ? (ms(r["single_child_ms"]) / bare - 1) * 100 : 0.0);
  }
  if (r["single_child_netns_ms"]["n"].get<size_t>() > 0) {
    double slirp = ms(r["single_child_slirp_ms"]);
    double netns = ms(r["single_child_netns_ms"]);
    std::printf(
        "  per_child_netns p50       %9.1f ms against %.1f ms on slirp (alternating) -> %+.1f%%\n",
        netns, slirp, slirp > 0 ? (netns / slirp - 1) * 100 : 0.0);
    const auto& l = r["single_child_launch_ms"];
    const auto& y = r["single_child_ready_ms"];
    std::printf("    launch (with the namespace) %+.1f ms, restore to ready %+.1f ms\n",
                ms(l["netns"]) - ms(l["slirp"]), ms(y["netns"]) - ms(y["slirp"]));
  }
  const auto& b = r["breakdown_ms"];
  std::printf("    qemu launch p50        %9.1f ms (a pooled child's: its claim)\n",
              ms(b["qemu_launch"]));
  if (r["from_pool"].get<int>() > 0) {
    std::printf("      pool claim p50       %9.1f ms over %d pooled (QMP connect + handshake)\n",
                ms(b["pool_claim"]), r["from_pool"].get<int>());
  }
  std::printf("    device state load p50  %9.1f ms\n", ms(b["device_state_load"]));
  std::printf("    identity (resumed) p50 %9.1f ms\n", ms(b["identity"]));
  if (r.contains("idle_cpu_pct") && r["idle_cpu_pct"]["n"].get<size_t>() > 0) {
    std::printf(
        "  CPU per idle child       %9.2f %% median (max %.2f) over %.0f s; all %zu: %.1f %%\n",
        r["idle_cpu_pct"]["median"].get<double>(), r["idle_cpu_pct"]["max"].get<double>(),
        r["idle_s"].get<double>(), r["idle_cpu_pct"]["n"].get<size_t>(),
        r["idle_cpu_pct_all_children"].get<double>());
  }
  std::printf("  USS per idle child       %9.1f MiB median (max %.1f)\n",
              r["uss_mib"]["median"].get<double>(), r["uss_mib"]["max"].get<double>());
  std::printf("  PSS per idle child       %9.1f MiB\n", r["pss_mib"]["median"].get<double>());
  if (r.contains("ksm") && r["ksm"].value("enabled", false)) {
    const auto& k = r["ksm"];
    std::string cpu = "ksmd's CPU unknown";
    if (k.contains("ksmd_cpu_pct_idle")) {
      cpu =
          fmt::format("ksmd {:.1f} % of a core in the batch, {:.1f} % idle",
                      k["ksmd_cpu_pct_batch"].get<double>(), k["ksmd_cpu_pct_idle"].get<double>());
    }
    std::printf("  KSM                      %9.0f MiB saved; %s (%d pages per %d ms)\n",
                k["saved_mib"].get<double>(), cpu.c_str(), k["pages_to_scan"].get<int>(),
                k["sleep_ms"].get<int>());
  }
  if (r.contains("cold_boot_ms")) {
    std::printf(
        "  cold boot + warm-up      %9.0f ms  -> batch fork %.0fx, lone fork %.0fx faster\n",
        r["cold_boot_ms"]["total"].get<double>(), r["speedup_vs_cold_p50"].get<double>(),
        r["single_speedup_vs_cold"].get<double>());
    std::printf(
        "  plain QEMU restore       %9.0f ms  (%llu MiB stream) -> batch %.1fx, lone %.1fx\n",
        r["plain_restore_ms"]["total"].get<double>(),
        static_cast<unsigned long long>(r["plain_restore_ms"]["state_mib"].get<uint64_t>()),
        r["speedup_vs_plain_restore_p50"].get<double>(),
        r["single_speedup_vs_plain_restore"].get<double>());
  }
}

}  // namespace forkd::bench

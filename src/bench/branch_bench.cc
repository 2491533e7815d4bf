#include "bench/branch_bench.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <thread>

#include "base/clock.h"
#include "bench/bench_home.h"
#include "bench/branch_guest.h"
#include "bench/stats.h"
#include "engine/branch.h"
#include "engine/chain_ops.h"
#include "engine/migration.h"
#include "engine/registry.h"
#include "engine/snapshot.h"
#include "vmm/qmp_client.h"

namespace forkd::bench {

namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

constexpr int kChainDepth = 3;
constexpr int kRateWindowMs = 5000;  // how long the guest writer's rate is sampled

void progress(const std::string& line) {
  std::fprintf(stderr, "forkd: bench branch: %s\n", line.c_str());
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

Result<Json> branch_series(const engine::EngineConfig& cfg, const std::string& id,
                           engine::BranchMode mode, int runs) {
  std::vector<double> pause, copy, total, switchover, resume;
  Json per_run = Json::array();
  for (int i = 0; i < runs; ++i) {
    FORKD_TRY(check_interrupted());
    engine::BranchOptions bo;
    bo.sandbox_id = id;
    bo.mode = mode;
    bo.tag = std::string("bench-") + engine::branch_mode_name(mode) + "-" + std::to_string(i);
    auto r = engine::branch_sandbox(cfg, bo);
    if (!r) return tl::unexpected(r.error().wrap("branch " + bo.tag));
    pause.push_back(r->pause_ms);
    copy.push_back(r->copy_ms);
    total.push_back(r->total_ms);
    switchover.push_back(r->switchover_ms);
    resume.push_back(r->resume_ms);
    per_run.push_back({{"pause_ms", r->pause_ms},
                       {"switchover_ms", r->switchover_ms},
                       {"resume_ms", r->resume_ms},
                       {"resumed_by", r->resumed_by_qemu ? "qemu" : "cont"},
                       {"copy_ms", r->copy_ms},
                       {"gate_ms", r->gate_ms},
                       {"rt_window_ms", r->rt_window_ms},
                       {"total_ms", r->total_ms},
                       {"disk_fold_ms", r->folded ? r->fold_ms : 0.0},
                       {"link_mib", static_cast<double>(r->link_bytes) / (1 << 20)}});
    progress(std::string(engine::branch_mode_name(mode)) + " " + std::to_string(i + 1) + "/" +
             std::to_string(runs) + ": pause " + num(r->pause_ms) + " ms, total " +
             num(r->total_ms) + " ms");
    auto removed = engine::remove_tag(cfg, bo.tag, engine::RemoveMode::kRefuse);
    if (!removed) return tl::unexpected(removed.error().wrap("remove " + bo.tag));
  }
  Summary p = summarize(pause);
  // Growth along the series (what preallocation prevents): the later half's median over the
  // earlier half's; jitter moves max / median but not this.
  size_t half = pause.size() / 2;
  double early = summarize({pause.begin(), pause.begin() + half}).median;
  double late = summarize({pause.begin() + half, pause.end()}).median;
  return Json{{"mode", engine::branch_mode_name(mode)},
              {"series_late_over_early_median", early > 0 ? late / early : 0},
              {"pause_ms", p.to_json()},
              {"switchover_ms", summarize(switchover).to_json()},
              {"resume_ms", summarize(resume).to_json()},
              {"copy_ms", summarize(copy).to_json()},
              {"total_ms", summarize(total).to_json()},
              {"pause_series_ms", pause},
              {"series_max_over_median", p.median > 0 ? p.max / p.median : 0},
              {"runs", per_run}};
}

// QEMU's own stop + full save (RAM in the stream) of the same running source, then `cont`.
// Each save's pause is taken twice: until QEMU completed the stream (the file in the page cache)
// and until the file was also fsynced. A branch's pause has no fsync in it (its files are synced
// after the source runs again), so the first is the like-for-like figure.
Result<Json> plain_save_baseline(const engine::EngineConfig& cfg, const std::string& id, int runs) {
  std::string dir = cfg.sandboxes_dir() + "/" + id;
  std::string file = cfg.home + "/full.state";
  std::vector<double> pause, pause_no_fsync, resume, mib;
  for (int i = 0; i < runs; ++i) {
    FORKD_TRY(check_interrupted());
    auto saved = engine::save_device_state(dir + "/qmp.sock", file, /*ignore_shared=*/false);
    (void)::unlink(file.c_str());
    auto t = Clock::now();
    // Resume whatever happened: the source must keep running.
    auto qmp = vmm::QmpClient::connect(dir + "/qmp.sock", std::chrono::seconds(5));
    if (!qmp) return tl::unexpected(qmp.error().wrap("baseline: resume"));
    if (auto r = qmp->execute("cont"); !r) return tl::unexpected(r.error().wrap("baseline: cont"));
    resume.push_back(ms_since(t));
    if (!saved) return tl::unexpected(saved.error().wrap("baseline: save"));
    pause.push_back(saved->pause_ms);
    pause_no_fsync.push_back(saved->written_ms);
    mib.push_back(static_cast<double>(saved->bytes) / (1 << 20));
    progress("plain save " + std::to_string(i + 1) + "/" + std::to_string(runs) + ": pause " +
             num(saved->written_ms) + " ms, " + num(saved->pause_ms) + " ms with the fsync");
  }
  return Json{{"pause_ms", summarize(pause).to_json()},
              {"pause_includes_fsync", true},
              {"pause_without_fsync_ms", summarize(pause_no_fsync).to_json()},
              {"pause_series_without_fsync_ms", pause_no_fsync},
              {"resume_ms", summarize(resume).to_json()},
              {"stream_mib", summarize(mib).median},
              {"pause_series_ms", pause}};
}

// base -> link1 -> link2 -> link3: a child of each level writes 8 MiB and is branched (live)
// into the next level. Then per depth: the first spawn and the median of later spawns.
Result<Json> chain_bench(const engine::EngineConfig& cfg, SandboxTeardown& td,
                         const std::string& base, int spawns) {
  std::vector<std::string> tags = {base};
  for (int d = 1; d <= kChainDepth; ++d) {
    FORKD_TRY(check_interrupted());
    auto c = fork_one(cfg, td, tags.back());
    if (!c) return tl::unexpected(c.error());
    std::string cmd =
        "dd if=/dev/urandom of=/dev/shm/link" + std::to_string(d) + " bs=1M count=8 2>/dev/null";
    FORKD_TRY(guest_sh(cfg, c->id, cmd, std::chrono::seconds(120)));
    engine::BranchOptions bo;
    bo.sandbox_id = c->id;
    bo.tag = "bench-link" + std::to_string(d);
    auto r = engine::branch_sandbox(cfg, bo);
    if (!r) return tl::unexpected(r.error().wrap("chain: branch " + bo.tag));
    td.remove(c->id);
    tags.push_back(bo.tag);
    progress("chain: " + bo.tag + " stores " + std::to_string(r->link_bytes >> 20) + " MiB");
  }
  // First spawns in depth order (each may assemble its memory), then the later spawns
  // round-robin over the depths, so drift in the host's load hits every depth alike.
  constexpr int kLevels = kChainDepth + 1;
  std::vector<double> first(kLevels);
  std::vector<std::vector<double>> later(kLevels), later_launch(kLevels);
  for (int i = 0; i <= spawns; ++i) {
    for (int d = 0; d < kLevels; ++d) {
      FORKD_TRY(check_interrupted());
      auto c = fork_one(cfg, td, tags[d]);
      if (!c) return tl::unexpected(c.error());
      td.remove(c->id);
      if (i == 0) {
        first[d] = c->total_ms;
      } else {
        later[d].push_back(c->total_ms);
        later_launch[d].push_back(c->timings.launch_ms);
      }
    }
  }
  Json depths = Json::array();
  double base_median = summarize(later[0]).median;
  for (int d = 0; d < kLevels; ++d) {
    Summary s = summarize(later[d]);
    double tax = d > 0 ? (s.median - base_median) / d : 0;
    depths.push_back({{"depth", d},
                      {"tag", tags[d]},
                      {"first_spawn_ms", first[d]},
                      {"later_spawn_ms", s.to_json()},
                      {"later_launch_ms", summarize(later_launch[d]).to_json()},
                      {"per_link_tax_ms", tax}});
    progress("chain depth " + std::to_string(d) + ": first " + num(first[d]) + " ms, later p50 " +
             num(s.median) + " ms");
  }
  return Json{{"spawns_per_depth", spawns}, {"depths", depths}};
}

}  // namespace

Result<Json> run_branch_bench(engine::EngineConfig cfg, const BranchBenchOptions& a) {
  engine::ImageStore images(cfg.home, cfg.assets, cfg.agent);
  if (auto img = images.get(a.image, a.progress); !img) return tl::unexpected(img.error());
  auto home = make_bench_home(cfg, "forkd-bench-branch");
  if (!home) return tl::unexpected(home.error());
  cfg.home = home->path();
  SandboxTeardown td;
  td.cfg = cfg;
  Json out = {{"bench", "branch"},
              {"image", a.image},
              {"memory_mib", a.memory_mib},
              {"runs", a.runs},
              {"dirty_mibps_requested", a.dirty_mibps}};

  engine::SnapshotOptions so;
  so.tag = "bench-base";
  so.image = a.image;
  so.memory_mib = a.memory_mib;
  so.progress = a.progress;
  progress("creating a " + std::to_string(a.memory_mib) + " MiB " + a.image + " tag");
  auto snap = engine::create_snapshot(cfg, so);
  if (!snap) return tl::unexpected(snap.error());
  FORKD_TRY(check_interrupted());
  auto src = fork_one(cfg, td, so.tag);
  if (!src) return tl::unexpected(src.error());
  const std::string id = src->id;

  // Real data in a good part of RAM: a tmpfs file of ~40% of it (tmpfs caps at half), copied
  // from a random block, so neither migration's zero-page shortcut nor the link diff skips it.
  int fill_mib = (a.memory_mib * 2 / 5) / 4 * 4;
  progress("filling " + std::to_string(fill_mib) + " MiB of guest memory");
  auto t = Clock::now();
  FORKD_TRY(guest_sh(cfg, id,
                     "dd if=/dev/urandom of=/dev/shm/rnd bs=1M count=4 2>/dev/null && i=0; "
                     "while [ $i -lt " +
                         std::to_string(fill_mib / 4) +
                         " ]; do cat /dev/shm/rnd; i=$((i+1)); done > /dev/shm/fill",
                     std::chrono::seconds(600)));
  out["fill_mib"] = fill_mib;
  out["fill_ms"] = ms_since(t);
  FORKD_TRY(check_interrupted());

  std::optional<Writer> writer;
  if (a.dirty_mibps > 0) {
    auto w = start_writer(cfg, id, a.dirty_mibps, a.memory_mib);
    if (!w) return tl::unexpected(w.error().wrap("guest writer"));
    writer = *w;
    auto p0 = probe(cfg, id);
    if (!p0) return tl::unexpected(p0.error());
    std::this_thread::sleep_for(std::chrono::milliseconds(kRateWindowMs));
    auto p1 = probe(cfg, id);
    if (!p1) return tl::unexpected(p1.error());
    double rate = rate_between(*p0, *p1, w->chunk_mib);
    out["writer"] = {{"chunk_mib", w->chunk_mib},
                     {"sleep_s", w->sleep_s},
                     {"chunk_ms", w->chunk_ms},
                     {"dirty_mibps_idle", rate},
                     {"reached_requested", rate >= 0.9 * a.dirty_mibps}};
    progress("guest writer: " + num(rate) + " MiB/s (asked " + num(a.dirty_mibps) + ")");
  }

  Json modes = Json::array();
  for (const auto& name : a.modes) {
    auto mode = engine::parse_branch_mode(name);
    if (!mode) return tl::unexpected(mode.error());
    std::optional<RateProbe> before;
    if (writer) {
      auto p = probe(cfg, id);
      if (!p) return tl::unexpected(p.error());
      before = *p;
    }
    auto s = branch_series(cfg, id, *mode, a.runs);
    if (!s) return tl::unexpected(s.error());
    if (writer) {
      auto p = probe(cfg, id);
      if (!p) return tl::unexpected(p.error());
      (*s)["dirty_mibps_during"] = rate_between(*before, *p, writer->chunk_mib);
    }
    modes.push_back(*s);
  }
  out["modes"] = modes;

  int base_runs = a.baseline_runs > 0 ? a.baseline_runs : (a.memory_mib <= 512 ? a.runs : 3);
  progress("plain QEMU stop + full save baseline, " + std::to_string(base_runs) + " runs");
  auto base = plain_save_baseline(cfg, id, base_runs);
  if (!base) return tl::unexpected(base.error());
  out["plain_save"] = *base;
  double base_p50 = (*base)["pause_ms"]["median"].get<double>();
  double base_no_fsync_p50 = (*base)["pause_without_fsync_ms"]["median"].get<double>();
  for (auto& m : out["modes"]) {
    double p50 = m["pause_ms"]["median"].get<double>();
    m["pause_p50_over_plain_save_p50"] = base_p50 > 0 ? p50 / base_p50 : 0;
    m["pause_p50_over_plain_save_without_fsync_p50"] =
        base_no_fsync_p50 > 0 ? p50 / base_no_fsync_p50 : 0;
  }
  // The writer's CPU would skew the spawn timings: the source goes before the chain is built.
  td.remove(id);
  progress("chain spawn by depth");
  auto chain = chain_bench(cfg, td, so.tag, a.chain_spawns);
  if (!chain) return tl::unexpected(chain.error());
  out["chain"] = *chain;
  add_host_facts(out, cfg);
  return out;
}

}  // namespace forkd::bench

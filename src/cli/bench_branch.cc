// forkd bench branch: how long BRANCH pauses a running sandbox, per mode, against QEMU's plain
// stop + full save of the same VM, and what each chain link adds to a spawn. Everything runs in a
// throw-away FORKD_HOME (images and the build cache are the real home's, through symlinks) and is
// torn down on every exit path, Ctrl-C included.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>

#include "base/clock.h"
#include "base/files.h"
#include "cli/bench_common.h"
#include "cli/output.h"
#include "cli/stats.h"
#include "engine/branch.h"
#include "engine/chain_ops.h"
#include "engine/fork.h"
#include "engine/migration.h"
#include "engine/registry.h"
#include "engine/snapshot.h"
#include "vmm/qmp_client.h"

namespace forkd::cli {

namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

constexpr int kChainDepth = 3;
constexpr int kRateWindowMs = 5000;  // how long the guest writer's rate is sampled

struct BranchArgs {
  std::string image = "minimal";
  int memory_mib = 256;
  double dirty_mibps = 0;
  int runs = 10;
  std::vector<std::string> modes = {"live", "full"};
  int baseline_runs = 0;  // 0: --runs up to 512 MiB, 3 above (each writes the whole RAM)
  int chain_spawns = 10;  // later spawns per depth
  bool json = false;
};

void progress(const std::string& line) {
  std::fprintf(stderr, "forkd: bench branch: %s\n", line.c_str());
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

// Sandboxes the bench started, removed on every exit path. Declared after the bench home's
// TempDir, so they go before the home (and its tags) does.
struct Teardown {
  engine::EngineConfig cfg;
  std::vector<std::string> sandboxes;

  void remove(const std::string& id) {
    if (auto st = engine::remove_sandbox(cfg, id); !st) {
      std::fprintf(stderr, "forkd: bench branch: removing sandbox %s: %s\n", id.c_str(),
                   st.error().describe().c_str());
    }
    std::erase(sandboxes, id);
  }
  ~Teardown() {
    while (!sandboxes.empty()) remove(sandboxes.back());
  }
};

// One guest shell command through a short-lived agent connection, closed before returning:
// BRANCH must not run while the host holds one (see engine/branch.h).
Result<engine::ExecResult> guest_sh(const engine::EngineConfig& cfg, const std::string& id,
                                    const std::string& cmd, std::chrono::seconds timeout) {
  auto sb = engine::Sandbox::attach(cfg, id);
  if (!sb) return tl::unexpected(sb.error());
  engine::ExecOptions eo;
  eo.shell = cmd;
  eo.timeout = timeout;
  auto r = (*sb)->exec(eo);
  if (!r) return tl::unexpected(r.error());
  if (r->exit_code != 0 || r->timed_out) {
    return make_error(ErrorCode::kInternal, "guest command exited " + std::to_string(r->exit_code) +
                                                (r->timed_out ? " (timed out)" : "") + ": " + cmd);
  }
  return r;
}

// Forks one child of tag, registered for teardown.
Result<engine::ForkChild> fork_one(const engine::EngineConfig& cfg, Teardown& td,
                                   const std::string& tag) {
  engine::ForkOptions fo;
  fo.tag = tag;
  fo.use_pool = false;
  auto r = engine::fork_children(cfg, fo);
  if (!r) return tl::unexpected(r.error());
  if (r->children.size() != 1) return make_error(ErrorCode::kInternal, "fork of 1: no child");
  auto c = r->children.front();
  if (!c.id.empty()) td.sandboxes.push_back(c.id);
  if (c.error) return tl::unexpected(c.error->wrap("fork of " + tag));
  return c;
}

// The guest writer: rewrites a ring of /tmp/dirty from random data, chunk by chunk, and counts
// the chunks in /tmp/dirty.n. Paced by a sleep computed from one timed chunk (busybox has no
// sub-second clock); the rate actually reached is measured from the counter.
struct Writer {
  int chunk_mib = 1;
  double sleep_s = 0;
  double chunk_ms = 0;  // one chunk, timed in the guest
};

Result<uint64_t> writer_count(const engine::EngineConfig& cfg, const std::string& id) {
  auto r = guest_sh(cfg, id, "cat /tmp/dirty.n 2>/dev/null || echo 0", std::chrono::seconds(30));
  if (!r) return tl::unexpected(r.error());
  return std::strtoull(r->stdout_data.c_str(), nullptr, 10);
}

Result<Writer> start_writer(const engine::EngineConfig& cfg, const std::string& id,
                            const BranchArgs& a) {
  Writer w;
  w.chunk_mib = std::max(1, static_cast<int>(a.dirty_mibps / 4));
  int ring_mib = std::max(w.chunk_mib, std::min(64, a.memory_mib / 8));
  int slots = std::max(1, ring_mib / w.chunk_mib);
  std::string c = std::to_string(w.chunk_mib);
  std::string prep = "dd if=/dev/urandom of=/dev/shm/wsrc bs=1M count=" + c +
                     " 2>/dev/null && i=0; while [ $i -lt " + std::to_string(slots) +
                     " ]; do cat /dev/shm/wsrc; i=$((i+1)); done > /tmp/dirty";
  FORKD_TRY(guest_sh(cfg, id, prep, std::chrono::seconds(300)));
  // Eight chunks timed inside the guest by /proc/uptime (10 ms steps): one chunk timed through
  // exec was sometimes several times too slow, which left the writer unpaced.
  constexpr int kTimed = 8;
  std::string timed =
      "t0=$(cut -d' ' -f1 /proc/uptime); n=0; while [ $n -lt " + std::to_string(kTimed) +
      " ]; do dd if=/dev/shm/wsrc of=/tmp/dirty bs=1M count=" + c +
      " conv=notrunc 2>/dev/null; n=$((n+1)); done; echo $t0 $(cut -d' ' -f1 /proc/uptime)";
  auto timing = guest_sh(cfg, id, timed, std::chrono::seconds(120));
  if (!timing) return tl::unexpected(timing.error());
  double t0 = 0, t1 = 0;
  if (std::sscanf(timing->stdout_data.c_str(), "%lf %lf", &t0, &t1) != 2 || t1 < t0) {
    return make_error(ErrorCode::kProtocol, "guest writer timing: " + timing->stdout_data);
  }
  w.chunk_ms = (t1 - t0) * 1000 / kTimed;
  w.sleep_s = std::max(0.0, w.chunk_mib / a.dirty_mibps - w.chunk_ms / 1000);
  char sleep_arg[32];
  std::snprintf(sleep_arg, sizeof sleep_arg, "%.3f", w.sleep_s);
  std::string loop = "i=0; while :; do dd if=/dev/shm/wsrc of=/tmp/dirty bs=1M count=" + c +
                     " seek=$(( (i % " + std::to_string(slots) + ") * " + c +
                     " )) conv=notrunc 2>/dev/null; i=$((i+1)); echo $i > /tmp/dirty.n; sleep " +
                     sleep_arg + "; done";
  FORKD_TRY(guest_sh(cfg, id, "setsid sh -c '" + loop + "' </dev/null >/dev/null 2>&1 &",
                     std::chrono::seconds(30)));
  return w;
}

// MiB/s written by the guest writer between two counter readings.
struct RateProbe {
  uint64_t count = 0;
  Clock::time_point at;
};
Result<RateProbe> probe(const engine::EngineConfig& cfg, const std::string& id) {
  auto n = writer_count(cfg, id);
  if (!n) return tl::unexpected(n.error());
  return RateProbe{*n, Clock::now()};
}
double rate_between(const RateProbe& a, const RateProbe& b, int chunk_mib) {
  double s = std::chrono::duration<double>(b.at - a.at).count();
  return s > 0 ? static_cast<double>(b.count - a.count) * chunk_mib / s : 0;
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
                       {"copy_ms", r->copy_ms},
                       {"total_ms", r->total_ms},
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
Result<Json> chain_bench(const engine::EngineConfig& cfg, Teardown& td, const std::string& base,
                         int spawns) {
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

Result<Json> run_branch_bench(engine::EngineConfig cfg, const BranchArgs& a) {
  engine::ImageStore images(cfg.home, cfg.assets, cfg.agent);
  if (auto img = images.get(a.image, stderr_progress()); !img) return tl::unexpected(img.error());
  auto home = make_bench_home(cfg, "forkd-bench-branch");
  if (!home) return tl::unexpected(home.error());
  cfg.home = home->path();
  Teardown td;
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
  so.progress = stderr_progress();
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
    auto w = start_writer(cfg, id, a);
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

void print_human(const Json& r) {
  std::printf("BRANCH of a %s sandbox, %d MiB (%d MiB filled), %d runs per mode, %s\n",
              r["image"].get<std::string>().c_str(), r["memory_mib"].get<int>(),
              r["fill_mib"].get<int>(), r["runs"].get<int>(),
              r["accel"].get<std::string>().c_str());
  if (r.contains("writer")) {
    const auto& w = r["writer"];
    std::printf("guest writer: asked %.1f MiB/s, reached %.1f MiB/s idle%s\n",
                r["dirty_mibps_requested"].get<double>(), w["dirty_mibps_idle"].get<double>(),
                w["reached_requested"].get<bool>() ? "" : " (TCG could not reach the request)");
  }
  std::printf("\n%-26s %9s %9s %9s %11s %10s %10s\n", "ms", "pause p50", "p90", "max", "total p50",
              "vs save", "vs +fsync");
  for (const auto& m : r["modes"]) {
    std::printf("%-26s %9.1f %9.1f %9.1f %11.0f %9.1f%% %9.1f%%\n",
                ("branch " + m["mode"].get<std::string>()).c_str(),
                m["pause_ms"]["median"].get<double>(), m["pause_ms"]["p90"].get<double>(),
                m["pause_ms"]["max"].get<double>(), m["total_ms"]["median"].get<double>(),
                100 * m["pause_p50_over_plain_save_without_fsync_p50"].get<double>(),
                100 * m["pause_p50_over_plain_save_p50"].get<double>());
  }
  // The baseline's two figures come from the same saves: the pause until QEMU completed the
  // stream, and until the file was also fsynced.
  const auto& b = r["plain_save"];
  for (const char* key : {"pause_without_fsync_ms", "pause_ms"}) {
    const auto& p = b[key];
    std::printf("%-26s %9.1f %9.1f %9.1f %11s   (%.0f MiB stream, n=%zu)\n",
                std::string(key) == "pause_ms" ? "plain stop + save + fsync" : "plain stop + save",
                p["median"].get<double>(), p["p90"].get<double>(), p["max"].get<double>(), "-",
                b["stream_mib"].get<double>(), p["n"].get<size_t>());
  }
  for (const auto& m : r["modes"]) {
    std::printf("\n%s series (pause ms, in order):", m["mode"].get<std::string>().c_str());
    for (const auto& p : m["pause_series_ms"]) std::printf(" %.1f", p.get<double>());
    std::printf(
        "\n  max / median = %.2f, later half / earlier half (medians) = %.2f; pause p50 split: "
        "switchover %.1f + resume %.1f",
        m["series_max_over_median"].get<double>(), m["series_late_over_early_median"].get<double>(),
        m["switchover_ms"]["median"].get<double>(), m["resume_ms"]["median"].get<double>());
    if (m.contains("dirty_mibps_during")) {
      std::printf(", writer %.1f MiB/s during the series", m["dirty_mibps_during"].get<double>());
    }
    std::printf("\n");
  }
  std::printf("\nchain spawn (fork of 1, call to ready), ms\n%-6s %-12s %8s %10s %12s\n", "depth",
              "tag", "first", "later p50", "tax per link");
  for (const auto& d : r["chain"]["depths"]) {
    std::printf("%-6d %-12s %8.1f %10.1f %12.1f\n", d["depth"].get<int>(),
                d["tag"].get<std::string>().c_str(), d["first_spawn_ms"].get<double>(),
                d["later_spawn_ms"]["median"].get<double>(), d["per_link_tax_ms"].get<double>());
  }
}

int do_bench_branch(const GlobalOptions& g, const BranchArgs& a) {
  return run_bench_verb(
      g, "branch", a.json,
      [&](const engine::EngineConfig& cfg) { return run_branch_bench(cfg, a); }, print_human);
}

}  // namespace

void add_bench_branch(CLI::App& bench, GlobalOptions& g, Action& action) {
  auto a = std::make_shared<BranchArgs>();
  auto* sub = bench.add_subcommand(
      "branch", "BRANCH pause per mode vs QEMU's plain stop + save, and chain spawn by depth");
  sub->add_option("--image", a->image, "minimal or python")->capture_default_str();
  sub->add_option("--memory", a->memory_mib, "Guest memory in MiB")
      ->check(CLI::Range(64, 65536))
      ->capture_default_str();
  sub->add_option("--dirty-mibps", a->dirty_mibps, "Guest writer dirtying this many MiB/s")
      ->check(CLI::Range(0.0, 10000.0));
  sub->add_option("--runs", a->runs, "Branches per mode")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  sub->add_option("--modes", a->modes, "Modes to measure (live, full)")
      ->check(CLI::IsMember({"live", "full", "diff"}))
      ->delimiter(',');
  sub->add_option("--baseline-runs", a->baseline_runs,
                  "Plain saves (default: --runs up to 512 MiB, else 3)")
      ->check(CLI::Range(1, 1000));
  sub->add_option("--chain-spawns", a->chain_spawns, "Later spawns per chain depth")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  sub->add_flag("--json", a->json, "Machine-readable output");
  sub->callback([&action, &g, a] { action = [&g, a] { return do_bench_branch(g, *a); }; });
}

}  // namespace forkd::cli

#include "bench/exec_bench.h"

#include <cstdio>

#include "base/clock.h"
#include "bench/bench_home.h"
#include "bench/stats.h"
#include "engine/fork.h"
#include "engine/registry.h"
#include "engine/snapshot.h"

namespace forkd::bench {

namespace {

using Json = nlohmann::json;

// The targets for a python child under TCG, p50.
constexpr double kExecTargetMs = 20;
constexpr double kEvalTargetMs = 10;

// Removes the child being measured on every exit path.
struct ChildGuard {
  const engine::EngineConfig& cfg;
  std::string id;
  ~ChildGuard() {
    if (id.empty()) return;
    if (auto st = engine::remove_sandbox(cfg, id); !st) {
      std::fprintf(stderr, "forkd: bench exec: removing sandbox %s: %s\n", id.c_str(),
                   st.error().describe().c_str());
    }
  }
};

struct Series {
  std::vector<double> attach, exec_first, exec, eval_first, eval;
};

Status exec_true(engine::Sandbox& sb) {
  engine::ExecOptions eo;
  eo.argv = {"true"};
  auto r = sb.exec(eo);
  if (!r) return tl::unexpected(r.error());
  if (r->exit_code != 0) {
    return make_error(ErrorCode::kInternal,
                      "`true` exited " + std::to_string(r->exit_code) + " in the child");
  }
  return {};
}

Status eval_two(engine::Sandbox& sb) {
  auto r = sb.eval("1 + 1");
  if (!r) return tl::unexpected(r.error());
  if (r->error || r->value.value_or("") != "2") {
    return make_error(ErrorCode::kInternal,
                      "eval of 1 + 1 gave " + r->error.value_or(r->value.value_or("nothing")));
  }
  return {};
}

// Times n calls, each into times (ms).
template <typename Call>
Status time_calls(const char* what, int n, std::vector<double>& times, Call call) {
  for (int i = 0; i < n; ++i) {
    FORKD_TRY(check_interrupted());
    auto t = SteadyClock::now();
    if (auto st = call(); !st) return tl::unexpected(st.error().wrap(what));
    times.push_back(ms_since(t));
  }
  return {};
}

Status measure_child(const engine::EngineConfig& cfg, const std::string& tag, bool python, int runs,
                     Series& s) {
  auto forked = fork_one(cfg, tag);
  if (!forked) return tl::unexpected(forked.error());
  const auto& child = *forked;
  ChildGuard guard{cfg, child.id};
  if (child.error) return tl::unexpected(*child.error);
  auto t = SteadyClock::now();
  auto sb = engine::Sandbox::attach(cfg, child.id);
  if (!sb) return tl::unexpected(sb.error());
  s.attach.push_back(ms_since(t));
  // Each kind's first call before any later one: the first wake-up of exec and of the warm
  // worker are what a fresh child pays once.
  FORKD_TRY(time_calls("exec", 1, s.exec_first, [&] { return exec_true(**sb); }));
  if (python) FORKD_TRY(time_calls("eval", 1, s.eval_first, [&] { return eval_two(**sb); }));
  FORKD_TRY(time_calls("exec", runs, s.exec, [&] { return exec_true(**sb); }));
  if (python) FORKD_TRY(time_calls("eval", runs, s.eval, [&] { return eval_two(**sb); }));
  return {};
}

}  // namespace

Result<Json> run_exec_bench(engine::EngineConfig cfg, const ExecBenchOptions& o) {
  auto home = make_bench_home(cfg, "forkd-bench-exec");
  if (!home) return tl::unexpected(home.error());
  cfg.home = home->path();
  const bool python = o.image != "minimal";

  engine::SnapshotOptions so;
  so.tag = "bench-exec";
  so.image = o.image;
  so.memory_mib = o.memory_mib;
  so.progress = o.progress;
  if (python) so.warmup_eval = {"import numpy, random"};
  std::fprintf(stderr, "forkd: bench exec: creating a %s tag\n", o.image.c_str());
  auto snap = engine::create_snapshot(cfg, so);
  if (!snap) return tl::unexpected(snap.error());

  Series s;
  for (int c = 0; c < o.children; ++c) {
    FORKD_TRY(check_interrupted());
    FORKD_TRY(measure_child(cfg, so.tag, python, o.runs, s));
    std::fprintf(stderr, "forkd: bench exec: child %d/%d: first exec %.1f ms", c + 1, o.children,
                 s.exec_first.back());
    if (python) std::fprintf(stderr, ", first eval %.1f ms", s.eval_first.back());
    std::fputc('\n', stderr);
  }
  Json out = {{"bench", "exec"},
              {"image", o.image},
              {"children", o.children},
              {"runs", o.runs},
              {"memory_mib", o.memory_mib},
              {"attach_ms", summarize(s.attach).to_json()},
              {"exec_first_ms", summarize(s.exec_first).to_json()},
              {"exec_ms", summarize(s.exec).to_json()},
              {"targets_ms", {{"exec_p50", kExecTargetMs}}}};
  if (python) {
    out["eval_first_ms"] = summarize(s.eval_first).to_json();
    out["eval_ms"] = summarize(s.eval).to_json();
    out["targets_ms"]["eval_p50"] = kEvalTargetMs;
  }
  add_host_facts(out, cfg);
  return out;
}

void print_exec_bench(const Json& r) {
  std::printf("exec and eval in children of a warm %s tag (%d children, %d calls each), ms\n",
              r["image"].get<std::string>().c_str(), r["children"].get<int>(),
              r["runs"].get<int>());
  std::printf("%-34s %8s %8s %8s %10s\n", "", "p50", "p90", "max", "target p50");
  auto row = [&r](const char* label, const char* key, const char* target) {
    if (!r.contains(key)) return;
    const auto& s = r[key];
    char t[32] = "";
    if (target && r["targets_ms"].contains(target)) {
      std::snprintf(t, sizeof t, "%.0f", r["targets_ms"][target].get<double>());
    }
    std::printf("%-34s %8.2f %8.2f %8.2f %10s\n", label, s["median"].get<double>(),
                s["p90"].get<double>(), s["max"].get<double>(), t);
  };
  row("attach (agent connection)", "attach_ms", nullptr);
  row("first exec `true` after the fork", "exec_first_ms", nullptr);
  row("later exec `true`", "exec_ms", "exec_p50");
  row("first eval `1 + 1` after the fork", "eval_first_ms", nullptr);
  row("later eval `1 + 1`", "eval_ms", "eval_p50");
}

}  // namespace forkd::bench

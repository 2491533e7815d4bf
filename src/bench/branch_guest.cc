#include "bench/branch_guest.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "engine/registry.h"

namespace forkd::bench {

namespace {

Result<uint64_t> writer_count(const engine::EngineConfig& cfg, const std::string& id) {
  auto r = guest_sh(cfg, id, "cat /tmp/dirty.n 2>/dev/null || echo 0", std::chrono::seconds(30));
  if (!r) return tl::unexpected(r.error());
  return std::strtoull(r->stdout_data.c_str(), nullptr, 10);
}

}  // namespace

void SandboxTeardown::remove(const std::string& id) {
  if (auto st = engine::remove_sandbox(cfg, id); !st) {
    std::fprintf(stderr, "forkd: bench branch: removing sandbox %s: %s\n", id.c_str(),
                 st.error().describe().c_str());
  }
  std::erase(sandboxes, id);
}

SandboxTeardown::~SandboxTeardown() {
  while (!sandboxes.empty()) remove(sandboxes.back());
}

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

Result<engine::ForkChild> fork_one(const engine::EngineConfig& cfg, SandboxTeardown& td,
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

Result<Writer> start_writer(const engine::EngineConfig& cfg, const std::string& id,
                            double dirty_mibps, int memory_mib) {
  Writer w;
  w.chunk_mib = std::max(1, static_cast<int>(dirty_mibps / 4));
  int ring_mib = std::max(w.chunk_mib, std::min(64, memory_mib / 8));
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
  w.sleep_s = std::max(0.0, w.chunk_mib / dirty_mibps - w.chunk_ms / 1000);
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

Result<RateProbe> probe(const engine::EngineConfig& cfg, const std::string& id) {
  auto n = writer_count(cfg, id);
  if (!n) return tl::unexpected(n.error());
  return RateProbe{*n, std::chrono::steady_clock::now()};
}
double rate_between(const RateProbe& a, const RateProbe& b, int chunk_mib) {
  double s = std::chrono::duration<double>(b.at - a.at).count();
  return s > 0 ? static_cast<double>(b.count - a.count) * chunk_mib / s : 0;
}

}  // namespace forkd::bench

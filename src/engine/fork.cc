#include "engine/fork.h"

#include <atomic>
#include <mutex>
#include <thread>

#include "base/thread_root.h"
#include "engine/pool.h"
#include "engine/restore.h"
#include "engine/sandbox_jail.h"
#include "store/snapshot_store.h"
#include "vmm/netns.h"

namespace forkd::engine {

namespace {
using Clock = std::chrono::steady_clock;
double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}
}  // namespace

Result<ForkResult> fork_children(const EngineConfig& cfg, const ForkOptions& opts) {
  if (opts.n < 1 || opts.n > kMaxForkChildren) {
    return make_error(
        ErrorCode::kInvalidArgument,
        "n must be 1.." + std::to_string(kMaxForkChildren) + ", got " + std::to_string(opts.n));
  }
  auto t0 = Clock::now();
  store::SnapshotStore snaps(cfg.home);
  auto meta = snaps.load(opts.tag);
  if (!meta) return tl::unexpected(meta.error());
  if (auto st = snaps.verify(*meta); !st) return tl::unexpected(st.error());
  // A chain link's memory is assembled (once) here, before the children start in parallel.
  if (auto mem = tag_memory_path(cfg, *meta); !mem) return tl::unexpected(mem.error());
  ChildNetwork net{opts.network, opts.expose, cfg.expose_address, opts.per_child_netns,
                   opts.allow_list};
  auto mode = resolve_child_network(*meta, net);
  if (!mode) return tl::unexpected(mode.error());
  net.mode = *mode;
  if (net.netns) {
    auto support = vmm::netns_support();
    if (!support.available) {
      return make_error(ErrorCode::kInvalidArgument,
                        "per_child_netns is not available on this host: " + support.reason);
    }
  }
  if (net.mode == "outbound" && !cfg.outbound_refusal.empty()) {
    return make_error(ErrorCode::kFailedPrecondition, "network outbound (tag " + opts.tag +
                                                          "): " + cfg.outbound_refusal +
                                                          "; or spawn with network none");
  }
  std::string tag_dir = snaps.dir(opts.tag);
  ForkResult res;
  res.verify_ms = ms_between(t0, Clock::now());
  res.children.resize(static_cast<size_t>(opts.n));

  Pool pool(cfg);
  const vmm::Limits limits = merge_limits(cfg.default_limits, opts.limits);
  std::atomic<int> next{0};
  auto one_child = [&](ForkChild& child) {
    std::optional<PrestartedVm> pre;
    // The claim (QMP connect and handshake to the member) is part of the child's launch.
    auto t_start = Clock::now();
    double claim_ms = 0;
    if (opts.use_pool && !net.netns) {  // pool members have no namespace
      if (auto claimed = pool.claim(*meta, tag_dir)) {
        pre = std::move(*claimed);
        child.from_pool = true;
      }
      claim_ms = ms_between(t_start, Clock::now());
    }
    if (!pre) {
      auto started = prestart_child(cfg, *meta, tag_dir, limits, net);
      if (!started) {
        child.error = started.error();
        return;
      }
      pre = std::move(*started);
    }
    double launch_ms = ms_between(t_start, Clock::now());
    child.id = pre->id;
    // A pool member was started with its filler's defaults: give it this call's limits.
    std::optional<vmm::Limits> claim_limits;
    if (child.from_pool && !limits.empty()) claim_limits = limits;
    auto sb = finish_restore(std::move(*pre), *meta, tag_dir, claim_limits, net);
    if (!sb) {
      child.error = sb.error();
      return;
    }
    child.timings = (*sb)->restore_timings();
    child.timings.launch_ms = launch_ms;
    child.timings.claim_ms = claim_ms;
    child.total_ms = ms_between(t0, Clock::now());
    if (auto p = (*sb)->record().find("ports"); p != (*sb)->record().end()) child.ports = *p;
    (*sb)->release();
  };
  auto worker = [&] {
    for (;;) {
      int i = next.fetch_add(1);
      if (i >= opts.n) return;
      ForkChild& child = res.children[static_cast<size_t>(i)];
      // The root of this child's work: an exception (a bug, memory exhaustion) fails this child,
      // never the process. A QEMU it had started without a record is reaped by gc.
      guarded(
          "fork child", [&] { one_child(child); },
          [&](const std::string& message) { child.error = Error(ErrorCode::kInternal, message); });
    }
  };
  int threads = std::max(1, std::min(opts.parallel, opts.n));
  {
    std::vector<std::jthread> pool_threads;
    for (int t = 0; t < threads; ++t) pool_threads.emplace_back(worker);
  }
  res.wall_ms = ms_between(t0, Clock::now());
  return res;
}

}  // namespace forkd::engine

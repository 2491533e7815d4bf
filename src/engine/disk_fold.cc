#include "engine/disk_fold.h"

#include <unistd.h>

#include <algorithm>

#include "base/clock.h"
#include "base/json_get.h"
#include "base/log.h"
#include "base/random.h"
#include "engine/disk_checks.h"

namespace forkd::engine {

namespace {

using vmm::Json;

// The qcow2 node (not its file node) QEMU has open for path.
const Json* qcow2_node(const Json& nodes, const std::string& path) {
  for (const auto& n : nodes) {
    if (json::string_or(n, "drv", "") == "qcow2" && json::string_or(n, "file", "") == path &&
        !json::string_or(n, "node-name", "").empty()) {
      return &n;
    }
  }
  return nullptr;
}

bool still_open(const Json& nodes, const std::string& path) {
  return std::any_of(nodes.begin(), nodes.end(),
                     [&](const Json& n) { return json::string_or(n, "file", "") == path; });
}

Result<Json> named_nodes(vmm::QmpClient& qmp) {
  auto r = qmp.execute("query-named-block-nodes", Json{{"flat", true}});
  if (!r) return tl::unexpected(r.error().wrap("query-named-block-nodes"));
  if (!r->is_array()) {
    return make_error(ErrorCode::kQemuFailed, "query-named-block-nodes: not a list");
  }
  return std::move(*r);
}

// Cancels the job and waits (briefly) until QEMU says so: the chain is then as it was.
void cancel_job(vmm::QmpClient& qmp, const std::string& job) {
  if (!qmp.execute("block-job-cancel", Json{{"device", job}, {"force", true}})) return;
  auto deadline = SteadyClock::now() + std::chrono::seconds(5);
  while (SteadyClock::now() < deadline) {
    auto ev = qmp.wait_event("BLOCK_JOB_CANCELLED", std::chrono::milliseconds(250));
    const Json* data = ev ? json::member(*ev, "data") : nullptr;
    if (data && json::string_or(*data, "device", "") == job) return;
  }
}

}  // namespace

Result<std::optional<FoldPlan>> plan_fold(const Json& nodes, const std::string& source_dir,
                                          const std::string& frozen, std::string* why_not) {
  auto none = [&](const std::string& why) -> Result<std::optional<FoldPlan>> {
    if (why_not) *why_not = why;
    return std::optional<FoldPlan>();
  };
  if (!nodes.is_array()) return make_error(ErrorCode::kQemuFailed, "block nodes: not a list");
  if (!file_directly_in(source_dir, frozen)) return none("the frozen layer is not the sandbox's");
  const Json* top = qcow2_node(nodes, frozen);
  if (!top) return none("the frozen layer is no longer in the chain");
  std::string below = json::string_or(*top, "backing_file", "");
  if (below.empty()) return none("no layer below the frozen one");
  if (!file_directly_in(source_dir, below)) return none("the layer below is the tag's disk");
  const Json* base = qcow2_node(nodes, below);
  if (!base) {
    return make_error(ErrorCode::kQemuFailed, "no qcow2 node for the layer below " + frozen);
  }
  return std::optional<FoldPlan>(
      FoldPlan{json::string_or(*top, "node-name", ""), json::string_or(*base, "node-name", "")});
}

Result<FoldResult> fold_frozen_layer(vmm::QmpClient& qmp, const std::string& source_dir,
                                     const std::string& frozen, std::chrono::milliseconds limit) {
  auto t0 = SteadyClock::now();
  FoldResult out;
  auto nodes = named_nodes(qmp);
  if (!nodes) return tl::unexpected(nodes.error());
  auto plan = plan_fold(*nodes, source_dir, frozen, &out.note);
  if (!plan) return tl::unexpected(plan.error());
  if (!*plan) return out;

  // An intermediate commit: QEMU copies the frozen layer's clusters into the one below, then
  // points the active overlay at that one. The guest goes on meanwhile; the job ends by itself.
  std::string job = "forkd-fold-" + random_hex(4);
  (void)qmp.take_events();
  auto started = qmp.execute("block-commit", Json{{"job-id", job},
                                                  {"device", "root"},
                                                  {"top-node", (*plan)->top_node},
                                                  {"base-node", (*plan)->base_node}});
  if (!started) return tl::unexpected(started.error().wrap("block-commit"));
  for (;;) {
    auto left =
        limit - std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t0);
    if (left <= std::chrono::milliseconds::zero()) {
      cancel_job(qmp, job);
      (void)qmp.take_events();
      return make_error(ErrorCode::kTimeout, "folding " + frozen + " took longer than " +
                                                 std::to_string(limit.count()) + " ms");
    }
    auto ev = qmp.wait_event("BLOCK_JOB_COMPLETED", std::min(left, std::chrono::milliseconds(250)));
    if (!ev) {
      if (ev.error().code() == ErrorCode::kTimeout) continue;
      return tl::unexpected(ev.error().wrap("block-commit"));
    }
    const Json* data = json::member(*ev, "data");
    if (!data || json::string_or(*data, "device", "") != job) continue;
    if (auto err = json::get_string(*data, "error")) {
      (void)qmp.take_events();
      return make_error(ErrorCode::kQemuFailed, "block-commit of " + frozen + ": " + *err);
    }
    break;
  }
  (void)qmp.take_events();
  out.folded = true;
  // The commit rewrote the active overlay's header (the name of its backing file). Written back
  // here, while the guest runs; otherwise the next branch's stop pays for it (QEMU flushes the
  // disk there: an fdatasync, 0.37 ms in QEMU's trace, inside that branch's pause).
  auto flushed =
      qmp.execute("human-monitor-command", Json{{"command-line", "qemu-io root \"flush\""}});
  if (!flushed || !flushed->is_string() || !flushed->get_ref<const std::string&>().empty()) {
    out.note = "the active overlay was not flushed";
  }
  // Removed once QEMU holds it no more (a commit's nodes are closed when its job ends).
  auto after = named_nodes(qmp);
  if (!after) {
    out.note = "the folded layer is left in place: " + after.error().message();
  } else if (still_open(*after, frozen)) {
    out.note = "the folded layer is still open";
  } else if (::unlink(frozen.c_str()) != 0) {
    out.note = "the folded layer could not be removed";
  }
  out.ms = ms_since(t0);
  return out;
}

}  // namespace forkd::engine

#pragma once
// Fork of N: one call, one result per child. A failed child never dooms the batch.
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/config.h"
#include "engine/restore.h"
#include "engine/sandbox.h"

namespace forkd::engine {

inline constexpr int kMaxForkChildren = 1000;

struct ForkOptions {
  std::string tag;
  int n = 1;
  int parallel = 3;      // children restored at once
  bool use_pool = true;  // take pre-started QEMUs from the tag's pool when there are any
  vmm::Limits limits;    // each child's; unset fields take EngineConfig::default_limits
  // Each child's network (mode empty: the tag's) and exposed ports; the listen address of the
  // ports is EngineConfig::expose_address.
  std::string network;
  std::vector<int> expose;
  // Each child in a network namespace of its own (root only; see ChildNetwork::netns), and
  // where such children may go (empty: anywhere).
  bool per_child_netns = false;
  std::vector<std::string> allow_list;
};

struct ForkChild {
  std::string id;              // empty when the child failed before it had one
  std::optional<Error> error;  // set when this child failed
  RestoreTimings timings;
  double total_ms = 0;  // from the start of the fork call until this child was ready
  bool from_pool = false;
  nlohmann::json ports = nlohmann::json::array();  // exposed ports: [{guest, host, address}]
};

struct ForkResult {
  std::vector<ForkChild> children;
  double wall_ms = 0;  // until the last child was ready or failed
  double verify_ms = 0;
};

// Verifies the tag once, then restores n children. Tag-level problems (unknown tag, bad n,
// checksum mismatch, newer schema) are the error; per-child failures are in the result.
// Children are released: they keep running after this returns.
Result<ForkResult> fork_children(const EngineConfig& cfg, const ForkOptions& opts);

}  // namespace forkd::engine

#pragma once
// A branch of a sandbox with a disk leaves its source writing to a new overlay above the layer
// frozen at the pause, and the tag takes a copy of that layer (engine/branch.cc). Left there,
// every branch would make the source's chain one layer deeper: more files open, and a longer
// `cont` after the next branch's migration, which activates every layer again (a python
// source's resume went from ~1.5 to ~4.3 ms over ten branches). Once the tag is written,
// fold_frozen_layer commits the frozen layer into the layer below it, while the guest runs,
// when both are the sandbox's own files, and removes it. The chain then stays: the tag's disk,
// the sandbox's first overlay, the active overlay.
#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "base/error.h"
#include "vmm/qmp_client.h"

namespace forkd::engine {

// The commit's two nodes, picked from query-named-block-nodes' flat reply. Nothing to fold
// (the reason in *why_not): the frozen layer is not in the chain, or the layer below it is not
// the sandbox's (the tag's disk, after a sandbox's first branch). A reply without the node of a
// layer it names is an error.
struct FoldPlan {
  std::string top_node, base_node;
};
Result<std::optional<FoldPlan>> plan_fold(const nlohmann::json& nodes,
                                          const std::string& source_dir, const std::string& frozen,
                                          std::string* why_not);

struct FoldResult {
  bool folded = false;
  double ms = 0;
  std::string note;  // why nothing was folded, or what was left undone after a fold
};

// qmp: the source's. frozen: the layer the branch froze, a file directly in source_dir. A
// commit still running after limit is cancelled, and the chain stays as it was.
Result<FoldResult> fold_frozen_layer(vmm::QmpClient& qmp, const std::string& source_dir,
                                     const std::string& frozen, std::chrono::milliseconds limit);

}  // namespace forkd::engine

#pragma once
// A pool of pre-started QEMU processes per tag: started with -incoming defer, the tag's memory
// mapped, waiting for their device state. A fork claims one instead of paying QEMU's start-up.
// Members live on disk under $FORKD_HOME/pool/<tag>/members/<id>.json (their run dirs under
// sandboxes/), so any forkd process can claim or refill them. Claiming is an atomic rename, so two
// forks never get the same member. Each tag's pool settings are in pool/<tag>/config.json: its size
// (0: disabled) and whether members are warm (see warm_up_prestarted: state loaded, run briefly
// past the snapshot point to translate the claim's code paths, then paused) or cold (QEMU
// started, state not loaded: a claimed child starts exactly at the snapshot point).
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/config.h"
#include "engine/restore.h"
#include "store/snapshot_meta.h"

namespace forkd::engine {

struct PoolConfig {
  int size = 0;
  bool warm = false;
};

struct PoolStatus {
  std::string tag;
  PoolConfig config;
  int members = 0;  // live, waiting
};

class Pool {
 public:
  explicit Pool(const EngineConfig& cfg);

  // Takes one live member for meta's tag (stale or dead members are discarded on the way).
  std::optional<PrestartedVm> claim(const store::SnapshotMeta& meta, const std::string& tag_dir);

  Status configure(const std::string& tag, PoolConfig config);
  PoolConfig config(const std::string& tag) const;

  // Starts members until the tag has its configured size; returns how many were started.
  Result<int> fill(const store::SnapshotMeta& meta, const std::string& tag_dir);

  // Kills every member of tag (or of all tags when tag is empty); returns how many.
  int drain(const std::string& tag);

  std::vector<PoolStatus> status() const;

  // Ids of the members of every tag's pool.
  std::set<std::string> member_ids() const;
  // Drops members whose QEMU is gone (member file and run dir); returns how many.
  int prune();

 private:
  std::string tag_dir(const std::string& tag) const { return root_ + "/" + tag; }
  std::string members_dir(const std::string& tag) const { return tag_dir(tag) + "/members"; }
  std::vector<std::string> member_ids(const std::string& tag) const;
  EngineConfig cfg_;
  std::string root_;
};

}  // namespace forkd::engine

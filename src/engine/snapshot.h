#pragma once
// Creating a tag: boot a template VM whose RAM is the tag's memory file (MAP_SHARED), warm it
// up, stop it, save its device state with x-ignore-shared (the RAM is already in the file), and
// commit the staged directory atomically.
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/config.h"
#include "engine/image_store.h"
#include "store/snapshot_meta.h"

namespace forkd::engine {

struct SnapshotOptions {
  std::string tag;
  std::string image = "minimal";
  int memory_mib = 256;
  // Exact guest RAM; 0 (always, outside tests) means vmm::guest_ram_bytes for the accelerator.
  uint64_t ram_bytes = 0;
  bool with_pit = false;      // tests: a tag as forkd made them before it dropped the PIT
  bool with_ioapic2 = false;  // tests: likewise before it dropped microvm's second IO-APIC
  int cpus = 1;
  std::vector<std::string> warmup;       // shell commands; each must exit 0
  std::vector<std::string> warmup_eval;  // then Python in the warm worker; each must not raise
  // "none" (no NIC) or "outbound": the template and every child have a NIC on a user-mode
  // network (a warm-up may use it; children choose none or outbound, see ForkOptions).
  std::string network = "none";
  bool force = false;  // replace an existing tag
  // With force: remove the old tag's dependents (chain links of it) first; without, a replace
  // of a tag that has dependents is refused (kFailedPrecondition), since they would be orphaned.
  bool cascade = false;
  ProgressFn progress;
};

struct SnapshotResult {
  store::SnapshotMeta meta;
  double boot_ms = 0;
  double warmup_ms = 0;
  double settle_ms = 0;  // waiting for the guest to go idle after the warm-up (settle_guest)
  double save_ms = 0;    // stop until the device state is on disk
  double commit_ms = 0;  // hashing, fsync, rename
};

Result<SnapshotResult> create_snapshot(const EngineConfig& cfg, const SnapshotOptions& opts);

}  // namespace forkd::engine

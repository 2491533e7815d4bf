#pragma once
// Garbage collection of what dead forkd processes left behind, and the kill helpers `rm` uses.
// Ownership is by lock, not by pid (see base/dir_lock.h): a sandbox run dir is locked by its
// launcher from its creation until its record (sandbox.json, or a pool member file) exists, a
// branch destination dir for the whole branch, a tag by its writer. Whatever is unlocked and
// unrecorded has no owner, so gc may remove it, killing any QEMU still running there.
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/config.h"

namespace forkd::engine {

struct GcReport {
  std::vector<std::string> dead_sandboxes;  // records whose QEMU was gone: removed
  std::vector<std::string> orphan_dirs;     // run dirs and branch dirs with no owner: removed
  int orphan_qemus = 0;                     // QEMU processes killed for having no owner
  int snapshot_leftovers = 0;               // staging dirs and dead writers' records removed
  int pool_members = 0;                     // pool members whose QEMU was gone: dropped
  int cgroups = 0;                          // empty sandbox cgroups of removed sandboxes
  int netns = 0;                            // unused network namespaces of children (as root)
  int lifted_threads = 0;  // QEMU threads a dead branch left in the pause's CPU cgroup: put back
  int pull_blobs = 0;  // blobs of pulls cut a day ago or more and never resumed
};

// Runs every collection step. Safe to run at any time, concurrently with any other forkd
// operation (it only takes what no live process holds). The daemon runs it at start and every
// minute; `forkd gc` runs it on demand; `forkd rm --all` and fork run it too.
GcReport gc(const EngineConfig& cfg);

// `forkd rm --all`: stops every recorded sandbox (all at once: QMP quit, a bounded wait, then
// SIGKILL), drains every pool, then kills every other QEMU of this home (one still starting, an
// orphan), and returns only when all of them have exited. Sandboxes that could not be removed
// are named in `failed`.
struct RemoveAllReport {
  std::vector<std::string> removed;
  std::vector<std::pair<std::string, Error>> failed;
  int pool_members = 0;
  int other_qemus = 0;
};
RemoveAllReport remove_all_sandboxes(const EngineConfig& cfg);

// The Ctrl-C path of a CLI: kills the QEMUs this process started that have no record yet (a
// fork or pool fill in progress), so they die with their launcher; recorded ones keep running.
// (A launcher killed with SIGKILL cannot do this: its unrecorded QEMUs are gc's.)
int kill_unrecorded_children(const EngineConfig& cfg);

// Pids of QEMU processes whose command line names dir (their run dir, "<dir>/...").
std::vector<int> qemu_pids_in(const std::string& dir);

// SIGKILLs every QEMU naming dir and waits (up to 5 s) until each has exited. Returns how many.
int kill_qemus_in(const std::string& dir);
// The same for a set of pids (already known to be ours).
void kill_and_wait(const std::vector<int>& pids);

}  // namespace forkd::engine

#pragma once
// What the benchmarks share: a throw-away FORKD_HOME, the facts about the host a result is read
// with, and Ctrl-C, which a bench notices between steps and answers by cleaning up.
#include <nlohmann/json.hpp>
#include <string>

#include "base/error.h"
#include "base/files.h"
#include "engine/config.h"
#include "engine/fork.h"

namespace forkd::bench {

// A private FORKD_HOME for a benchmark: its own sandboxes, tags and assembled chain memory; the
// real home's images and build-cache entries (kernel, rootfs) through symlinks, so nothing is
// rebuilt and no file of the bench lands in the real home (removing the TempDir removes links,
// never what they point at).
Result<TempDir> make_bench_home(const engine::EngineConfig& real, const std::string& prefix);

// Forks one child of tag straight from the tag (no pool). A child that failed comes back with
// its error set and, when it got that far, its id (for the caller to remove).
Result<engine::ForkChild> fork_one(const engine::EngineConfig& cfg, const std::string& tag);

// The accelerator new VMs of cfg get ("kvm", "tcg"; "unknown" when none is usable).
std::string accel_label(const engine::EngineConfig& cfg);

// Adds what says how far to trust a result of this host: host_loadavg (1 and 5 min) and accel.
void add_host_facts(nlohmann::json& out, const engine::EngineConfig& cfg);

// Ctrl-C for the benches that clean up after themselves: the CLI calls interrupt() from its
// signal thread, and such a bench checks check_interrupted() between steps (kCancelled once
// interrupted). clear_interrupt() before a run. Thread-safe.
void interrupt();
void clear_interrupt();
bool interrupted();
Status check_interrupted();

}  // namespace forkd::bench

#pragma once
// The guest side of bench branch: sandboxes it forks (removed on every exit path), shell
// commands in them, and the paced guest writer that dirties memory while branches are taken.
#include <chrono>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/config.h"
#include "engine/fork.h"
#include "engine/sandbox.h"

namespace forkd::bench {

// Sandboxes the bench started, removed on every exit path. Declared after the bench home's
// TempDir, so they go before the home (and its tags) does.
struct SandboxTeardown {
  engine::EngineConfig cfg;
  std::vector<std::string> sandboxes;

  void remove(const std::string& id);
  ~SandboxTeardown();
};

// One guest shell command through a short-lived agent connection, closed before returning:
// BRANCH must not run while the host holds one (see engine/branch.h). A non-zero exit or a
// timeout is an error.
Result<engine::ExecResult> guest_sh(const engine::EngineConfig& cfg, const std::string& id,
                                    const std::string& cmd, std::chrono::seconds timeout);

// Forks one child of tag, registered for teardown.
Result<engine::ForkChild> fork_one(const engine::EngineConfig& cfg, SandboxTeardown& td,
                                   const std::string& tag);

// The guest writer: rewrites a ring of /tmp/dirty from random data, chunk by chunk, and counts
// the chunks in /tmp/dirty.n. Paced by a sleep computed from one timed chunk (busybox has no
// sub-second clock); the rate actually reached is measured from the counter.
struct Writer {
  int chunk_mib = 1;
  double sleep_s = 0;
  double chunk_ms = 0;  // one chunk, timed in the guest
};
// Starts it in sandbox id (of memory_mib MiB), aiming at dirty_mibps MiB/s.
Result<Writer> start_writer(const engine::EngineConfig& cfg, const std::string& id,
                            double dirty_mibps, int memory_mib);

// MiB/s written by the guest writer between two counter readings.
struct RateProbe {
  uint64_t count = 0;
  std::chrono::steady_clock::time_point at;
};
Result<RateProbe> probe(const engine::EngineConfig& cfg, const std::string& id);
double rate_between(const RateProbe& a, const RateProbe& b, int chunk_mib);

}  // namespace forkd::bench

#pragma once
// Warm-up steps of a snapshot template: shell commands (each must exit 0), then Python for the
// warm worker (each must not raise). Shared by snapshot creation and the cold-boot baseline.
#include <sys/types.h>

#include <string>
#include <vector>

#include "base/error.h"
#include "engine/image_store.h"
#include "engine/sandbox.h"

namespace forkd::engine {

struct Warmup {
  std::vector<std::string> shell;
  std::vector<std::string> eval;

  // The list recorded in snapshot.json (eval steps prefixed with "eval: "), and back.
  std::vector<std::string> to_record() const;
  static Warmup from_record(const std::vector<std::string>& steps);
};

Status run_warmup(Sandbox& sb, const Warmup& w, const ProgressFn& progress);

// The last step before a template is frozen: waits until its QEMU (qemu_pid) is quiet, so that
// what the warm-up's last call left running in the guest (the request's thread ending, the RCU
// grace period freeing it) is done once in the template and not again in each child. Best effort:
// a guest still busy after 3 s is frozen as it is (logged). Returns the time waited, in ms.
double settle_guest(pid_t qemu_pid, const ProgressFn& progress);

}  // namespace forkd::engine

#pragma once
// Device-state save and load over QMP, the heart of snapshot and fork. Guest RAM never goes
// through the migration stream: it lives in a memory file that x-ignore-shared skips.
#include <string>
#include <utility>
#include <vector>

#include "base/error.h"
#include "vmm/qmp_client.h"

namespace forkd::engine {

// Sets these migration capabilities (name, on) in one migrate-set-capabilities.
Status set_migration_caps(vmm::QmpClient& qmp,
                          const std::vector<std::pair<std::string, bool>>& caps);

// The capabilities of the switch-over gate (engine/switchover_gate.h): return-path and
// switchover-ack both on, or both off. switchover-ack is named only where the QEMU in use has it
// (vmm::HostJail::switchover_ack); without it, on is refused here.
Result<std::vector<std::pair<std::string, bool>>> switchover_gate_caps(bool on);

struct SaveResult {
  double pause_ms = 0;    // from `stop` until the file was written and fsynced
  double written_ms = 0;  // from `stop` until QEMU completed the stream (before the fsync)
  uint64_t bytes = 0;     // size of the device-state file
};

// Stops the VM, enables x-ignore-shared and migrates the device state into a new file at path
// (passed to QEMU as a descriptor: the seccomp jail forbids exec:). The VM stays stopped.
// With ignore_shared false, guest RAM goes into the stream too (plain QEMU save, the baseline
// the benchmarks compare against).
// With sync false the file is not fsynced here (a caller that syncs it later, with others).
Result<SaveResult> save_device_state(vmm::QmpClient& qmp, const std::string& path,
                                     bool ignore_shared = true, bool sync = true);
Result<SaveResult> save_device_state(const std::string& qmp_socket, const std::string& path,
                                     bool ignore_shared = true);

// On a QEMU started with -incoming defer: enables x-ignore-shared, loads the device state from
// path, and makes sure the vCPUs run.
// run false: the VM stays paused after the load (it must have been started with -S).
Status load_device_state(vmm::QmpClient& qmp, const std::string& path, bool ignore_shared = true,
                         bool run = true);

}  // namespace forkd::engine

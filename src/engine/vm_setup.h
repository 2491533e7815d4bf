#pragma once
// Pieces shared by every way a sandbox VM comes to life (boot, snapshot template, restore).
#include <string>

#include "base/error.h"
#include "engine/config.h"
#include "vmm/qemu_cmdline.h"

namespace forkd::engine {

// Fails (failed_precondition, saying why and how to do without) when cfg asks for KSM and this
// kernel cannot give it (vmm/ksm.h). Every VM's launch checks it; the daemon before it serves.
Status check_ksm(const EngineConfig& cfg);

// forkd's static QEMU build, which VMs that fit it run (vmm/static_qemu.h), or empty: only with
// the stubs and shim in use (cfg.lean_qemu and a working qemu-lean) and FORKD_STATIC_QEMU not 0.
std::string static_qemu_binary(const EngineConfig& cfg);

// A VmConfig with the run-dir files (sockets, console, pid file), machine, accelerator and TCG
// settings filled in; the caller adds kernel, memory and disk.
Result<vmm::VmConfig> base_vm_config(const EngineConfig& cfg, const std::string& id,
                                     const std::string& dir);

// Whether a new VM gets the settings that keep an idle TCG guest quiet (microvm under TCG):
// - tsc=reliable: the kernel's clocksource watchdog compares the TSC against jiffies, which lag
//   whenever QEMU's vCPU thread runs late; it then marks the TSC unstable and falls back to
//   refined-jiffies, which cannot drive a tickless idle, so the guest ticks 250 times a second
//   forever. Under TCG the guest TSC follows the host's, so it is kept.
// - no PIT: left running (masked) it wakes QEMU's main loop ~18 times a second.
// Measured on an idle minimal child: 2.3 % of a core with neither, 0.5 % with tsc=reliable,
// 0.1 % with both. New boots only: a restore follows its tag (SnapshotMeta::pit).
bool idle_quiet_tcg(const vmm::VmConfig& vc);

// Kernel arguments the host adds for a machine/accelerator pair (microvm: pci=off and, under
// TCG, tsc=reliable (above) and tsc_early_khz so the guest never calibrates its TSC against
// absent timers).
std::string host_kernel_args(const vmm::VmConfig& vc);

// A qcow2 overlay at overlay whose backing file (never written) is base in format base_format.
// With size > 0 base is not opened (it may be in use, locked by a running QEMU): the overlay gets
// that virtual size.
Status create_overlay(const std::string& base, const std::string& base_format,
                      const std::string& overlay, int64_t size = 0);

// "sb-" + 12 random hex digits.
std::string new_sandbox_id();

}  // namespace forkd::engine

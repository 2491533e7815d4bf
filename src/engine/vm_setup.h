#pragma once
// Pieces shared by every way a sandbox VM comes to life (boot, snapshot template, restore).
#include <string>

#include "base/error.h"
#include "engine/config.h"
#include "vmm/qemu_cmdline.h"

namespace forkd::engine {

// A VmConfig with the run-dir files (sockets, console, pid file), machine, accelerator and TCG
// settings filled in; the caller adds kernel, memory and disk.
Result<vmm::VmConfig> base_vm_config(const EngineConfig& cfg, const std::string& id,
                                     const std::string& dir);

// Kernel arguments the host adds for a machine/accelerator pair (microvm: pci=off and, under
// TCG, tsc_early_khz so the guest never calibrates its TSC against absent timers).
std::string host_kernel_args(const vmm::VmConfig& vc);

// A qcow2 overlay at overlay whose backing file (never written) is base in format base_format.
Status create_overlay(const std::string& base, const std::string& base_format,
                      const std::string& overlay);

// "sb-" + 12 random hex digits.
std::string new_sandbox_id();

}  // namespace forkd::engine

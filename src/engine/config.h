#pragma once
// Engine-wide settings, shared by the CLI and (later) the daemon.
#include <string>

#include "vmm/qemu_cmdline.h"

namespace forkd::engine {

struct EngineConfig {
  std::string home;    // $FORKD_HOME
  std::string assets;  // guest/ recipes
  std::string agent;   // static forkd-agent binary
  std::string accel = "auto";
  vmm::MachineType machine = vmm::MachineType::kMicrovm;
  int tb_size_mib = 0;  // 0: QEMU's default

  // Defaults from the environment: FORKD_HOME, FORKD_ASSETS_DIR, FORKD_AGENT, FORKD_ACCEL,
  // FORKD_MACHINE (microvm|pc).
  static EngineConfig from_env();

  std::string sandboxes_dir() const { return home + "/sandboxes"; }
};

// n bytes from getrandom(2).
std::string random_bytes(size_t n);

// Random lowercase hex of n bytes from getrandom(2).
std::string random_hex(size_t n_bytes);

}  // namespace forkd::engine

#pragma once
// Builds the qemu-system-x86_64 argv for one sandbox. Pure: no I/O, so it is unit-tested.
#include <optional>
#include <string>
#include <vector>

#include "vmm/accel.h"

namespace forkd::vmm {

enum class MachineType { kMicrovm, kPc };
std::string_view machine_name(MachineType m);

struct VmConfig {
  std::string qemu_binary = "qemu-system-x86_64";
  std::string name;  // -name, for ps output
  MachineType machine = MachineType::kMicrovm;
  Accel accel = Accel::kTcg;
  int tb_size_mib = 0;  // TCG translation buffer (-accel tcg,tb-size=N); 0 keeps QEMU's default
  int cpus = 1;
  int memory_mib = 256;
  // Guest RAM backing: empty means anonymous memory; otherwise a memory-backend-file on this path
  // with share=on|off (share=off maps it MAP_PRIVATE, i.e. copy-on-write).
  std::string memory_file;
  bool memory_share = false;
  std::string kernel;
  std::string initrd;  // optional
  std::string kernel_append;
  std::optional<std::string> disk;  // virtio-blk root disk
  std::string disk_format = "qcow2";
  // Run-dir files.
  std::string qmp_socket;
  std::string agent_socket;  // virtio-serial port org.forkd.agent, QEMU is the listening side
  std::string console_log;   // serial console written here
  std::string pid_file;
  // QEMU's own -daemonize. Off by default: QEMU 7.2 cannot daemonize under the full -sandbox
  // (see VmProcess::launch, which detaches QEMU itself); with it on, the sandbox loses
  // spawn=deny and elevateprivileges=deny.
  bool daemonize = false;
  bool incoming_defer = false;  // -incoming defer (restore later via QMP migrate-incoming)
  bool start_paused = false;    // -S
  bool seccomp_sandbox = true;
  // Process option, not an argument: QEMU gets SIGKILL when the launching thread's process dies
  // (used for snapshot templates, which must never outlive `forkd snapshot`).
  bool die_with_parent = false;  // -sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,...
                                 // (only obsolete,resourcecontrol with daemonize)
};

std::vector<std::string> build_qemu_argv(const VmConfig& cfg);

}  // namespace forkd::vmm

#include "engine/vm_setup.h"

#include "base/subprocess.h"
#include "vmm/accel.h"
#include "vmm/host_tsc.h"
#include "vmm/jail.h"
#include "vmm/ksm.h"

namespace forkd::engine {

Status check_ksm(const EngineConfig& cfg) {
  if (!cfg.ksm) return {};
  if (std::string why = vmm::ksm_unsupported_reason(); !why.empty()) {
    return make_error(ErrorCode::kFailedPrecondition,
                      "FORKD_KSM=1: " + why + "; unset FORKD_KSM to run without KSM");
  }
  return {};
}

std::string static_qemu_binary(const EngineConfig& cfg) {
  const vmm::HostJail& j = vmm::host_jail();
  if (!cfg.lean_qemu || !cfg.static_qemu || j.lean.dir.empty()) return {};
  return j.static_qemu.binary;
}

Result<vmm::VmConfig> base_vm_config(const EngineConfig& cfg, const std::string& id,
                                     const std::string& dir) {
  auto accel = vmm::choose_accel(cfg.accel);
  if (!accel) return tl::unexpected(accel.error());
  FORKD_TRY(check_ksm(cfg));
  vmm::VmConfig vc;
  vc.name = "forkd-" + id;
  vc.machine = cfg.machine;
  vc.bios = vmm::default_bios(vc.machine);
  vc.accel = accel->accel;
  vc.tb_size_mib = cfg.tb_size_mib;
  vc.memory_merge = cfg.ksm;
  if (cfg.lean_qemu) {
    vc.library_dir = vmm::host_jail().lean.dir;
    vc.library_unused = vmm::host_jail().lean.unused_stubs;
    vc.static_qemu = static_qemu_binary(cfg);
  }
  vc.huge_pages = cfg.qemu_huge_pages;
  vc.qmp_socket = dir + "/qmp.sock";
  vc.agent_socket = dir + "/agent.sock";
  vc.console_log = dir + "/console.log";
  // Bounded however much the guest writes; Sandbox::boot alone uses the file while it watches.
  vc.console_ring_bytes = vmm::kConsoleRingBytes;
  vc.pid_file = dir + "/qemu.pid";
  return vc;
}

bool idle_quiet_tcg(const vmm::VmConfig& vc) {
  return vc.machine == vmm::MachineType::kMicrovm && vc.accel == vmm::Accel::kTcg;
}

std::string host_kernel_args(const vmm::VmConfig& vc) {
  std::string args;
  if (vc.machine == vmm::MachineType::kMicrovm) {
    args += " pci=off";  // microvm has no PCI bus: skip probing it
    if (idle_quiet_tcg(vc)) {
      // Keep the TSC as the clocksource (see vm_setup.h).
      args += " tsc=reliable";
      if (uint64_t khz = vmm::host_tsc_khz(); khz > 0) {
        args += " tsc_early_khz=" + std::to_string(khz);
      }
    }
  }
  return args;
}

Status create_overlay(const std::string& base, const std::string& base_format,
                      const std::string& overlay, int64_t size) {
  if (find_in_path("qemu-img").empty()) {
    return make_error(ErrorCode::kQemuMissing,
                      "qemu-img not found; install it with: apt-get install qemu-utils");
  }
  std::vector<std::string> argv = {"qemu-img", "create",    "-q", "-f", "qcow2",
                                   "-F",       base_format, "-b", base};
  if (size > 0) argv.push_back("-u");
  argv.push_back(overlay);
  if (size > 0) argv.push_back(std::to_string(size));
  auto r = run_capture(argv, std::chrono::seconds(30));
  if (!r) return tl::unexpected(r.error().wrap("qemu-img create"));
  if (r->exit_code != 0) {
    return make_error(ErrorCode::kQemuFailed, "qemu-img create " + overlay + ": " + r->output);
  }
  return {};
}

std::string new_sandbox_id() { return "sb-" + random_hex(6); }

}  // namespace forkd::engine

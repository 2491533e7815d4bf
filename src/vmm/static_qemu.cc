#include "vmm/static_qemu.h"

#include <unistd.h>

#include "base/paths.h"
#include "vmm/lean_qemu.h"
#include "vmm/qemu_cmdline.h"

namespace forkd::vmm {

std::string static_qemu_default_dir() { return exe_dir() + "/" + kStaticQemuDirName; }

StaticQemu find_static_qemu(const std::string& dir, const std::string& qemu_version) {
  StaticQemu s;
  const std::string binary = dir + "/bin/qemu-system-x86_64";
  if (::access(binary.c_str(), X_OK) != 0) {
    s.reason = "not built (make qemu-static builds it into " + dir + ")";
    return s;
  }
  for (const std::string& d : {dir, dir + "/bin"}) {
    if (auto ok = check_lean_dir(d); !ok) {
      s.reason = ok.error().message();
      return s;
    }
  }
  const std::string v = read_version_file(dir + "/version");
  if (v.empty() || v != qemu_version) {
    s.reason = "built from QEMU " + (v.empty() ? std::string("(unknown)") : v) +
               ", but the installed QEMU is " +
               (qemu_version.empty() ? std::string("(not found)") : qemu_version) +
               " (make qemu-static builds the version src/vmm/lean/qemu-static/source.txt pins, "
               "when the installed QEMU has it)";
    return s;
  }
  s.binary = binary;
  return s;
}

bool fits_static_qemu(const VmConfig& cfg) {
  return !cfg.static_qemu.empty() && cfg.machine == MachineType::kMicrovm && !cfg.nic &&
         !cfg.library_dir.empty() && !skips_ram_sync(cfg);
}

std::string qemu_binary_for(const VmConfig& cfg) {
  return fits_static_qemu(cfg) ? cfg.static_qemu : cfg.qemu_binary;
}

}  // namespace forkd::vmm

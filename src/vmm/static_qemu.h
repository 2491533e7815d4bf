#pragma once
// forkd's static QEMU build (scripts/build-qemu-static.sh, `make qemu-static`): the installed
// QEMU's version, built with only what a sandbox without a network needs and linked statically,
// with the shim's answers (vmm/lean_qemu.h) linked in. It starts without the dynamic loader's
// work for ~50 libraries: about 25 against 65-100 ms of CPU per QEMU here. It lives in
// qemu-static/ beside the forkd binary; forkd runs it for the VMs it fits (fits_static_qemu)
// and the installed QEMU for the rest. Both are the same version with the same machine and
// devices, so a tag made by either is restored and branched by the other.
#include <string>

namespace forkd::vmm {

struct VmConfig;  // vmm/qemu_cmdline.h, which includes this header through vmm/jail.h

inline constexpr const char* kStaticQemuDirName = "qemu-static";

// qemu-static/ beside this executable.
std::string static_qemu_default_dir();

struct StaticQemu {
  std::string binary;  // empty: not used
  std::string reason;  // why not, when binary is empty
};

// The build in dir, when it may run: dir/bin/qemu-system-x86_64 is executable, dir and dir/bin
// pass check_lean_dir (nobody but root or this user may write there or above), and dir/version
// is qemu_version, the installed QEMU's (a build left from another version is not used).
StaticQemu find_static_qemu(const std::string& dir, const std::string& qemu_version);

// Whether a VM of cfg may run the static build (cfg.static_qemu): it has only the microvm
// machine and the devices of a sandbox without a network, no libpmem (a branch's destination
// skips its RAM sync through the pmem stub: skips_ram_sync), and it always answers as the shim
// does, so it stands in only where the shim is used (cfg.library_dir).
bool fits_static_qemu(const VmConfig& cfg);

// cfg.static_qemu when the VM fits it, else cfg.qemu_binary.
std::string qemu_binary_for(const VmConfig& cfg);

}  // namespace forkd::vmm

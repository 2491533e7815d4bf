#pragma once
// QEMU without the optional libraries forkd never uses. Debian's qemu-system-x86_64 links
// libcapstone (a disassembler, only for debug logs and the monitor's x/i) and libpmem (memory
// backends with pmem=on), and libpmem loads libndctl, libdaxctl, libkmod and libcrypto. Under
// ASLR every library's relocated data is private to each process: 1-2 MiB per child of memory
// nobody uses. forkd builds stubs with the same sonames (src/vmm/lean: capstone opens no
// handle, so QEMU prints no disassembly; the pmem calls stop QEMU with a message, except the
// sync a branch's destination was told to skip, see VmConfig::skip_ram_sync) into
// qemu-lean/ beside its programs, and QEMU's loader finds them first (LD_LIBRARY_PATH), once a
// probe showed that this QEMU starts with them. With them QEMU preloads one shim from there
// (LD_PRELOAD, src/vmm/lean/qemu_shim.c) that answers two calls of QEMU's start-up itself: a
// request for transparent huge pages on an area of at most 2 MiB (the ACPI tables' block) gets
// the opposite advice, and libfdt's clearing of the already zero 1 MiB device-tree buffer is
// skipped. 3 MiB less per child where THP is `madvise`, 1 MiB elsewhere. It also keeps the host
// page cache of a disk's files when QEMU activates the disk (a tag's base image is shared by
// all its children, and each restore dropped its cache for all of them). Asked to
// (vmm/code_pages.h), it also leaves QEMU's huge-page advice on the TCG code buffer out.
// A second set, in qemu-lean/unused (src/vmm/lean/unused_libs.txt), stands in for libraries
// whose features forkd never configures: TLS and its crypto (gnutls, nettle, hogweed, gmp), VNC's
// encodings and SASL, RDMA, VDE, eBPF, FUSE, NUMA policies, udev, D-Bus (gio). Their loading,
// relocation and start-up code cost every QEMU 10-25 ms of CPU here, and their relocated data is
// private to each (0.4 MiB per child). Each symbol stops QEMU with a message naming it, but for
// QEMU's crypto start-up and its random bytes (the guest's RDRAND under TCG), which get the
// kernel's RNG. A QEMU that imports a symbol the set lacks does not start with it; the probe then
// tries the first set alone. FORKD_LEAN_QEMU=0 loads the real libraries and no shim.
#include <map>
#include <string>

#include "base/error.h"

namespace forkd::vmm {

inline constexpr const char* kLeanQemuDirName = "qemu-lean";
// The second set's directory, inside the first.
inline constexpr const char* kUnusedStubsDirName = "unused";

struct LeanQemuProbe {
  std::string dir;            // the stubs' directory QEMU is started with; empty: its own libraries
  std::string reason;         // why not, when dir is empty
  std::string version;        // QEMU's version, when it started with the stubs ("10.0.2")
  bool pmem_stub = false;     // QEMU loaded the libpmem stub (so its backends have pmem=)
  bool unused_stubs = false;  // QEMU starts with dir/unused too
  std::string unused_reason;  // why not, when !unused_stubs (and dir is set)
};

// The QEMU version a forkd build wrote into path (qemu-lean/unused/for-qemu,
// qemu-static/version), without its newline; empty when unreadable.
std::string read_version_file(const std::string& path);

// Where the stubs are built: qemu-lean/ beside this executable.
std::string lean_qemu_default_dir();

// dir may be handed to QEMU's loader: a directory (not a symlink) owned by root or this user and
// writable by nobody else, and so is every entry in it (symlinks included: their targets are
// checked the same way), with no colon or blank in its path (the loader's separators). Anyone
// who could write there could run code inside every QEMU.
// Returns the directory's canonical path.
Result<std::string> check_lean_dir(const std::string& dir);

// Starts `binary --version` with the stubs in dir: a QEMU that imports a symbol they lack, or
// links other sonames, fails to start or does not load them; either way dir is not used. With
// dir/unused first when that directory exists; when QEMU does not start with it, maps none of
// its libraries, or is another version than the one its list was made from (dir/unused/for-qemu),
// without it (the reason in unused_reason).
LeanQemuProbe probe_lean_qemu(const std::string& binary, const std::string& dir);

// The environment QEMU gets for dir (empty map for an empty dir): the stubs' directory first in
// LD_LIBRARY_PATH (with unused_stubs, dir/unused before it) and, when dir holds it, the shim
// first in LD_PRELOAD.
std::map<std::string, std::string> lean_qemu_env(const std::string& dir, bool unused_stubs = false);

}  // namespace forkd::vmm

#pragma once
// Builds the qemu-system-x86_64 argv for one sandbox. Pure: no I/O, so it is unit-tested.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "vmm/accel.h"
#include "vmm/jail.h"

namespace forkd::vmm {

enum class MachineType { kMicrovm, kPc };
std::string_view machine_name(MachineType m);

// Bytes of guest RAM for a new VM of memory_mib MiB. Under TCG with tcg_pad this is 8 KiB more
// than the MiB figure, on purpose: QEMU before 9.0 syncs the migration dirty bitmap of a RAM block
// whose size is a multiple of 256 KiB with a fast path that does not re-arm TCG's write tracking
// (the TLB keeps the pages writable without a trap), so pages the guest writes again after a sync
// are missed by pre-copy migration and a live BRANCH saved stale pages (children hung on a lock
// word that was already released). A block of any other size takes the per-page path, which
// re-arms it. QEMU 9.0 fixed the fast path (it now resets the TCG TLB after clearing dirty bits,
// upstream February 2024), so tcg_pad is needs_tcg_ram_pad() of the QEMU in use; 8 KiB is QEMU's
// -m granularity. KVM tracks writes in the kernel and gets the plain size.
uint64_t guest_ram_bytes(int memory_mib, Accel accel, bool tcg_pad = true);
// Whether a QEMU of this version ("7.2.22") needs the pad above: before 9.0, or unknown.
bool needs_tcg_ram_pad(const std::string& qemu_version);
// Whether this QEMU has the migration capability switchover-ack (8.1+): a destination on the
// return path decides when the source may switch over (engine/switchover_gate.h).
bool has_switchover_ack(const std::string& qemu_version);

// Whether this QEMU msyncs a file-backed RAM block that is not persistent memory after an
// incoming migration: before upstream's "migration: Don't sync volatile memory after migration
// completes" (10.1, backported to 10.0.3 and 7.2.19). Unknown versions count as syncing.
bool qemu_syncs_volatile_ram(const std::string& qemu_version);

// The QEMU binary forkd runs: $FORKD_QEMU when set (a path or a name on PATH, e.g. to compare
// two QEMU builds side by side), else qemu-system-x86_64.
std::string default_qemu_binary();
constexpr uint64_t kTcgRamPadBytes = 8192;

struct VmConfig {
  std::string qemu_binary = default_qemu_binary();
  // forkd's static build (vmm/static_qemu.h), run instead where the VM fits it; empty: never.
  std::string static_qemu;
  std::string name;  // -name, for ps output
  MachineType machine = MachineType::kMicrovm;
  Accel accel = Accel::kTcg;
  int tb_size_mib = 0;  // TCG translation buffer (-accel tcg,tb-size=N); 0 keeps QEMU's default
  int cpus = 1;
  int memory_mib = 256;
  // Exact guest RAM size; 0 means guest_ram_bytes(memory_mib, accel). A restore or a branch
  // destination must use the size its state was saved with (older tags: memory_mib MiB).
  uint64_t ram_bytes = 0;
  // Guest RAM backing: empty means anonymous memory; otherwise a memory-backend-file on this path
  // with share=on|off (share=off maps it MAP_PRIVATE, i.e. copy-on-write).
  std::string memory_file;
  bool memory_share = false;
  // With share=off: open the file read-only and still give the guest writable (copy-on-write)
  // RAM (readonly=on,rom=off; QEMU 8.2+). A jailed QEMU can only read a tag's memory.
  bool memory_readonly = false;
  // With share=on: QEMU does not flush the memory file (forkd decides what reaches the disk). A
  // QEMU before 10.0.3 (7.2 before 7.2.19) msyncs its whole file-backed RAM when an incoming
  // migration ends (see qemu_syncs_volatile_ram): 0.6-1 s at 1 GiB, writing the whole file to
  // the disk while a branch writes its diff. The backend gets pmem=on, whose sync QEMU hands to
  // libpmem's pmem_persist, and QEMU starts with FORKD_PMEM_PERSIST=skip, which forkd's libpmem
  // stub (library_dir) takes as "return at once". Only with the stub: the real libpmem would flush
  // the CPU caches over the whole memory instead. QEMU's log then warns that the file is not on a
  // DAX device (MAP_SYNC is refused, so it maps the file as usual) and that pmem=on on such a
  // file is deprecated; qemu_syncs_volatile_ram keeps it off the QEMUs that need none of this.
  bool skip_ram_sync = false;
  // With share=on and > 0: QEMU brings the whole memory file in at start, on this many threads
  // (prealloc=on), so that its writes into it later take no page faults of their own.
  int prealloc_threads = 0;
  // Firmware (-bios), a name QEMU finds in its data dir; empty: QEMU's default. microvm gets qboot
  // (see default_bios): the SeaBIOS microvm build of bookworm-backports (1.16.3) never reaches
  // the kernel under TCG, and qboot boots it directly, faster.
  std::string bios;
  std::string kernel;
  std::string initrd;  // optional
  std::string kernel_append;
  std::optional<std::string> disk;  // virtio-blk root disk
  // A virtio-net NIC on a user-mode network (netdev kNicNetdev): the guest is 10.0.2.15/24, the
  // gateway 10.0.2.2 is the host's loopback, 10.0.2.3 its resolver. Part of the device state: a
  // tag's children have one exactly when the tag does.
  bool nic = false;
  // The legacy PIT (i8254). microvm can go without it (pit=off): the guest then calibrates its
  // local APIC timer from the TSC. Part of the device state: a restore must match its tag.
  // Ignored for pc, which always has one.
  bool pit = true;
  // microvm's second IO-APIC, and with it 24 virtio-mmio transports instead of 8 (forkd uses at
  // most 4). Every transport is a QEMU object of ~30 KiB, mostly a zeroed table of 1024 queues,
  // that every child writes at its start: 16 of them are 1.2 MiB of private memory per idle child.
  // Part of the device state: a restore must match its tag. Ignored for pc.
  bool ioapic2 = true;
  // With nic: back it with this tap device instead (a child in its own network namespace, see
  // vmm/netns.h; QEMU must run in that namespace: netns_path). A restricted, unconnected
  // user-mode netdev stays beside it, only so that the device state of a tag whose NIC was on
  // slirp (which carries a "slirp" section) loads.
  std::string nic_tap;
  // With nic_tap: an open descriptor of that tap (QEMU may not open /dev/net/tun itself). In
  // the caller's VmConfig it is the caller's descriptor; VmProcess::launch passes it to QEMU and
  // puts QEMU's number for it here (tap fd=N).
  int nic_tap_fd = -1;
  // Process option: QEMU joins this network namespace (a /run/netns file) before it drops
  // privileges.
  std::string netns_path;
  std::string disk_format = "qcow2";
  // Run-dir files.
  std::string qmp_socket;
  std::string agent_socket;  // virtio-serial port org.forkd.agent, QEMU is the listening side
  // When >= 0: QEMU gets these sockets already listening, as these descriptor numbers (chardev
  // fd=N), instead of creating qmp_socket/agent_socket itself (VmProcess::launch binds them).
  int qmp_fd = -1;
  int agent_fd = -1;
  // Serial console: into console_log (a file that grows while the guest writes: only for a boot
  // that forkd watches, see Sandbox::boot) when console_ring_bytes is 0, else into a ring buffer
  // of that many bytes inside QEMU (a power of two; read with QMP ringbuf-read), which a guest
  // cannot grow however much it writes.
  std::string console_log;
  uint32_t console_ring_bytes = 0;
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
  bool die_with_parent = false;
  // Process option, not an argument: all of QEMU's anonymous memory is mergeable by KSM
  // (vmm/ksm.h; FORKD_KSM=1).
  bool memory_merge = false;
  // Process option, not an argument: false forbids transparent huge pages to QEMU
  // (PR_SET_THP_DISABLE), which it asks for on its TCG code buffer and RAM blocks.
  bool huge_pages = true;
  // Process option: with the shim, TCG's code buffer gets small pages and forkd collapses the
  // filled parts into huge pages itself (vmm/code_pages.h); see collapses_code_pages.
  bool collapse_code_pages = false;
  // Process option: with the shim, TCG's code buffer gets huge pages up to its 2 MiB step
  // code_window (counted from its first whole step) and small ones from there until forkd asks
  // (vmm/code_pages.h); -1: none. collapse_code_pages wins over it.
  int code_window = -1;
  // Process option, not an argument: QEMU's loader looks here first (vmm/lean_qemu.h's stubs);
  // empty: QEMU loads its own libraries. With library_unused, library_dir/unused before it.
  std::string library_dir;
  bool library_unused = false;
  // Process options, not arguments: run QEMU as this identity (see vmm/jail.h) inside the cgroups
  // whose join files are listed (SandboxCgroup::join_files; both empty: as the caller, in the
  // caller's cgroups).
  std::optional<JailIdentity> jail;
  std::vector<std::string> cgroup_procs;
};

// The serial console's bounds (see VmConfig::console_log): the ring of every running VM, and the
// most a booting guest may write to its console file before forkd gives up on the boot. Both
// together stay within 8 MiB per sandbox.
inline constexpr uint32_t kConsoleRingBytes = 1u << 20;
inline constexpr uint64_t kMaxBootConsoleBytes = 7ull << 20;
// The NIC's netdev id (QMP set_link, HMP hostfwd_add) and its fixed MAC.
inline constexpr const char* kNicNetdev = "net0";
inline constexpr const char* kNicMac = "52:54:00:12:34:56";
// The unconnected user-mode netdev beside a tap NIC (see VmConfig::nic_tap).
inline constexpr const char* kSlirpSink = "slirpsink";
// The chardev id of the serial console (for QMP chardev-change and ringbuf-read).
inline constexpr const char* kConsoleChardev = "console";

// Whether cfg's QEMU skips its memory file's sync (VmConfig::skip_ram_sync): asked for, on a
// shared memory file, with the stub libraries. The command line's pmem=on and the environment's
// FORKD_PMEM_PERSIST=skip both follow it, so they never disagree.
bool skips_ram_sync(const VmConfig& cfg);

// Whether a QEMU started with cfg leaves its code buffer's huge pages to forkd: collapse_code_pages
// with huge_pages, under TCG with one vCPU (one TCG region, filled from its start) and the shim.
// Its owner then calls VmProcess::collapse_code_pages after the guest ran.
bool collapses_code_pages(const VmConfig& cfg);

// Whether a QEMU started with cfg could keep one step of its code buffer in small pages (the
// conditions of collapses_code_pages, without asking for it), and whether cfg asks for it
// (code_window, no collapse_code_pages).
bool can_window_code_pages(const VmConfig& cfg);
bool windows_code_pages(const VmConfig& cfg);

std::vector<std::string> build_qemu_argv(const VmConfig& cfg);

// The -bios for a machine: "qboot.rom" for microvm when QEMU's data dir has it, else empty.
std::string default_bios(MachineType m);

}  // namespace forkd::vmm

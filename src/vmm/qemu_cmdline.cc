#include "vmm/qemu_cmdline.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "vmm/code_pages.h"
#include "vmm/static_qemu.h"

namespace forkd::vmm {

namespace {

// QEMU's option parser splits on ',' and reads ",," as a literal comma, so a path with a comma
// (legal in file names) must be escaped, or it would inject extra properties.
std::string qemu_opt_escape(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    out.push_back(c);
    if (c == ',') out.push_back(',');
  }
  return out;
}

// microvm places its devices on virtio-mmio; pc puts them on PCI.
std::string virtio_device(MachineType m, const std::string& base) {
  return base + (m == MachineType::kMicrovm ? "-device" : "-pci");
}

}  // namespace

uint64_t guest_ram_bytes(int memory_mib, Accel accel, bool tcg_pad) {
  uint64_t bytes = static_cast<uint64_t>(memory_mib) << 20;
  return accel == Accel::kTcg && tcg_pad ? bytes + kTcgRamPadBytes : bytes;
}

bool needs_tcg_ram_pad(const std::string& qemu_version) {
  return !version_at_least(qemu_version, 9, 0);
}

bool has_switchover_ack(const std::string& qemu_version) {
  return version_at_least(qemu_version, 8, 1);
}

bool qemu_syncs_volatile_ram(const std::string& qemu_version) {
  int major = 0, minor = 0, micro = 0;
  if (std::sscanf(qemu_version.c_str(), "%d.%d.%d", &major, &minor, &micro) < 2) return true;
  if (major == 7 && minor == 2) return micro < 19;
  if (major == 10 && minor == 0) return micro < 3;
  return !version_at_least(qemu_version, 10, 1);
}

bool skips_ram_sync(const VmConfig& cfg) {
  return cfg.skip_ram_sync && cfg.memory_share && !cfg.memory_file.empty() &&
         !cfg.library_dir.empty();
}

std::string default_qemu_binary() {
  const char* env = std::getenv("FORKD_QEMU");
  return env && *env ? std::string(env) : std::string("qemu-system-x86_64");
}

std::string default_bios(MachineType m) {
  if (m != MachineType::kMicrovm) return {};
  return ::access("/usr/share/qemu/qboot.rom", R_OK) == 0 ? "qboot.rom" : "";
}

std::string_view machine_name(MachineType m) {
  switch (m) {
    case MachineType::kMicrovm:
      return "microvm";
    case MachineType::kPc:
      return "pc";
  }
  return "microvm";
}

bool can_window_code_pages(const VmConfig& cfg) {
  return cfg.huge_pages && cfg.accel == Accel::kTcg && cfg.cpus == 1 && !cfg.library_dir.empty();
}

bool collapses_code_pages(const VmConfig& cfg) {
  return cfg.collapse_code_pages && can_window_code_pages(cfg);
}

bool windows_code_pages(const VmConfig& cfg) {
  return cfg.code_window >= 0 && cfg.code_window < kMaxCodeWindow && !cfg.collapse_code_pages &&
         can_window_code_pages(cfg);
}

std::vector<std::string> build_qemu_argv(const VmConfig& cfg) {
  const bool microvm = cfg.machine == MachineType::kMicrovm;
  std::vector<std::string> a;
  auto add = [&a](std::string flag, std::string value) {
    a.push_back(std::move(flag));
    a.push_back(std::move(value));
  };

  a.push_back(qemu_binary_for(cfg));
  // Keep QEMU from reading /etc/qemu/*.conf or adding default devices we do not control.
  a.push_back("-nodefaults");
  a.push_back("-no-user-config");
  if (!cfg.name.empty()) add("-name", qemu_opt_escape(cfg.name) + ",debug-threads=on");

  // Machine. microvm: no option ROMs (qboot boots the kernel directly), the ISA serial port for
  // console=ttyS0 and the RTC so the guest has a wall clock before the agent sets it.
  // pc: no HPET and no vmport, which cost boot time and do nothing for us.
  std::string machine =
      microvm ? "microvm,x-option-roms=off,isa-serial=on,rtc=on" : "pc,hpet=off,vmport=off";
  if (microvm && !cfg.pit) machine += ",pit=off";
  if (microvm && !cfg.ioapic2) machine += ",ioapic2=off";
  if (!cfg.memory_file.empty()) machine += ",memory-backend=mem";
  // QEMU marks guest RAM mergeable by default, so that a host running ksmd would merge equal
  // guest pages across sandboxes (the page-deduplication side channel) without being asked.
  // FORKD_KSM=1 asks for it (vmm/ksm.h), for all of QEMU's memory.
  if (!cfg.memory_merge) machine += ",mem-merge=off";
  // No JSON description of every device field in a migration stream (only QEMU's stream
  // analyser reads it): QEMU builds it while the guest is stopped, 0.15 ms of a live branch's
  // 0.9 ms pause here (the CPU's state alone 0.1 ms). A loader never needs it.
  machine += ",suppress-vmdesc=on";
  add("-machine", machine);

  if (cfg.accel == Accel::kKvm) {
    add("-accel", "kvm");
    add("-cpu", "host");
  } else {
    std::string accel = "tcg";
    if (cfg.tb_size_mib > 0) accel += ",tb-size=" + std::to_string(cfg.tb_size_mib);
    add("-accel", accel);
    // `max` exposes every feature TCG emulates (x86-64-v2+), which a 6.1 kernel and modern
    // userland binaries expect; qemu64 lacks e.g. SSE4.2/POPCNT.
    add("-cpu", "max");
    // A queue's notification is then an MMIO write the vCPU thread serves itself (an ioeventfd
    // spares KVM an exit; TCG has none to spare). With ioeventfds QEMU takes every queue's down
    // and up again at each stop and start of the VM, memory-map updates under the global lock:
    // 0.21 ms of a live branch's 0.30 ms stop in QEMU's trace, with the guest already stopped.
    // Host-side only (nothing of it is in a device's saved state): tags restore either way.
    if (microvm) add("-global", "virtio-mmio.ioeventfd=off");
  }
  add("-smp", std::to_string(cfg.cpus));
  uint64_t ram_bytes = cfg.ram_bytes ? cfg.ram_bytes : guest_ram_bytes(cfg.memory_mib, cfg.accel);
  std::string ram = ram_bytes % (1u << 20) == 0 ? std::to_string(ram_bytes >> 20) + "M"
                                                : std::to_string(ram_bytes / 1024) + "K";
  add("-m", ram);
  if (!cfg.memory_file.empty()) {
    add("-object",
        "memory-backend-file,id=mem,size=" + ram + ",mem-path=" + qemu_opt_escape(cfg.memory_file) +
            ",share=" + (cfg.memory_share ? "on" : "off") +
            (!cfg.memory_share && cfg.memory_readonly ? ",readonly=on,rom=off" : "") +
            (skips_ram_sync(cfg) ? ",pmem=on" : "") +
            (cfg.memory_share && cfg.prealloc_threads > 0
                 ? ",prealloc=on,prealloc-threads=" + std::to_string(cfg.prealloc_threads)
                 : ""));
  }

  if (!cfg.bios.empty()) add("-bios", cfg.bios);
  if (!cfg.kernel.empty()) add("-kernel", cfg.kernel);
  if (!cfg.initrd.empty()) add("-initrd", cfg.initrd);
  if (!cfg.kernel_append.empty()) add("-append", cfg.kernel_append);

  // No display; -nographic would redirect serial/monitor to stdio, which -daemonize forbids.
  add("-display", "none");
  if (!microvm) add("-vga", "none");
  // A guest reboot (including panic=N) ends QEMU instead of rebooting the sandbox silently.
  a.push_back("-no-reboot");

  // Serial console: a ring buffer QEMU keeps bounded, or (a watched boot) a file.
  if (cfg.console_ring_bytes > 0) {
    add("-chardev", std::string("ringbuf,id=") + kConsoleChardev +
                        ",size=" + std::to_string(cfg.console_ring_bytes));
  } else {
    add("-chardev",
        std::string("file,id=") + kConsoleChardev + ",path=" + qemu_opt_escape(cfg.console_log));
  }
  add("-serial", std::string("chardev:") + kConsoleChardev);

  // QMP control socket.
  auto listener = [](const std::string& path, int fd) {
    return fd >= 0 ? "fd=" + std::to_string(fd) : "path=" + qemu_opt_escape(path);
  };
  add("-chardev", "socket,id=qmp," + listener(cfg.qmp_socket, cfg.qmp_fd) + ",server=on,wait=off");
  add("-mon", "chardev=qmp,mode=control");

  // Guest agent channel: virtio-serial port org.forkd.agent (/dev/vport0p1 in the guest).
  add("-device", virtio_device(cfg.machine, "virtio-serial") + ",id=vser");
  add("-chardev",
      "socket,id=agent," + listener(cfg.agent_socket, cfg.agent_fd) + ",server=on,wait=off");
  add("-device", "virtserialport,bus=vser.0,chardev=agent,name=org.forkd.agent");

  if (cfg.disk) {
    // cache=writeback (QEMU's default, spelled out): host page cache, guest flushes honoured.
    // Not cache=none: O_DIRECT fails on tmpfs run dirs. Not cache=unsafe: a branch freezes this
    // overlay as a tag disk, and we want the guest's fsyncs to have meant something.
    add("-drive", "file=" + qemu_opt_escape(*cfg.disk) + ",format=" +
                      qemu_opt_escape(cfg.disk_format) + ",if=none,id=root,cache=writeback");
    add("-device", virtio_device(cfg.machine, "virtio-blk") + ",drive=root");
  }

  // Entropy for the guest's CRNG at boot (the agent reseeds it again after each restore).
  add("-object", "rng-random,id=rng,filename=/dev/urandom");
  add("-device", virtio_device(cfg.machine, "virtio-rng") + ",rng=rng");

  // VM generation ID: makes the guest kernel reseed on restore. Only reaches the guest on pc
  // (it is an ACPI device microvm does not expose).
  if (!microvm) add("-device", "vmgenid,guid=auto");

  // The NIC comes last, so the devices before it keep their virtio-mmio slots with or without
  // it. Every child keeps the tag's MAC and address: its user-mode network (slirp, inside this
  // QEMU) is its own, so nothing conflicts. IPv4 only. guest_announce=off: after a restore QEMU
  // would otherwise have the guest send gratuitous ARPs for half a second, which nobody on a
  // private user-mode network needs and which cost a fresh child ~50 ms under TCG.
  if (cfg.nic) {
    if (cfg.nic_tap.empty()) {
      add("-netdev", std::string("user,id=") + kNicNetdev + ",net=10.0.2.0/24,ipv6=off");
    } else {
      // No virtio-net header (vnet_hdr=off; a passed descriptor is opened without it): the NIC's
      // device state then matches one on slirp, both ways (a branch of this child is a tag like
      // any other).
      add("-netdev", std::string("tap,id=") + kNicNetdev +
                         (cfg.nic_tap_fd >= 0 ? ",fd=" + std::to_string(cfg.nic_tap_fd)
                                              : ",ifname=" + cfg.nic_tap +
                                                    ",vnet_hdr=off,script=no,downscript=no"));
      add("-netdev",
          std::string("user,id=") + kSlirpSink + ",restrict=on,net=10.0.2.0/24,ipv6=off");
    }
    add("-device", virtio_device(cfg.machine, "virtio-net") + ",netdev=" + kNicNetdev +
                       ",mac=" + kNicMac + ",guest_announce=off");
  }

  if (cfg.incoming_defer) add("-incoming", "defer");
  if (cfg.start_paused) a.push_back("-S");
  if (cfg.seccomp_sandbox) {
    // QEMU 7.2 installs the seccomp filter before -daemonize forks and calls setsid(), so
    // spawn=deny kills it with SIGSYS and elevateprivileges=deny makes it exit 1 (measured).
    // With -daemonize only the compatible subset is possible; VmProcess::launch therefore does
    // not use -daemonize and gets the full jail.
    add("-sandbox", cfg.daemonize ? "on,obsolete=deny,resourcecontrol=deny" : kSeccompOptions);
  }
  if (cfg.daemonize) a.push_back("-daemonize");
  if (!cfg.pid_file.empty()) add("-pidfile", cfg.pid_file);
  return a;
}

}  // namespace forkd::vmm

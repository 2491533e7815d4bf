#pragma once
// Engine-wide settings, shared by the CLI and (later) the daemon.
#include <string>

#include "base/error.h"
#include "base/random.h"
#include "vmm/qemu_cmdline.h"

namespace forkd::engine {

struct EngineConfig {
  std::string home;    // $FORKD_HOME
  std::string assets;  // guest/ recipes
  std::string agent;   // static forkd-agent binary
  std::string accel = "auto";
  vmm::MachineType machine = vmm::MachineType::kMicrovm;
  int tb_size_mib = 0;  // 0: QEMU's default
  // FORKD_KSM=1: every QEMU's memory is mergeable by KSM (vmm/ksm.h: less memory per child, at
  // the price of ksmd's CPU and the page-deduplication side channel between sandboxes).
  bool ksm = false;
  // QEMU starts with forkd's stub libraries where they work (vmm/lean_qemu.h);
  // FORKD_LEAN_QEMU=0 loads the real libcapstone and libpmem, and no shim.
  bool lean_qemu = true;
  // VMs that fit it run forkd's static QEMU build where it is built (vmm/static_qemu.h);
  // FORKD_STATIC_QEMU=0 runs the installed QEMU for all. Only with lean_qemu.
  bool static_qemu = true;
  // QEMU may use transparent huge pages where it asks for them (its TCG code buffer and its RAM
  // blocks; with the stubs, areas of at most 2 MiB get none, vmm/lean_qemu.h).
  // FORKD_QEMU_HUGE_PAGES=0 forbids them: the code buffer then grows in 4 KiB pages instead of
  // 2 MiB ones (~1 MiB less per idle child), and translated code runs from 4 KiB pages (exec and
  // eval ~14 % slower).
  bool qemu_huge_pages = true;
  // FORKD_COLLAPSE_CODE_PAGES=1: a child's TCG code buffer gets 4 KiB pages and forkd collapses
  // the 2 MiB steps TCG has filled into huge pages (vmm/code_pages.h; needs the shim and
  // CAP_SYS_NICE), instead of each step being a whole huge page from its first byte as QEMU asks:
  // ~1 MiB less per idle child, but a child's first exec and eval run 25-60 % slower.
  bool collapse_code_pages = false;
  // A child's TCG code buffer keeps small pages while it is idle from the 2 MiB step on that TCG
  // reached in an earlier child of the same tag (vmm/code_pages.h, engine/code_window.h; needs
  // the shim and CAP_SYS_NICE). Before each agent call forkd has the shim advise huge pages for
  // it and collapses what TCG wrote there, so calls translate into huge pages as before.
  // FORKD_CODE_WINDOW=0 turns it off.
  bool code_window = true;
  // Host-side limits every sandbox's QEMU gets unless its request says otherwise (the daemon's
  // --memory-limit/--cpus/--pids; env FORKD_MEMORY_LIMIT_MIB, FORKD_CPU_LIMIT, FORKD_PIDS_LIMIT).
  vmm::Limits default_limits;
  // false: QEMUs run as this process even where the jail is available (bench spawn measures what
  // the jail costs side by side).
  bool jail = true;
  // Where exposed guest ports listen on the host (an IPv4 address; env FORKD_EXPOSE_ADDRESS, the
  // daemon's --expose-address).
  std::string expose_address = "127.0.0.1";
  // Non-empty: sandboxes with network outbound are refused with this reason (a daemon serving
  // TCP without a token, which outbound guests could reach).
  std::string outbound_refusal;

  // Defaults from the environment: FORKD_HOME, FORKD_ASSETS_DIR, FORKD_AGENT, FORKD_ACCEL,
  // FORKD_MACHINE (microvm|pc), and the FORKD_* settings above.
  static EngineConfig from_env();

  std::string sandboxes_dir() const { return home + "/sandboxes"; }
};

// True for "1", "on", "yes" and "true" (an environment switch).
bool is_true_word(const std::string& s);

// True for a dotted IPv4 address (what an exposed port may listen on).
bool is_ipv4_address(const std::string& s);

// Makes $FORKD_HOME private before anything is written under it: the home and its top-level
// directories are created 0700, and tightened to 0700 when an older forkd left them open (tag
// memory is guest RAM, secrets included). Only directories this user owns are changed. With the
// jail (vmm/jail.h) they are 02710 root:forkd-qemu instead: jailed QEMUs may traverse them to
// the tag and image files they read (group-readable, as are the trees already there), nobody
// else may enter.
Status prepare_home(const EngineConfig& cfg);

// The home's top-level directories ("" is the home itself).
inline constexpr const char* kHomeDirs[] = {"",       "/snapshots", "/sandboxes",  "/images",
                                            "/cache", "/pool",      "/workspaces", "/branching"};

// From base/random.h, used all over the engine.
using forkd::random_bytes;
using forkd::random_hex;

}  // namespace forkd::engine

#include "bench/baseline.h"

#include "base/clock.h"
#include "base/dir_lock.h"
#include "base/files.h"
#include "engine/migration.h"
#include "engine/sandbox.h"
#include "engine/sandbox_jail.h"
#include "engine/vm_setup.h"
#include "engine/warmup.h"

namespace forkd::bench {

namespace {
using Clock = std::chrono::steady_clock;

engine::BootOptions boot_options(const store::SnapshotMeta& meta) {
  engine::BootOptions bo;
  bo.image = meta.image;
  bo.memory_mib = meta.memory_mib;
  bo.ram_bytes = meta.guest_ram_bytes();  // the tag's exact size (TCG pad or not), as children
  bo.cpus = meta.cpus;
  bo.nic = meta.has_nic();  // the same devices as the tag's children (and its warm-up's network)
  return bo;
}
}  // namespace

Result<ColdBootResult> cold_boot_and_warm(const engine::EngineConfig& cfg,
                                          const store::SnapshotMeta& meta) {
  ColdBootResult res;
  auto t0 = Clock::now();
  auto sb = engine::Sandbox::boot(cfg, boot_options(meta));
  if (!sb) return tl::unexpected(sb.error().wrap("cold boot"));
  res.boot_ms = ms_since(t0);
  auto t1 = Clock::now();
  if (auto st = engine::run_warmup(**sb, engine::Warmup::from_record(meta.warmup), {}); !st) {
    return tl::unexpected(st.error().wrap("cold boot"));
  }
  res.warmup_ms = ms_since(t1);
  res.total_ms = ms_since(t0);
  return res;
}

Result<PlainRestoreResult> plain_restore(const engine::EngineConfig& cfg,
                                         const store::SnapshotMeta& meta) {
  PlainRestoreResult res;
  auto tmp = TempDir::create("forkd-plain-restore");
  if (!tmp) return tl::unexpected(tmp.error());
  std::string state = tmp->path() + "/full.state";
  std::string disk = tmp->path() + "/disk.qcow2";
  auto src = engine::Sandbox::boot(cfg, boot_options(meta));
  if (!src) return tl::unexpected(src.error().wrap("plain restore: source"));
  if (auto st = engine::run_warmup(**src, engine::Warmup::from_record(meta.warmup), {}); !st) {
    return tl::unexpected(st.error().wrap("plain restore: source"));
  }
  engine::settle_guest((*src)->qemu_pid(), {});  // frozen as a tag's template is
  auto saved =
      engine::save_device_state((*src)->dir() + "/qmp.sock", state, /*ignore_shared=*/false);
  if (!saved) return tl::unexpected(saved.error().wrap("plain restore: save"));
  res.save_ms = saved->pause_ms;
  res.save_no_fsync_ms = saved->written_ms;
  res.state_bytes = saved->bytes;
  nlohmann::json rec = (*src)->record();
  (*src)->stop_vm();
  bool has_disk = ::rename(((*src)->dir() + "/overlay.qcow2").c_str(), disk.c_str()) == 0;
  (*src)->destroy();

  std::string id = engine::new_sandbox_id();
  std::string dir = cfg.sandboxes_dir() + "/" + id;
  auto vc = engine::base_vm_config(cfg, id, dir);
  if (!vc) return tl::unexpected(vc.error());
  // Locked while it runs (it never gets a record): gc leaves it alone, and reaps it if we die.
  auto dir_lock = LockedDir::create(cfg.sandboxes_dir(), id);
  if (!dir_lock) return tl::unexpected(dir_lock.error().wrap("plain restore"));
  dir_lock->keep();
  vc->machine = meta.machine == "pc" ? vmm::MachineType::kPc : vmm::MachineType::kMicrovm;
  vc->bios = vmm::default_bios(vc->machine);
  vc->cpus = meta.cpus;
  vc->memory_mib = meta.memory_mib;
  vc->ram_bytes = meta.guest_ram_bytes();  // what the source booted with (boot_options)
  vc->incoming_defer = true;
  vc->nic = meta.has_nic();  // the saved state has the NIC when the tag does
  vc->pit = meta.pit;
  vc->ioapic2 = meta.ioapic2;
  if (has_disk) {
    // Into the run dir, which a jailed QEMU can reach (the temporary dir is root's alone).
    std::string run_disk = dir + "/overlay.qcow2";
    if (::rename(disk.c_str(), run_disk.c_str()) != 0) {
      auto e = errno_error(errno, "plain restore: move the disk into " + dir);
      (void)engine::remove_run_dir(dir);
      return e;
    }
    vc->disk = run_disk;
  }
  auto jail = engine::jail_vm(cfg, dir, {}, &*vc);
  if (!jail) {
    (void)engine::remove_run_dir(dir);
    return tl::unexpected(jail.error().wrap("plain restore"));
  }
  auto t0 = Clock::now();
  auto launched = vmm::VmProcess::launch_with_qmp(*vc, dir + "/qemu.log", std::chrono::seconds(30));
  if (!launched) {
    (void)engine::remove_run_dir(dir);
    return tl::unexpected(launched.error().wrap("plain restore: launch"));
  }
  res.launch_ms = ms_since(t0);
  auto& [vm, qmp] = *launched;
  auto cleanup = [&, &vm_ref = vm] {
    vm_ref.terminate(std::chrono::milliseconds(2000));
    (void)engine::remove_run_dir(dir);
  };
  auto t1 = Clock::now();
  if (auto st = engine::load_device_state(qmp, state, /*ignore_shared=*/false); !st) {
    std::string said = vmm::log_tail(dir + "/qemu.log", 1024);
    cleanup();
    return tl::unexpected(st.error().wrap("plain restore: load" +
                                          (said.empty() ? "" : " (qemu said: " + said + ")")));
  }
  res.load_ms = ms_since(t1);
  auto t2 = Clock::now();
  auto agent = engine::AgentClient::connect(vc->agent_socket, std::chrono::seconds(5));
  Result<nlohmann::json> hello = agent ? (*agent)->open_session(std::chrono::seconds(10))
                                       : Result<nlohmann::json>(tl::unexpected(agent.error()));
  res.agent_ms = ms_since(t2);
  res.total_ms = ms_since(t0);
  agent = make_error(ErrorCode::kCancelled, "done");
  cleanup();
  if (!hello) return tl::unexpected(hello.error().wrap("plain restore: agent"));
  return res;
}

}  // namespace forkd::bench

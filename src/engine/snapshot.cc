#include "engine/snapshot.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>

#include "base/clock.h"
#include "base/files.h"
#include "base/log.h"
#include "base/subprocess.h"
#include "engine/chain_ops.h"
#include "engine/migration.h"
#include "engine/sandbox.h"
#include "engine/warmup.h"
#include "store/chain.h"
#include "store/snapshot_store.h"
#include "store/tag_write.h"
#include "vmm/accel.h"
#include "vmm/jail.h"
#include "vmm/qmp_client.h"

namespace forkd::engine {

namespace {

using Clock = std::chrono::steady_clock;

Status link_or_copy(const std::string& from, const std::string& to) {
  if (::link(from.c_str(), to.c_str()) == 0) return {};
  auto data = read_file(from, 1u << 30);
  if (!data) return tl::unexpected(data.error());
  return write_file_atomic(to, *data, store::kTagFileMode);
}

}  // namespace

Result<SnapshotResult> create_snapshot(const EngineConfig& cfg, const SnapshotOptions& opts) {
  store::SnapshotStore snaps(cfg.home);
  FORKD_TRY(store::SnapshotStore::validate_tag(opts.tag));
  (void)snaps.cleanup_stale();
  // Holds the tag's lock until it returns: a second writer of the tag is refused at once.
  // Whatever fails below, the staging dir goes (a kill -9 leaves a .staging-* dir, which no
  // command treats as a tag and the next writer of the tag, or any cleanup, removes).
  auto write = store::TagWrite::begin(snaps, opts.tag, opts.force);
  if (!write) return tl::unexpected(write.error().wrap("snapshot " + opts.tag));
  const std::string* staging = &write->staging();
  auto wrap = [&](const Error& e) { return tl::unexpected(e.wrap("snapshot " + opts.tag)); };

  if (opts.network != "none" && opts.network != "outbound") {
    return make_error(ErrorCode::kInvalidArgument, "snapshot " + opts.tag +
                                                       ": network must be none or outbound, got '" +
                                                       opts.network.substr(0, 40) + "'");
  }
  if (opts.network == "outbound" && !cfg.outbound_refusal.empty()) {
    return make_error(ErrorCode::kFailedPrecondition,
                      "snapshot " + opts.tag + ": network outbound: " + cfg.outbound_refusal);
  }
  SnapshotResult res;
  auto accel = vmm::choose_accel(cfg.accel);
  if (!accel) return wrap(accel.error());
  uint64_t ram_bytes = opts.ram_bytes ? opts.ram_bytes
                                      : vmm::guest_ram_bytes(opts.memory_mib, accel->accel,
                                                             vmm::host_jail().tcg_ram_pad);
  if (auto st = preallocate_file(*staging + "/memory", ram_bytes); !st) return wrap(st.error());

  auto t_boot = Clock::now();
  BootOptions bo;
  bo.image = opts.image;
  bo.memory_mib = opts.memory_mib;
  bo.ram_bytes = ram_bytes;
  bo.with_pit = opts.with_pit;
  bo.with_ioapic2 = opts.with_ioapic2;
  bo.cpus = opts.cpus;
  bo.progress = opts.progress;
  bo.memory_file = *staging + "/memory";
  bo.die_with_parent = true;
  bo.nic = opts.network == "outbound";
  auto sb = Sandbox::boot(cfg, bo);
  if (!sb) return wrap(sb.error());
  res.boot_ms = ms_since(t_boot);

  auto t_warm = Clock::now();
  Warmup warm{opts.warmup, opts.warmup_eval};
  if (auto st = run_warmup(**sb, warm, opts.progress); !st) {
    return tl::unexpected(
        Error(st.error().code(), "snapshot " + opts.tag + ": " + st.error().message()));
  }
  res.warmup_ms = ms_since(t_warm);
  res.settle_ms = settle_guest((*sb)->qemu_pid(), opts.progress);

  auto t_save = Clock::now();
  auto saved = save_device_state((*sb)->dir() + "/qmp.sock", *staging + "/vmstate");
  if (!saved) return wrap(saved.error());
  res.save_ms = ms_since(t_save);
  std::string disk_src = (*sb)->dir() + "/overlay.qcow2";
  bool has_disk = path_exists(disk_src);
  Json rec = (*sb)->record();
  // The template is done: QEMU quits (flushing the disk overlay); the overlay moves into the
  // tag below, then the run dir goes.
  (*sb)->stop_vm();

  store::SnapshotMeta meta;
  meta.tag = opts.tag;
  meta.image = opts.image;
  meta.created_at = static_cast<int64_t>(std::time(nullptr));
  meta.machine = rec.value("machine", "microvm");
  meta.memory_mib = opts.memory_mib;
  meta.ram_bytes = ram_bytes;
  meta.cpus = opts.cpus;
  meta.kernel_append = rec.value("kernel_append", "");
  meta.network = opts.network;
  meta.pit = rec.value("pit", true);
  meta.ioapic2 = rec.value("ioapic2", true);
  meta.pause_ms = saved->pause_ms;
  meta.warmup = warm.to_record();
  meta.files["vmstate"] = {};
  meta.files["memory"] = {};
  meta.files["kernel"] = {};

  auto t_commit = Clock::now();
  ImageStore images(cfg.home, cfg.assets, cfg.agent);
  auto image = images.get(opts.image, {});
  if (!image) return wrap(image.error());
  if (auto st = link_or_copy(image->kernel, *staging + "/bzImage"); !st) return wrap(st.error());
  if (!image->initrd.empty()) {
    if (auto st = link_or_copy(image->initrd, *staging + "/initramfs.gz"); !st) {
      return wrap(st.error());
    }
    meta.has_initrd = true;
    meta.files["initrd"] = {};
  }
  if (has_disk) {
    std::string disk = *staging + "/disk.qcow2";
    if (::rename(disk_src.c_str(), disk.c_str()) != 0) {
      return wrap(errno_error(errno, "move disk overlay").value());
    }
    if (auto st = link_or_copy(image->disk, *staging + "/base.img"); !st) return wrap(st.error());
    // The tag's disk is self-contained: its backing file is the base.img beside it.
    auto r = run_capture(
        {"qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", "base.img", disk},
        std::chrono::seconds(30));
    if (!r || r->exit_code != 0) {
      return make_error(ErrorCode::kQemuFailed, "snapshot " + opts.tag + ": qemu-img rebase: " +
                                                    (r ? r->output : r.error().message()));
    }
    meta.has_disk = true;
    meta.files["disk"] = {};
    meta.files["base"] = {};
  }
  for (const auto& [role, f] : meta.files) {
    std::string path = *staging + "/" + store::snapshot_file_name(role);
    if (auto st = fsync_path(path); !st) return wrap(st.error());
    ::chmod(path.c_str(), store::kTagFileMode);
  }
  (*sb)->destroy();
  if (opts.force && opts.cascade) {
    for (const auto& dep : store::direct_dependents(snaps, opts.tag)) {
      if (auto st = remove_tag(cfg, dep, RemoveMode::kCascade); !st) return wrap(st.error());
    }
  }
  if (auto st = write->commit(meta); !st) return wrap(st.error());
  res.commit_ms = ms_since(t_commit);
  auto loaded = snaps.load(opts.tag);
  if (!loaded) return wrap(loaded.error());
  res.meta = *loaded;
  return res;
}

}  // namespace forkd::engine

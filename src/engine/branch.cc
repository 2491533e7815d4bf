#include "engine/branch.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>

#include "base/clock.h"
#include "base/dir_lock.h"
#include "base/files.h"
#include "base/json_get.h"
#include "base/log.h"
#include "base/subprocess.h"
#include "engine/branch_migrate.h"
#include "engine/disk_checks.h"
#include "engine/disk_fold.h"
#include "engine/fork.h"
#include "engine/registry.h"
#include "engine/sandbox.h"
#include "engine/warmup.h"
#include "store/chain.h"
#include "store/snapshot_store.h"
#include "store/tag_write.h"
#include "vmm/jail.h"

namespace forkd::engine {

namespace {

using Clock = std::chrono::steady_clock;

// Claims the tag (pending record) for the duration of a branch; on destruction without
// success() the record says failed with the error.
class PendingClaim {
 public:
  PendingClaim(const store::SnapshotStore& store, store::PendingTag p, bool keep_failed)
      : store_(store), p_(std::move(p)), keep_failed_(keep_failed) {}
  Status begin(bool replace) {
    FORKD_TRY(store_.begin_pending(p_, replace));
    claimed_ = true;
    return {};
  }
  // On the way to the tag, right after the source resumed: not flushed, since an fsync here
  // waits behind the destination's writes (240 ms in a probed 1 GiB branch).
  void set_pause(double ms) {
    p_.pause_ms = ms;
    (void)store_.update_pending(p_, /*durable=*/false);
  }
  void fail(const Error& e) {
    if (!claimed_) return;
    if (!keep_failed_) return done();
    p_.status = "failed";
    p_.error = e.message();
    (void)store_.update_pending(p_);
    claimed_ = false;
  }
  void done() {
    if (claimed_) store_.end_pending(p_.tag);
    claimed_ = false;
  }
  ~PendingClaim() {
    if (claimed_) fail(Error(ErrorCode::kInternal, "branch ended without a result"));
  }

 private:
  const store::SnapshotStore& store_;
  store::PendingTag p_;
  bool keep_failed_;
  bool claimed_ = false;
};

// The tag a sandbox was forked from, if it is still there and ready (a link's parent).
std::optional<store::SnapshotMeta> source_parent(const store::SnapshotStore& snaps, const Json& rec,
                                                 int memory_mib) {
  auto it = rec.find("tag");
  if (it == rec.end() || !it->is_string()) return std::nullopt;
  auto meta = snaps.load(it->get<std::string>());
  if (!meta || meta->status != "ready" || meta->memory_mib != memory_mib) return std::nullopt;
  return std::move(*meta);
}

// Makes the frozen top layer of the source's disk a self-contained tag disk: a copy of the
// layer, rebased (safe mode: differing clusters are copied in) straight onto the base image, and
// the base hard-linked beside it. The safe rebase reads the source's chain, whose names its
// QEMU wrote, so it runs as that QEMU's owner, on a copy lent to it; the tag keeps a copy of that
// in turn, made by forkd (a descriptor the lent file leaked reaches no tag).
Status write_tag_disk(const std::string& frozen_layer, const std::string& base,
                      const std::optional<SpawnOptions::Credentials>& owner,
                      const std::string& staging) {
  auto copy = [](const std::string& from, const std::string& to) -> Status {
    auto r = run_capture({"cp", "--sparse=always", from, to}, std::chrono::minutes(5));
    if (!r || r->exit_code != 0) {
      return make_error(ErrorCode::kIo, "copy disk layer: " + (r ? r->output : ""));
    }
    return {};
  };
  std::string disk = staging + "/disk.qcow2";
  std::string work = owner ? staging + "/disk.lent.qcow2" : disk;
  FORKD_TRY(copy(frozen_layer, work));
  struct Unlent {
    std::string path;
    ~Unlent() {
      if (!path.empty()) ::unlink(path.c_str());
    }
  } unlent{owner ? work : ""};
  if (owner) FORKD_TRY(vmm::give_file(work, {owner->uid, owner->gid}));
  auto r = run_capture({"qemu-img", "rebase", "-U", "-f", "qcow2", "-F", "raw", "-b", base, work},
                       std::chrono::minutes(10), {}, owner);
  if (!r || r->exit_code != 0) {
    return make_error(ErrorCode::kQemuFailed,
                      "qemu-img rebase: " + (r ? r->output : r.error().message()));
  }
  if (owner) FORKD_TRY(copy(work, disk));
  if (::link(base.c_str(), (staging + "/base.img").c_str()) != 0) {
    return errno_error(errno, "link base image into the tag");
  }
  r = run_capture({"qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", "base.img", disk},
                  std::chrono::seconds(30));
  if (!r || r->exit_code != 0) {
    return make_error(ErrorCode::kQemuFailed,
                      "qemu-img rebase -u: " + (r ? r->output : r.error().message()));
  }
  return {};
}

// A fold of the source's frozen disk layer may take this long (it copies what the guest wrote
// to its disk since the branch before; bounded by the disk's size).
constexpr auto kFoldLimit = std::chrono::seconds(60);

// The source's chain one layer shorter again (engine/disk_fold.h). The tag is committed by
// then: a fold that fails leaves the chain a layer deeper, never a broken branch.
void fold_source_disk(const std::string& source_dir, const std::string& frozen, BranchResult& res) {
  auto t0 = Clock::now();
  auto qmp = vmm::QmpClient::connect(source_dir + "/qmp.sock", std::chrono::seconds(5));
  auto r = qmp ? fold_frozen_layer(*qmp, source_dir, frozen, kFoldLimit)
               : Result<FoldResult>(tl::unexpected(qmp.error()));
  res.fold_ms = ms_since(t0);
  if (!r) {
    logger("branch")->warn("event=fold_failed layer={} error=\"{}\"", frozen, r.error().describe());
    return;
  }
  res.folded = r->folded;
  if (!r->note.empty()) {
    logger("branch")->info("event=fold_note layer={} folded={} note=\"{}\"", frozen, r->folded,
                           r->note);
  }
}

bool receiver_enabled() {
  const char* env = std::getenv("FORKD_BRANCH_RECEIVER");
  return env == nullptr || std::string(env) != "0";
}

}  // namespace

Result<BranchMode> parse_branch_mode(const std::string& s) {
  if (s == "full") return BranchMode::kFull;
  if (s == "live" || s == "diff") return BranchMode::kLive;
  return make_error(ErrorCode::kInvalidArgument,
                    "unknown branch mode '" + s + "': use full, diff or live");
}

const char* branch_mode_name(BranchMode m) { return m == BranchMode::kFull ? "full" : "live"; }

std::string generate_branch_tag(const std::string& sandbox_id) {
  // branch-<id>-<unix ts>-<hex>: sb- ids are 15 characters, so this stays within 64.
  return "branch-" + sandbox_id + "-" + std::to_string(std::time(nullptr)) + "-" + random_hex(3);
}

Result<BranchResult> branch_sandbox(const EngineConfig& cfg, const BranchOptions& opts) {
  auto t0 = Clock::now();
  store::SnapshotStore snaps(cfg.home);
  std::string tag = opts.tag.empty() ? generate_branch_tag(opts.sandbox_id) : opts.tag;
  FORKD_TRY(store::SnapshotStore::validate_tag(tag));
  // The record only: the branch talks to QEMU, never to the agent (whose one connection may
  // well be held by the caller).
  std::optional<SandboxInfo> found;
  for (auto& s : list_sandboxes(cfg)) {
    if (s.id == opts.sandbox_id) found = std::move(s);
  }
  if (!found || !found->alive()) {
    return make_error(ErrorCode::kNotFound,
                      "branch: no running sandbox '" + opts.sandbox_id + "' (see forkd ps)");
  }
  const Json& rec = found->record;
  int memory_mib = json::int_or(rec, "memory_mib", 256);
  if (!rec.contains("tag")) {
    // A booted VM (forkd run, a snapshot template) has kernel blobs in fw_cfg that a
    // destination started like a child lacks.
    return make_error(ErrorCode::kFailedPrecondition,
                      "branch: sandbox '" + opts.sandbox_id +
                          "' was booted, not forked from a tag; only forked sandboxes branch");
  }

  // One branch of a source at a time (QEMU runs one migration per VM): a second is refused at
  // once, as the contract's "branch in flight" 409.
  std::string source_dir = cfg.sandboxes_dir() + "/" + opts.sandbox_id;
  auto source_lock = FileLock::try_lock(source_dir + "/.branch.lock", "sandbox " + opts.sandbox_id);
  if (!source_lock) {
    if (source_lock.error().code() != ErrorCode::kAlreadyExists) {
      return tl::unexpected(source_lock.error().wrap("branch"));
    }
    return make_error(ErrorCode::kAlreadyExists,
                      "branch: a branch of sandbox " + opts.sandbox_id + " is already in flight");
  }
  (void)snaps.cleanup_stale();
  // The tag's lock, held until this returns: a second branch into the same tag is refused here.
  auto write = store::TagWrite::begin(snaps, tag, opts.replace);
  if (!write) return tl::unexpected(write.error().wrap("branch " + opts.sandbox_id));
  const std::string* staging = &write->staging();

  store::PendingTag pend;
  pend.tag = tag;
  pend.branched_from = opts.sandbox_id;
  pend.created_at = static_cast<int64_t>(std::time(nullptr));
  pend.pid = static_cast<int>(::getpid());
  PendingClaim claim(snaps, pend, opts.keep_failed_record);
  FORKD_TRY(claim.begin(opts.replace));
  auto fail = [&](const Error& e) -> Result<BranchResult> {
    Error wrapped = e.wrap("branch " + opts.sandbox_id + " into " + tag);
    claim.fail(wrapped);
    return tl::unexpected(wrapped);
  };

  std::optional<store::SnapshotMeta> parent;
  if (!opts.flat) parent = source_parent(snaps, rec, memory_mib);
  // Replacing the very tag the source came from: a link to it would outlive its parent.
  if (parent && parent->tag == tag) parent.reset();
  store::MemoryResolver resolver(snaps, snaps.assembled_dir());
  if (parent && parent->content_pending) {
    // The link names its parent by the parent's content hash (its source was forked from the
    // parent, whose assembly recorded it; settled here in case it did not).
    auto settled = resolver.settle(*parent);
    if (!settled) return fail(settled.error());
    parent = std::move(*settled);
  }

  MigrateRequest mreq;
  mreq.source_dir = cfg.sandboxes_dir() + "/" + opts.sandbox_id;
  mreq.memory_mib = memory_mib;
  if (pid_t pid = json::int_or(rec, "pid", pid_t{0});
      pid > 1 && qemu_owns_dir(pid, mreq.source_dir)) {
    mreq.source_pid = pid;
  }
  mreq.cpus = json::int_or(rec, "cpus", 1);
  mreq.machine = json::string_or(rec, "machine", "microvm");
  mreq.nic = json::bool_or(rec, "nic", false);
  mreq.pit = json::bool_or(rec, "pit", true);
  mreq.ioapic2 = json::bool_or(rec, "ioapic2", true);
  mreq.memory_file = *staging + "/memory";
  mreq.vmstate_file = *staging + "/vmstate";
  mreq.mode = opts.mode;
  mreq.on_resumed = [&](double pause_ms, BranchMode used) {
    claim.set_pause(pause_ms);
    if (opts.on_resumed) opts.on_resumed(tag, pause_ms, used);
  };
  // The memory step, beside the destination's last steps: a link's diff against the parent's
  // memory (compare, write, hash), or a flat tag's memory flushed.
  const std::string full = *staging + "/memory";
  std::optional<store::LinkWrite> link;
  double memory_ms = 0;
  mreq.on_memory_complete = [&]() -> Status {
    auto t_mem = Clock::now();
    if (parent) {
      auto parent_mem = resolver.resolve(*parent);
      if (!parent_mem) return tl::unexpected(parent_mem.error());
      auto written = store::write_link(full, *parent_mem, *staging);
      if (!written) return tl::unexpected(written.error());
      link = std::move(*written);
    } else {
      FORKD_TRY(fsync_path(full));
    }
    memory_ms = ms_since(t_mem);
    return {};
  };
  // A live branch into a link reads the source's stream itself (engine/branch_receive.h);
  // FORKD_BRANCH_RECEIVER=0 keeps the destination QEMU for it too.
  if (parent && opts.mode == BranchMode::kLive && receiver_enabled()) {
    auto parent_mem = resolver.resolve(*parent);
    if (!parent_mem) return fail(parent_mem.error());
    mreq.link_parent_memory = *parent_mem;
    mreq.link_dir = *staging;
  }
  auto t_mig = Clock::now();
  auto mig = migrate_to_template(cfg, mreq);
  if (!mig) return fail(mig.error());
  if (mig->link) {
    link = std::move(*mig->link);
    memory_ms = mig->link_ms;
  }

  BranchResult res;
  res.mode = mig->mode;
  res.pause_ms = mig->pause_ms;
  res.copy_ms = mig->copy_ms;
  res.switchover_ms = mig->switchover_ms;
  res.resume_ms = mig->resume_ms;
  res.resumed_by_qemu = mig->resumed_by_qemu;
  res.gate_ms = mig->gate_ms;
  res.rt_window_ms = mig->rt_window_ms;
  res.migrate_ms = ms_since(t_mig);

  store::SnapshotMeta meta;
  meta.tag = tag;
  meta.image = json::string_or(rec, "image", parent ? parent->image : "");
  meta.created_at = static_cast<int64_t>(std::time(nullptr));
  meta.machine = mreq.machine;
  meta.memory_mib = memory_mib;
  meta.ram_bytes = mig->ram_bytes;
  meta.cpus = mreq.cpus;
  meta.kernel_append = parent ? parent->kernel_append : json::string_or(rec, "kernel_append", "");
  meta.pause_ms = mig->pause_ms;
  meta.network = mreq.nic ? "outbound" : "none";
  meta.pit = mreq.pit;
  meta.ioapic2 = mreq.ioapic2;
  meta.branched_from = opts.sandbox_id;
  if (parent) meta.warmup = parent->warmup;
  meta.warmup.insert(meta.warmup.end(), opts.warmup.begin(), opts.warmup.end());
  meta.files["vmstate"] = {};

  if (!mig->frozen_disk.empty()) {
    auto base = check_tag_base(snaps.root(), mig->disk_base);
    if (!base) return fail(base.error());
    if (auto st = write_tag_disk(mig->frozen_disk, *base, mig->disk_owner, *staging); !st) {
      return fail(st.error());
    }
    meta.has_disk = true;
    meta.files["disk"] = {};
    meta.files["base"] = {};
  }

  res.memory_ms = memory_ms;
  if (link) {
    meta.parent_tag = parent->tag;
    meta.parent_content_hash = parent->content_hash();
    meta.memory_sha256 = link->content_sha256;
    meta.content_pending = link->content_sha256.empty();
    meta.files["memory_diff"] = link->diff;
    meta.files["memory_pages"] = link->pages;
    res.link_bytes = link->bytes_stored;
    // The whole memory a destination wrote is exactly the link's assembled memory: keep it as
    // such, so the first spawn need not assemble it. (Received into a link, there is none.)
    if (!mig->link) {
      if (auto st = resolver.adopt(meta, full); !st) return fail(st.error());
    }
  } else {
    meta.files["memory"] = {};
    struct stat st;
    if (::stat(full.c_str(), &st) == 0) res.link_bytes = static_cast<uint64_t>(st.st_blocks) * 512;
  }
  auto t_files = Clock::now();
  // Hashed here unless written with their hashes (a link's diff and bitmap): the commit takes
  // them all as known.
  for (auto& [role, f] : meta.files) {
    std::string path = *staging + "/" + store::snapshot_file_name(role);
    if (auto st = fsync_path(path); !st) return fail(st.error());
    ::chmod(path.c_str(), store::kTagFileMode);
    if (f.has_checksum()) continue;
    auto entry = store::hash_file_entry(path);
    if (!entry) return fail(entry.error());
    f = *entry;
  }
  res.files_ms = ms_since(t_files);
  auto t_commit = Clock::now();
  if (auto st = write->commit(meta, /*hashes_known=*/true); !st) {
    if (parent && !mig->link) {  // the adopted memory belongs to a tag that never appeared
      std::string adopted = resolver.assembled_path(meta);
      ::unlink(adopted.c_str());
      ::unlink((adopted + ".verified").c_str());
    }
    return fail(st.error());
  }
  res.commit_ms = ms_since(t_commit);
  claim.done();
  auto loaded = snaps.load(tag);
  if (!loaded) return tl::unexpected(loaded.error());
  res.meta = *loaded;
  res.total_ms = ms_since(t0);
  if (!mig->frozen_disk.empty()) fold_source_disk(mreq.source_dir, mig->frozen_disk, res);
  logger("branch")->info(
      "event=branch tag={} source={} mode={} pause_ms={:.1f} switchover_ms={:.1f} "
      "resume_ms={:.1f} total_ms={:.0f} copy_ms={:.0f} gate_ms={:.0f} migrate_ms={:.0f} "
      "memory_ms={:.0f} files_ms={:.0f} commit_ms={:.0f} fold_ms={:.1f} folded={} resumed_by={} "
      "rt_window_ms={:.2f}",
      tag, opts.sandbox_id, branch_mode_name(res.mode), res.pause_ms, res.switchover_ms,
      res.resume_ms, res.total_ms, res.copy_ms, res.gate_ms, res.migrate_ms, res.memory_ms,
      res.files_ms, res.commit_ms, res.fold_ms, res.folded, res.resumed_by_qemu ? "qemu" : "cont",
      res.rt_window_ms);
  return res;
}

Result<BranchResult> snapshot_from(const EngineConfig& cfg, const SnapshotFromOptions& opts) {
  FORKD_TRY(store::SnapshotStore::validate_tag(opts.new_tag));
  store::SnapshotStore snaps(cfg.home);
  if (snaps.exists(opts.new_tag)) {
    return make_error(ErrorCode::kAlreadyExists, "tag " + opts.new_tag + " already exists");
  }
  ForkOptions fo;
  fo.tag = opts.from_tag;
  fo.use_pool = false;  // the exact snapshot point, not a warm member that ran past it
  auto forked = fork_children(cfg, fo);
  if (!forked) return tl::unexpected(forked.error());
  const ForkChild& child = forked->children[0];
  if (child.error) return tl::unexpected(*child.error);
  struct ChildGuard {
    const EngineConfig& cfg;
    std::string id;
    ~ChildGuard() { (void)remove_sandbox(cfg, id); }
  } guard{cfg, child.id};
  if (opts.progress) opts.progress("forked " + child.id + " from " + opts.from_tag);
  pid_t qemu_pid = 0;
  {
    // The warm-up's agent connection is closed again before the branch (see branch.h).
    auto sb = Sandbox::attach(cfg, child.id);
    if (!sb) return tl::unexpected(sb.error());
    FORKD_TRY(run_warmup(**sb, Warmup{opts.exec, opts.eval}, opts.progress));
    qemu_pid = (*sb)->qemu_pid();
  }
  // After the close, which the guest's agent wakes up for too.
  settle_guest(qemu_pid, opts.progress);
  BranchOptions bo;
  bo.sandbox_id = child.id;
  bo.tag = opts.new_tag;
  bo.mode = opts.mode;
  bo.warmup = Warmup{opts.exec, opts.eval}.to_record();
  auto r = branch_sandbox(cfg, bo);
  if (!r) return tl::unexpected(r.error());
  if (opts.progress) opts.progress("branched " + child.id + " into " + opts.new_tag);
  return r;
}

}  // namespace forkd::engine

#include "engine/overlay_template.h"

#include <fcntl.h>
#include <unistd.h>

#include <set>

#include "base/files.h"
#include "base/random.h"
#include "engine/vm_setup.h"
#include "store/snapshot_store.h"

namespace forkd::engine {
namespace {

constexpr const char* kSuffix = ".qcow2";
constexpr size_t kMaxTemplateBytes = 16u << 20;  // an empty overlay's header and tables: ~200 KiB

std::string templates_dir(const EngineConfig& cfg) { return cfg.home + "/cache/overlays"; }

std::string disk_hash(const store::SnapshotMeta& meta) {
  auto it = meta.files.find("disk");
  return it == meta.files.end() ? "" : it->second.sha256;
}

Status copy_template(const std::string& bytes, const std::string& overlay) {
  auto fd = open_file(overlay, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (!fd) return tl::unexpected(fd.error().wrap("disk overlay"));
  if (auto st = write_all(fd->get(), bytes); !st) {
    ::unlink(overlay.c_str());
    return tl::unexpected(st.error().wrap("disk overlay " + overlay));
  }
  return {};
}

}  // namespace

std::string overlay_template_path(const EngineConfig& cfg, const std::string& tag_dir,
                                  const std::string& disk_sha256) {
  return templates_dir(cfg) + "/" + sha256_hex(tag_dir + "\n" + disk_sha256).substr(0, 32) +
         kSuffix;
}

Status create_child_overlay(const EngineConfig& cfg, const store::SnapshotMeta& meta,
                            const std::string& tag_dir, const std::string& overlay) {
  const std::string base = tag_dir + "/disk.qcow2";
  std::string sha = disk_hash(meta);
  if (sha.empty()) return create_overlay(base, "qcow2", overlay);
  std::string tpl = overlay_template_path(cfg, tag_dir, sha);
  if (!path_exists(tpl)) {
    // Concurrent first children each stage their own and rename: the last rename wins, and
    // every copy is the same overlay.
    FORKD_TRY(make_dirs(templates_dir(cfg)));
    std::string staged = tpl + ".tmp-" + random_hex(6);
    if (auto st = create_overlay(base, "qcow2", staged); !st) {
      ::unlink(staged.c_str());
      return st;
    }
    // On disk before its name is: a crash must not leave a truncated template behind it.
    if (auto st = fsync_path(staged); !st) {
      ::unlink(staged.c_str());
      return tl::unexpected(st.error().wrap("disk overlay template"));
    }
    if (auto st = rename_durable(staged, tpl); !st) {
      ::unlink(staged.c_str());
      return tl::unexpected(st.error().wrap("disk overlay template"));
    }
  }
  // gc may remove the template between the check and the read: then this child makes its own.
  auto bytes = read_file(tpl, kMaxTemplateBytes);
  if (!bytes) return create_overlay(base, "qcow2", overlay);
  if (bytes->size() < 512 || bytes->compare(0, 4, "QFI\xfb") != 0) {
    // Not a qcow2 image (damaged by hand, or by a disk): replaced by the next child.
    ::unlink(tpl.c_str());
    return create_overlay(base, "qcow2", overlay);
  }
  return copy_template(*bytes, overlay);
}

std::vector<std::string> sweep_overlay_templates(const EngineConfig& cfg) {
  store::SnapshotStore snaps(cfg.home);
  std::set<std::string> wanted;
  for (const auto& meta : snaps.list()) {
    if (std::string sha = disk_hash(meta); !sha.empty()) {
      std::string p = overlay_template_path(cfg, snaps.dir(meta.tag), sha);
      wanted.insert(p.substr(p.rfind('/') + 1));
    }
  }
  // A staging file (.tmp-) may be a first child's, still being written.
  std::vector<std::string> removed = remove_files_except(templates_dir(cfg), wanted, ".tmp-");
  for (auto& name : removed) name = "cache/overlays/" + name;
  return removed;
}

}  // namespace forkd::engine

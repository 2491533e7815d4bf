#include "store/snapshot_meta.h"

#include "base/files.h"
#include "base/paths.h"

namespace forkd::store {

using Json = nlohmann::json;

std::string snapshot_file_name(const std::string& role) {
  if (role == "disk") return "disk.qcow2";
  if (role == "base") return "base.img";
  if (role == "kernel") return "bzImage";
  if (role == "initrd") return "initramfs.gz";
  if (role == "memory_diff") return "memory.diff";
  if (role == "memory_pages") return "memory.pages";
  return role;  // vmstate, memory
}

Json SnapshotMeta::to_json() const {
  Json files_j = Json::object();
  bool any_xxh3 = false;
  for (const auto& [role, f] : files) {
    if (f.xxh3.empty()) {
      files_j[role] = {{"size", f.size}, {"sha256", f.sha256}};
    } else {
      files_j[role] = {{"size", f.size}, {"xxh3", f.xxh3}};
      any_xxh3 = true;
    }
  }
  // The oldest schema that holds this record, so that an older forkd still reads what it can.
  Json j = {{"schema", any_xxh3 || content_pending ? 2 : 1},
            {"tag", tag},
            {"status", status},
            {"image", image},
            {"created_at", created_at},
            {"parent_tag", parent_tag ? Json(*parent_tag) : Json(nullptr)},
            {"parent_content_hash", parent_content_hash ? Json(*parent_content_hash) : Json()},
            {"machine", machine},
            {"memory_mib", memory_mib},
            {"ram_bytes", guest_ram_bytes()},
            {"cpus", cpus},
            {"kernel_append", kernel_append},
            {"has_disk", has_disk},
            {"has_initrd", has_initrd},
            {"network", network},
            {"pit", pit},
            {"ioapic2", ioapic2},
            {"pause_ms", pause_ms},
            {"warmup", warmup},
            {"memory_sha256", content_hash()},
            {"files", files_j}};
  if (branched_from) j["branched_from"] = *branched_from;
  if (content_pending) j["content_pending"] = true;
  return j;
}

bool SnapshotMeta::same_link_as(const SnapshotMeta& other) const {
  for (const char* role : {"memory_diff", "memory_pages"}) {
    auto a = files.find(role);
    auto b = other.files.find(role);
    if (a == files.end() || b == other.files.end() || a->second.digest() != b->second.digest()) {
      return false;
    }
  }
  return true;
}

std::string SnapshotMeta::content_hash() const {
  if (!memory_sha256.empty()) return memory_sha256;
  auto it = files.find("memory");
  return it == files.end() ? "" : it->second.sha256;
}

namespace {

Error bad(const std::string& what) {
  return Error(ErrorCode::kInvalidArgument, "snapshot.json: " + what);
}

template <typename T>
bool get_field(const Json& j, const char* key, T* out, bool required = true) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return !required;
  if constexpr (std::is_same_v<T, std::string>) {
    if (!it->is_string()) return false;
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) return false;
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!it->is_number()) return false;
  } else if constexpr (std::is_unsigned_v<T>) {
    if (!it->is_number_unsigned()) return false;
  } else {
    if (!it->is_number_integer()) return false;
  }
  *out = it->get<T>();
  return true;
}

}  // namespace

Result<SnapshotMeta> SnapshotMeta::from_json(const Json& j) {
  if (!j.is_object()) return tl::unexpected(bad("not an object"));
  SnapshotMeta m;
  if (!get_field(j, "schema", &m.schema)) return tl::unexpected(bad("missing schema"));
  if (m.schema > kSnapshotSchema) {
    return make_error(ErrorCode::kInvalidArgument,
                      "snapshot.json has schema " + std::to_string(m.schema) +
                          ", newer than this forkd understands (" +
                          std::to_string(kSnapshotSchema) + "); upgrade forkd");
  }
  if (m.schema < 1) return tl::unexpected(bad("bad schema"));
  if (!get_field(j, "tag", &m.tag) || !is_safe_name(m.tag)) return tl::unexpected(bad("bad tag"));
  if (!get_field(j, "status", &m.status) ||
      (m.status != "ready" && m.status != "writing" && m.status != "failed")) {
    return tl::unexpected(bad("bad status"));
  }
  std::string parent, parent_hash, branched;
  if (!get_field(j, "image", &m.image) || !get_field(j, "created_at", &m.created_at) ||
      !get_field(j, "machine", &m.machine) || !get_field(j, "memory_mib", &m.memory_mib) ||
      !get_field(j, "cpus", &m.cpus) || !get_field(j, "kernel_append", &m.kernel_append) ||
      !get_field(j, "has_disk", &m.has_disk) || !get_field(j, "has_initrd", &m.has_initrd) ||
      !get_field(j, "pause_ms", &m.pause_ms, false) ||
      !get_field(j, "parent_tag", &parent, false) ||
      !get_field(j, "parent_content_hash", &parent_hash, false) ||
      !get_field(j, "branched_from", &branched, false) ||
      !get_field(j, "memory_sha256", &m.memory_sha256, false) ||
      !get_field(j, "content_pending", &m.content_pending, false) ||
      !get_field(j, "ram_bytes", &m.ram_bytes, false) ||
      !get_field(j, "network", &m.network, false) || !get_field(j, "pit", &m.pit, false) ||
      !get_field(j, "ioapic2", &m.ioapic2, false)) {
    return tl::unexpected(bad("missing or mistyped field"));
  }
  if (!parent.empty()) m.parent_tag = parent;
  if (!parent_hash.empty()) m.parent_content_hash = parent_hash;
  if (!branched.empty()) m.branched_from = branched;
  if (m.machine != "microvm" && m.machine != "pc") return tl::unexpected(bad("bad machine"));
  if (m.network != "none" && m.network != "outbound") return tl::unexpected(bad("bad network"));
  if (m.memory_mib < 64 || m.memory_mib > 65536 || m.cpus < 1 || m.cpus > 64) {
    return tl::unexpected(bad("memory or cpus out of range"));
  }
  // QEMU takes RAM in 8 KiB steps; a pad beyond 1 MiB is not one forkd writes.
  uint64_t mib_bytes = static_cast<uint64_t>(m.memory_mib) << 20;
  if (m.ram_bytes != 0 &&
      (m.ram_bytes < mib_bytes || m.ram_bytes >= mib_bytes + (1u << 20) || m.ram_bytes % 8192)) {
    return tl::unexpected(bad("ram_bytes " + std::to_string(m.ram_bytes) + " does not fit " +
                              std::to_string(m.memory_mib) + " MiB"));
  }
  if (auto w = j.find("warmup"); w != j.end() && w->is_array()) {
    for (const auto& c : *w) {
      if (c.is_string()) m.warmup.push_back(c.get<std::string>());
    }
  }
  auto f = j.find("files");
  if (f == j.end() || !f->is_object()) return tl::unexpected(bad("missing files"));
  for (const auto& [role, entry] : f->items()) {
    if (role != "vmstate" && role != "memory" && role != "kernel" && role != "initrd" &&
        role != "disk" && role != "base" && role != "memory_diff" && role != "memory_pages") {
      return tl::unexpected(bad("unknown file role " + role));
    }
    FileEntry fe;
    if (!entry.is_object() || !get_field(entry, "size", &fe.size) ||
        !get_field(entry, "sha256", &fe.sha256, false) ||
        !get_field(entry, "xxh3", &fe.xxh3, false) || fe.sha256.empty() == fe.xxh3.empty() ||
        !(fe.sha256.empty() || fe.sha256.size() == 64) ||
        !(fe.xxh3.empty() || is_lower_hex(fe.xxh3, 32)) || (!fe.xxh3.empty() && m.schema < 2)) {
      return tl::unexpected(bad("bad entry for " + role));
    }
    m.files[role] = fe;
  }
  if (!m.files.count("vmstate")) return tl::unexpected(bad("no vmstate file"));
  if (m.is_link()) {
    if (!m.files.count("memory_pages") || !m.parent_tag || !m.parent_content_hash ||
        (m.content_pending ? !m.memory_sha256.empty() || m.schema < 2
                           : !is_lower_hex(m.memory_sha256, 64))) {
      return tl::unexpected(bad("chain link without pages bitmap, parent or content hash"));
    }
  } else if (!m.files.count("memory") || m.content_pending) {
    return tl::unexpected(bad("no memory file, or a pending content hash outside a link"));
  }
  if (m.has_disk && (!m.files.count("disk") || !m.files.count("base"))) {
    return tl::unexpected(bad("disk files missing"));
  }
  if (m.has_initrd && !m.files.count("initrd")) return tl::unexpected(bad("initrd missing"));
  return m;
}

}  // namespace forkd::store

#pragma once
// snapshot.json: the record of one tag. Plain data plus strict (de)serialization; a file from a
// newer schema is refused rather than half-understood.
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/error.h"

namespace forkd::store {

// 2: a file's checksum may be XXH3-128 (FileEntry::xxh3), and a link's content hash may be
// pending (SnapshotMeta::content_pending); records with neither are written as 1.
inline constexpr int kSnapshotSchema = 2;

// A file's size and checksum: SHA-256, or XXH3-128 where only the file's integrity is at stake
// and the hash sits on a critical path (a link's memory.diff, see base/xxh3.h). Exactly one of
// sha256 and xxh3 is set.
struct FileEntry {
  uint64_t size = 0;
  std::string sha256;
  std::string xxh3;

  static FileEntry with_sha256(uint64_t size, std::string hex) {
    FileEntry f;
    f.size = size;
    f.sha256 = std::move(hex);
    return f;
  }
  static FileEntry with_xxh3(uint64_t size, std::string hex) {
    FileEntry f;
    f.size = size;
    f.xxh3 = std::move(hex);
    return f;
  }

  // The checksum with its kind: the SHA-256's hex as it is, or "xxh3:" and the XXH3's hex. Two
  // entries with equal digests and sizes name the same bytes.
  std::string digest() const { return xxh3.empty() ? sha256 : "xxh3:" + xxh3; }
  bool has_checksum() const { return !sha256.empty() || !xxh3.empty(); }
};

struct SnapshotMeta {
  int schema = kSnapshotSchema;
  std::string tag;
  std::string status = "ready";  // ready | writing | failed
  std::string image;
  int64_t created_at = 0;  // unix seconds
  std::optional<std::string> parent_tag;
  std::optional<std::string> parent_content_hash;
  // The VM shape a restore must reproduce exactly.
  std::string machine;  // microvm | pc
  int memory_mib = 0;
  // Exact guest RAM size (memory_mib MiB plus, under TCG, a pad: see vmm::guest_ram_bytes);
  // 0 in records written before it existed, whose RAM is exactly memory_mib MiB.
  uint64_t ram_bytes = 0;
  int cpus = 1;
  std::string kernel_append;
  bool has_disk = false;
  bool has_initrd = false;
  // The guest network its VM was made with: "none" (no NIC) or "outbound" (a NIC on a user-mode
  // network, see vmm::VmConfig::nic). Children have a NIC exactly when the tag does.
  std::string network = "none";
  bool has_nic() const { return network == "outbound"; }
  // Whether the VM has the legacy PIT (vmm::VmConfig::pit); records written before it existed
  // lack the field, and their VMs had one.
  bool pit = true;
  // Whether microvm has its second IO-APIC (vmm::VmConfig::ioapic2); likewise true when absent.
  bool ioapic2 = true;
  double pause_ms = 0;
  // Branches only: the source sandbox id, or "compact:<tag>" for a compacted chain.
  std::optional<std::string> branched_from;
  // SHA-256 of the whole guest memory at the snapshot point (for a base tag, the memory file's
  // hash; for a chain link, the hash of the assembled memory). A link of this tag records it as
  // its parent_content_hash.
  std::string memory_sha256;
  // A link received from a live branch is committed before its content hash: memory_sha256 is
  // then empty until the link's memory is first assembled (MemoryResolver, which hashes those
  // bytes anyway) and records it. Whoever needs the hash sooner settles it the same way
  // (MemoryResolver::settle).
  bool content_pending = false;
  std::vector<std::string> warmup;
  // Files in the tag directory by role: vmstate, memory (a base's whole memory) or memory_diff
  // + memory_pages (a link: the pages that differ from the parent, and their bitmap), kernel,
  // initrd, disk, base.
  std::map<std::string, FileEntry> files;

  nlohmann::json to_json() const;
  // Validates types, the tag, the status and the schema; a newer schema is kInvalidArgument
  // naming both versions.
  static Result<SnapshotMeta> from_json(const nlohmann::json& j);

  bool is_link() const { return files.count("memory_diff") != 0; }
  // Both links, with the same diff and page bitmap (a tag replaced meanwhile is another link).
  bool same_link_as(const SnapshotMeta& other) const;
  uint64_t guest_ram_bytes() const {
    return ram_bytes ? ram_bytes : static_cast<uint64_t>(memory_mib) << 20;
  }
  // memory_sha256, or for records written before it existed the memory file's hash; empty
  // while content_pending.
  std::string content_hash() const;
};

// File names inside a tag directory, by role.
std::string snapshot_file_name(const std::string& role);

}  // namespace forkd::store

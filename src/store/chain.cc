#include "store/chain.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <set>
#include <thread>
#include <utility>

#include "base/dir_lock.h"
#include "base/files.h"
#include "base/hash_behind.h"
#include "base/paths.h"
#include "base/random.h"
#include "store/link_hasher.h"
#include "store/mem_io.h"

namespace forkd::store {

namespace {

constexpr size_t kChunk = 1 << 20;  // bytes per read when assembling, at most per diff write
constexpr auto kAssemblyWait = std::chrono::minutes(10);  // for another process's assembly

// This boot of the kernel ("" when unknown).
std::string current_boot_id() {
  auto id = read_file("/proc/sys/kernel/random/boot_id", 64);
  if (!id) return "";
  std::string s = *id;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

ChainInfo walk_ancestors(const SnapshotStore& store, const SnapshotMeta& meta) {
  ChainInfo info;
  std::set<std::string> seen{meta.tag};
  SnapshotMeta cur = meta;
  while (cur.parent_tag) {
    const std::string& parent = *cur.parent_tag;
    if (seen.count(parent) || info.depth >= kMaxChainDepth) {
      info.warning = "chain metadata has a cycle through '" + parent + "'";
      break;
    }
    seen.insert(parent);
    auto pm = store.load(parent);
    ++info.depth;
    info.ancestors.insert(info.ancestors.begin(), parent);
    if (!pm) {
      info.warning = "parent '" + parent + "' of '" + cur.tag + "' is missing";
      break;
    }
    if (cur.parent_content_hash && pm->content_hash() != *cur.parent_content_hash) {
      info.warning = "parent '" + parent + "' changed since '" + cur.tag + "' was written";
      break;
    }
    cur = std::move(*pm);
  }
  return info;
}

Result<ChainInfo> chain_info(const SnapshotStore& store, const std::string& tag) {
  auto meta = store.load(tag);
  if (!meta) return tl::unexpected(meta.error());
  ChainInfo info = walk_ancestors(store, *meta);
  info.dependents = direct_dependents(store, tag);
  return info;
}

std::vector<std::string> direct_dependents(const SnapshotStore& store, const std::string& tag) {
  std::vector<std::string> out;
  for (const auto& m : store.list()) {
    if (m.parent_tag && *m.parent_tag == tag && m.tag != tag) out.push_back(m.tag);
  }
  return out;
}

std::vector<std::string> all_descendants(const SnapshotStore& store, const std::string& tag) {
  std::vector<SnapshotMeta> metas = store.list();
  std::vector<std::string> order;  // breadth first from tag
  std::set<std::string> seen{tag};
  std::vector<std::string> frontier{tag};
  while (!frontier.empty()) {
    std::vector<std::string> next;
    for (const auto& m : metas) {
      if (!m.parent_tag || seen.count(m.tag)) continue;
      if (std::find(frontier.begin(), frontier.end(), *m.parent_tag) != frontier.end()) {
        seen.insert(m.tag);
        next.push_back(m.tag);
        order.push_back(m.tag);
      }
    }
    frontier = std::move(next);
  }
  std::reverse(order.begin(), order.end());  // deepest first
  return order;
}

Result<LinkWrite> write_link(const std::string& full_path, const std::string& parent_path,
                             const std::string& dir) {
  auto full = open_file(full_path, O_RDONLY);
  if (!full) return tl::unexpected(full.error());
  auto parent = open_file(parent_path, O_RDONLY);
  if (!parent) return tl::unexpected(parent.error());
  auto size = file_size(full->get(), full_path);
  if (!size) return tl::unexpected(size.error());
  auto psize = file_size(parent->get(), parent_path);
  if (!psize) return tl::unexpected(psize.error());
  if (*size != *psize || *size % kPageSize != 0 || *size == 0) {
    return make_error(ErrorCode::kInvalidArgument, "memory of " + std::to_string(*size) +
                                                       " bytes cannot be a link of a " +
                                                       std::to_string(*psize) + "-byte parent");
  }
  // Both memories are read in place (no copy into buffers): the staging file this branch
  // wrote and the parent's tag or assembled file, which are never changed in place.
  auto full_map = ReadMapping::map(full->get(), *size, full_path);
  if (!full_map) return tl::unexpected(full_map.error());
  auto parent_map = ReadMapping::map(parent->get(), *size, parent_path);
  if (!parent_map) return tl::unexpected(parent_map.error());
  // Holes (zero pages never written: a tag pulled from a registry keeps its zero pages so) are
  // not read through the mappings, which would give each a page of memory.
  MemView mem{full_map->data(), hole_pages(full->get(), *size)};
  MemView old{parent_map->data(), hole_pages(parent->get(), *size)};
  std::string diff_path = dir + "/" + snapshot_file_name("memory_diff");
  std::string pages_path = dir + "/" + snapshot_file_name("memory_pages");
  // The changed pages go straight to the disk: through the page cache each would take a new
  // page of memory, which on hosts that hand free memory back to their hypervisor costs a fault
  // there per page (~2.5 s per GiB measured here); nothing reads the diff soon after.
  auto diff = open_file(diff_path, O_RDWR | O_CREAT | O_TRUNC | O_DIRECT, 0600);
  if (!diff) diff = open_file(diff_path, O_RDWR | O_CREAT | O_TRUNC, 0600);  // no O_DIRECT
  if (!diff) return tl::unexpected(diff.error());
  // Sparse: only changed pages get blocks.
  if (::ftruncate(diff->get(), static_cast<off_t>(*size)) != 0) {
    return errno_error(errno, "truncate " + diff_path);
  }
  std::string bitmap((*size / kPageSize + 7) / 8, '\0');
  LinkWrite out;
  LinkHasher hasher(mem, old, *size);  // both hashes, on a thread (or two) of its own, meanwhile
  const uint64_t pages = *size / kPageSize;
  auto changed = [&](uint64_t p) { return LinkHasher::page_changed(mem, old, p); };
  auto mark = [&](uint64_t p) {
    bitmap[p / 8] = static_cast<char>(bitmap[p / 8] | (1 << (p % 8)));
    ++out.pages_changed;
  };
  // Each run of changed pages in one write of at most kChunk bytes. A changed page that is a
  // hole in the new memory (now zero) needs no write: the diff's own hole reads as zeros.
  for (uint64_t i = 0; i < pages;) {
    if (!changed(i)) {
      ++i;
      continue;
    }
    if (mem.is_hole(i)) {
      mark(i++);
      continue;
    }
    uint64_t j = i + 1;
    while (j < pages && (j - i) * kPageSize < kChunk && !mem.is_hole(j) && changed(j)) ++j;
    for (uint64_t p = i; p < j; ++p) mark(p);
    FORKD_TRY(pwrite_full(diff->get(), mem.data + i * kPageSize, (j - i) * kPageSize,
                          static_cast<off_t>(i * kPageSize), diff_path));
    i = j;
  }
  auto hashes = hasher.finish();
  FORKD_TRY(fsync_fd(diff->get(), diff_path));
  FORKD_TRY(finish_link(diff->get(), *size, hashes.content, hashes.diff, bitmap, pages_path, out));
  return out;
}

Status finish_link(int diff_fd, uint64_t size, const std::string& content_sha256,
                   const std::string& diff_xxh3, const std::string& bitmap,
                   const std::string& pages_path, LinkWrite& out) {
  struct stat st;
  if (::fstat(diff_fd, &st) == 0) out.bytes_stored = static_cast<uint64_t>(st.st_blocks) * 512;
  out.content_sha256 = content_sha256;
  out.diff = FileEntry::with_xxh3(size, diff_xxh3);
  out.pages = FileEntry::with_sha256(bitmap.size(), sha256_hex(bitmap));
  auto pages_file = open_file(pages_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (!pages_file) return tl::unexpected(pages_file.error());
  FORKD_TRY(write_all(pages_file->get(), bitmap));
  return fsync_fd(pages_file->get(), pages_path);
}

std::string MemoryResolver::assembled_path(const SnapshotMeta& meta) const {
  if (meta.content_pending) return cache_dir_ + "/" + meta.tag + "-pending.mem";
  return cache_dir_ + "/" + meta.tag + "-" + meta.content_hash().substr(0, 16) + ".mem";
}

bool MemoryResolver::stamp_ok(const std::string& path, const std::string& sha) const {
  auto text = read_file(path + ".verified", 4096);
  if (!text) return false;
  const std::string durable = sha + " " + file_identity(path);
  if (*text == durable) return true;
  // Stamped before its data reached the disk: good while this kernel runs (the page cache is
  // what every reader sees); after a crash and a reboot it is verified again.
  const std::string boot = current_boot_id();
  return !boot.empty() && *text == durable + " boot=" + boot;
}

Status MemoryResolver::stamp(const std::string& path, const std::string& sha,
                             const std::string& boot_id) const {
  std::string id = file_identity(path);
  if (id.empty()) return make_error(ErrorCode::kNotFound, "stamp: " + path + " is missing");
  return write_file_atomic(path + ".verified",
                           sha + " " + id + (boot_id.empty() ? "" : " boot=" + boot_id));
}

Status MemoryResolver::adopt(const SnapshotMeta& meta, const std::string& full_path) const {
  FORKD_TRY(make_dirs(cache_dir_));
  std::string dst = assembled_path(meta);
  ::chmod(full_path.c_str(), kTagFileMode);
  // The stamp vouches for the content by the file's identity alone. The file is a cache (the
  // link can always be assembled again), so its 1 GiB need not be flushed on a branch's path:
  // a stamp bound to this boot says so, and without a boot id it is flushed first.
  const std::string boot = current_boot_id();
  if (boot.empty()) FORKD_TRY(fsync_path(full_path));
  FORKD_TRY(rename_durable(full_path, dst));
  return stamp(dst, meta.content_hash(), boot);
}

void MemoryResolver::forget(const std::string& tag) const {
  auto names = list_dir_names(cache_dir_);
  for (const auto& name : names) {
    // <tag>-<16 hex>.mem[.verified]: the tag is everything before the last dash.
    auto dash = name.rfind('-');
    if (dash != std::string::npos && name.substr(0, dash) == tag) {
      ::unlink((cache_dir_ + "/" + name).c_str());
    }
  }
}

Result<std::string> MemoryResolver::resolve(const SnapshotMeta& meta) const {
  return resolve_depth(meta, 0);
}

Result<SnapshotMeta> MemoryResolver::settle(const SnapshotMeta& meta) const {
  return settle_depth(meta, 0);
}

Result<SnapshotMeta> MemoryResolver::settle_depth(const SnapshotMeta& meta, int depth) const {
  if (!meta.content_pending) return meta;
  FORKD_TRY(store_.verify(meta));
  auto path = resolve_depth(meta, depth);
  if (!path) return tl::unexpected(path.error());
  if (auto now = settled_since(meta)) return *now;
  return make_error(ErrorCode::kInternal,
                    "tag '" + meta.tag + "': its content hash was not recorded");
}

std::optional<SnapshotMeta> MemoryResolver::settled_since(const SnapshotMeta& meta) const {
  auto now = store_.load(meta.tag);
  if (!now || now->content_pending || !now->same_link_as(meta)) return std::nullopt;
  return *now;
}

Result<std::string> MemoryResolver::resolve_depth(const SnapshotMeta& meta, int depth) const {
  std::string tag_dir = store_.dir(meta.tag);
  if (!meta.is_link()) return tag_dir + "/" + snapshot_file_name("memory");
  if (meta.content_pending) {
    if (auto now = settled_since(meta)) return resolve_depth(*now, depth);
  }
  std::string path = assembled_path(meta);
  // A pending link's assembly is found through its record, once that holds the hash.
  auto done = [&]() -> std::optional<std::string> {
    if (!meta.content_pending) {
      if (stamp_ok(path, meta.content_hash())) return path;
      return std::nullopt;
    }
    auto now = settled_since(meta);
    if (!now) return std::nullopt;
    std::string settled = assembled_path(*now);
    if (stamp_ok(settled, now->content_hash())) return settled;
    return std::nullopt;
  };
  if (auto p = done()) return *p;

  if (depth >= kMaxChainDepth) {
    return make_error(ErrorCode::kInvalidArgument, "chain of '" + meta.tag + "' is deeper than " +
                                                       std::to_string(kMaxChainDepth) +
                                                       " links (a cycle?)");
  }
  const std::string& parent_tag = *meta.parent_tag;
  if (parent_tag == meta.tag) {
    return make_error(ErrorCode::kInvalidArgument, "tag '" + meta.tag + "' is its own parent");
  }
  auto parent = store_.load(parent_tag);
  if (!parent) {
    return make_error(
        ErrorCode::kFailedPrecondition,
        "tag '" + meta.tag + "' cannot be assembled: its parent '" + parent_tag + "' is missing");
  }
  parent = settle_depth(*parent, depth + 1);
  if (!parent) return tl::unexpected(parent.error());
  if (parent->content_hash() != *meta.parent_content_hash) {
    return make_error(ErrorCode::kFailedPrecondition,
                      "tag '" + meta.tag + "' cannot be assembled: its parent '" + parent_tag +
                          "' changed since the link was written");
  }
  FORKD_TRY(store_.verify(*parent));
  auto parent_path = resolve_depth(*parent, depth + 1);
  if (!parent_path) return tl::unexpected(parent_path.error());

  FORKD_TRY(make_dirs(cache_dir_, 0710));
  // One assembler of a link at a time (a link a live branch received has no adopted memory, so
  // concurrent first spawns of it are common): the others wait for its stamp. A holder that dies
  // releases the lock, and the next one assembles.
  FileLock lock;
  for (auto deadline = std::chrono::steady_clock::now() + kAssemblyWait;;) {
    auto got = FileLock::try_lock(path + ".lock", "assembly of tag '" + meta.tag + "'");
    if (got) {
      lock = std::move(*got);
      break;
    }
    if (got.error().code() != ErrorCode::kAlreadyExists) return tl::unexpected(got.error());
    if (std::chrono::steady_clock::now() > deadline) {
      return make_error(ErrorCode::kTimeout,
                        "tag '" + meta.tag +
                            "': another process has been assembling its memory for " +
                            std::to_string(kAssemblyWait.count()) + " minutes");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (auto p = done()) return *p;
  }
  if (auto p = done()) return *p;  // done while the lock was taken
  // Written unnamed (O_TMPFILE) and given a name only once complete and verified, so a process
  // killed mid-way leaves nothing behind.
  std::string tmp = path + ".tmp-" + random_hex(8);
  struct TmpGuard {
    std::string p;
    ~TmpGuard() { ::unlink(p.c_str()); }
  } guard{tmp};
  auto src = open_file(*parent_path, O_RDONLY);
  if (!src) return tl::unexpected(src.error());
  bool unnamed = true;
  auto out = open_file(cache_dir_, O_RDWR | O_TMPFILE, 0600);
  if (!out) {  // a filesystem without O_TMPFILE: a named temporary, removed on failure
    unnamed = false;
    out = open_file(tmp, O_RDWR | O_CREAT | O_EXCL, 0600);
  }
  if (!out) return tl::unexpected(out.error());
  auto size = file_size(src->get(), *parent_path);
  if (!size) return tl::unexpected(size.error());
  auto bitmap = read_file(tag_dir + "/" + snapshot_file_name("memory_pages"), 64u << 20);
  if (!bitmap) return tl::unexpected(bitmap.error());
  if (bitmap->size() != (*size / kPageSize + 7) / 8) {
    return make_error(ErrorCode::kChecksumMismatch,
                      "tag '" + meta.tag + "': page bitmap does not fit the parent's memory");
  }
  std::string diff_path = tag_dir + "/" + snapshot_file_name("memory_diff");
  auto diff = open_file(diff_path, O_RDONLY);
  if (!diff) return tl::unexpected(diff.error());
  if (::ftruncate(out->get(), static_cast<off_t>(*size)) != 0) {
    return errno_error(errno, "size assembled memory " + tmp);
  }
  // Chunk by chunk: the parent's bytes (a hole in it is not read), the link's runs of changed
  // pages over them (one read per run), written unless all zero (the file stays sparse there),
  // and hashed on a thread behind (the hash, ~0.7 s per GiB here, overlaps the reads and
  // writes of the chunks after it).
  const std::vector<uint8_t> parent_holes = hole_pages(src->get(), *size);
  auto changed = [&](uint64_t page) { return (((*bitmap)[page / 8] >> (page % 8)) & 1) != 0; };
  HashBehind sha(4, kChunk);
  for (uint64_t off = 0; off < *size; off += kChunk) {
    char* const buf = sha.take();
    size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, *size - off));
    const uint64_t first = off / kPageSize, pages = n / kPageSize;
    bool all_hole = !parent_holes.empty();
    for (uint64_t p = first; p < first + pages && all_hole; ++p) all_hole = parent_holes[p] != 0;
    if (all_hole) {
      std::memset(buf, 0, n);
    } else {
      FORKD_TRY(pread_full(src->get(), buf, n, static_cast<off_t>(off), *parent_path));
    }
    for (uint64_t p = first; p < first + pages;) {
      if (!changed(p)) {
        ++p;
        continue;
      }
      uint64_t q = p + 1;
      while (q < first + pages && changed(q)) ++q;
      FORKD_TRY(pread_full(diff->get(), buf + (p - first) * kPageSize, (q - p) * kPageSize,
                           static_cast<off_t>(p * kPageSize), diff_path));
      p = q;
    }
    if (!all_zero(buf, n)) FORKD_TRY(pwrite_full(out->get(), buf, n, static_cast<off_t>(off), tmp));
    sha.give(buf, n);
  }
  const std::string content = sha.finish();
  if (meta.content_pending) {
    // The hash is this memory's: the file is named by it, and it goes into the record (after
    // the file is in place, so that whoever reads the record finds it).
    SnapshotMeta settled = meta;
    settled.content_pending = false;
    settled.memory_sha256 = content;
    path = assembled_path(settled);
  } else if (content != meta.content_hash()) {
    return make_error(ErrorCode::kChecksumMismatch,
                      "tag '" + meta.tag + "': assembled memory does not match its content hash");
  }
  // A cache (it can always be assembled again): like an adopted memory, it is not flushed when
  // its stamp names this boot; after a crash and a reboot it is verified again.
  const std::string boot = current_boot_id();
  if (boot.empty()) FORKD_TRY(fsync_fd(out->get(), tmp));
  ::fchmod(out->get(), kTagFileMode);
  if (unnamed) {
    std::string fd_path = "/proc/self/fd/" + std::to_string(out->get());
    if (::linkat(AT_FDCWD, fd_path.c_str(), AT_FDCWD, tmp.c_str(), AT_SYMLINK_FOLLOW) != 0) {
      return errno_error(errno, "link assembled memory " + tmp);
    }
  }
  FORKD_TRY(rename_durable(tmp, path));
  guard.p.clear();
  FORKD_TRY(stamp(path, content, boot));
  if (meta.content_pending) FORKD_TRY(store_.record_content_hash(meta, content));
  return path;
}

}  // namespace forkd::store

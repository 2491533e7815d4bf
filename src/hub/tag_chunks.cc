// The sending half: a tag's chain as a manifest and a stream of chunk blobs.
#include "hub/tag_chunks.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <map>
#include <memory>
#include <thread>

#include "base/files.h"
#include "base/paths.h"
#include "hub/chunk_codec.h"
#include "hub/object_pool.h"
#include "hub/ordered_window.h"
#include "store/chain.h"

namespace forkd::hub {

std::vector<ChunkPos> chunk_plan(const PackManifest& m) {
  std::vector<ChunkPos> plan;
  for (size_t t = 0; t < m.tags.size(); t++) {
    for (const auto& role : m.tags[t].data_roles()) {
      uint64_t size = m.tags[t].meta.files.at(role).size;
      uint64_t n = PackManifest::chunk_count(size);
      for (uint64_t i = 0; i < n; i++) {
        uint64_t off = i * kChunkBytes;
        plan.push_back({t, role, i, off, std::min(kChunkBytes, size - off)});
      }
    }
  }
  return plan;
}

bool same_content(const store::SnapshotMeta& a, const store::SnapshotMeta& b) {
  if (a.content_hash() != b.content_hash() || a.files.size() != b.files.size()) return false;
  for (const auto& [role, f] : a.files) {
    auto it = b.files.find(role);
    if (it == b.files.end() || it->second.digest() != f.digest() || it->second.size != f.size) {
      return false;
    }
  }
  return true;
}

Result<std::vector<std::string>> chain_of(const store::SnapshotStore& store,
                                          const std::string& tag) {
  auto top = store.load(tag);
  if (!top) return tl::unexpected(top.error());
  store::ChainInfo chain = store::walk_ancestors(store, *top);
  if (!chain.warning.empty()) {
    return make_error(ErrorCode::kFailedPrecondition, "tag " + tag + ": " + chain.warning);
  }
  std::vector<std::string> names = chain.ancestors;
  names.push_back(tag);
  return names;
}

Result<PackManifest> build_manifest(const store::SnapshotStore& store, const std::string& tag,
                                    const std::string& since, bool without_image) {
  auto chain_names = chain_of(store, tag);
  if (!chain_names) return tl::unexpected(chain_names.error());
  const std::vector<std::string>& names = *chain_names;
  PackManifest m;
  m.created_at = static_cast<int64_t>(std::time(nullptr));
  m.created_by = "forkd " + std::string(forkd_version());
  // Files already described (sha256 + size -> where), so an equal one travels as a reference. An
  // XXH3 (a link's diff) does not name a file well enough for that.
  std::map<std::pair<std::string, uint64_t>, FileRef> seen;
  auto remember = [&seen](const store::SnapshotMeta& meta) {
    for (const auto& [role, f] : meta.files)
      if (!f.sha256.empty()) seen.try_emplace({f.sha256, f.size}, FileRef{meta.tag, role});
  };
  // A pack names every link's content hash: one still pending is assembled (and so hashed) now.
  store::MemoryResolver resolver(store, store.assembled_dir());
  size_t start = 0;
  if (!since.empty()) {
    auto it = std::find(names.begin(), names.end(), since);
    if (it == names.end() || *it == tag) {
      return make_error(
          ErrorCode::kInvalidArgument, "--since " + since + " is not an ancestor of " + tag +
                                           " (its chain: " +
                                           [&] {
                                             std::string s;
                                             for (const auto& a : names)
                                               s += (s.empty() ? "" : " -> ") + a;
                                             return s;
                                           }() +
                                           ")");
    }
    start = static_cast<size_t>(it - names.begin()) + 1;
    auto base = store.load(since);
    if (base) base = resolver.settle(*base);
    if (!base) return tl::unexpected(base.error());
    m.requires_tags.push_back({since, base->content_hash()});
    remember(*base);
  }
  for (size_t i = start; i < names.size(); i++) {
    auto meta = store.load(names[i]);
    if (!meta) return tl::unexpected(meta.error());
    if (auto st = store.verify(*meta); !st) return tl::unexpected(st.error());
    meta = resolver.settle(*meta);
    if (!meta) return tl::unexpected(meta.error());
    PackTag pt;
    pt.meta = *meta;
    for (const auto& [role, f] : meta->files) {
      if (auto s = seen.find({f.sha256, f.size}); s != seen.end()) {
        pt.refs[role] = s->second;
      } else if (without_image && (role == "base" || role == "kernel" || role == "initrd")) {
        pt.refs[role] = FileRef{"", role};
      }
    }
    remember(*meta);
    m.tags.push_back(std::move(pt));
  }
  return m;
}

namespace {

struct Encoded {
  std::string blob;
  std::string sha256;
  uint64_t zero_pages = 0;
};

Status pread_exact(int fd, char* buf, uint64_t len, uint64_t off, const std::string& what) {
  uint64_t got = 0;
  while (got < len) {
    ssize_t n = ::pread(fd, buf + got, len - got, static_cast<off_t>(off + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(errno, "read " + what);
    if (n == 0) return make_error(ErrorCode::kChecksumMismatch, what + " is shorter than recorded");
    got += static_cast<uint64_t>(n);
  }
  return {};
}

}  // namespace

Result<EncodeStats> encode_chunks(const store::SnapshotStore& store, const PackManifest& m,
                                  int threads, const BlobSink& sink, const ByteProgress& progress) {
  std::vector<ChunkPos> plan = chunk_plan(m);
  // Open every data file first; jobs read them with pread (co-owners: this function's frame,
  // which outlives the window and so every job).
  std::map<std::pair<size_t, std::string>, UniqueFd> fds;
  for (size_t t = 0; t < m.tags.size(); t++) {
    for (const auto& role : m.tags[t].data_roles()) {
      std::string path = store.dir(m.tags[t].meta.tag) + "/" + store::snapshot_file_name(role);
      auto fd = open_file(path, O_RDONLY);
      if (!fd) return tl::unexpected(fd.error());
      fds[{t, role}] = std::move(*fd);
    }
  }
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  EncodeStats stats;
  uint64_t total = m.data_bytes(), done = 0;
  // Declared before the window: leases of jobs still running go back on its destruction.
  ObjectPool<ChunkBuffer> buffers;
  ObjectPool<ChunkCodec> codecs;
  size_t next = 0;
  OrderedWindow<Encoded> window(static_cast<size_t>(threads) + 1, [&](Encoded& e) -> Status {
    const ChunkPos& pos = plan[next++];
    stats.chunks++;
    stats.zero_pages += e.zero_pages;
    stats.blob_bytes += e.blob.size();
    FORKD_TRY(sink(pos, e.blob, e.sha256));
    done += pos.length;
    if (progress) progress(done, total);
    return {};
  });
  for (const auto& pos : plan) {
    int fd = fds.at({pos.tag_index, pos.role}).get();
    std::string what = m.tags[pos.tag_index].meta.tag + " " + pos.role;
    auto job = [fd, pos, what, &buffers, &codecs]() -> Result<Encoded> {
      auto buf = buffers.get();
      FORKD_TRY(pread_exact(fd, buf->data(), pos.length, pos.offset, what));
      Encoded e;
      FORKD_TRY(
          codecs.get()->encode(std::string_view(buf->data(), pos.length), &e.blob, &e.zero_pages));
      e.sha256 = sha256_hex(e.blob);
      return e;
    };
    FORKD_TRY(window.push(std::move(job)));
  }
  FORKD_TRY(window.drain());
  return stats;
}

}  // namespace forkd::hub

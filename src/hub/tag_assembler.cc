// The receiving half: chunk blobs in, verified tags out (see tag_chunks.h).
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <optional>
#include <thread>

#include "base/files.h"
#include "base/json_get.h"
#include "base/log.h"
#include "hub/chunk_codec.h"
#include "hub/object_pool.h"
#include "hub/ordered_window.h"
#include "hub/tag_chunks.h"
#include "store/file_digest.h"
#include "store/tag_write.h"

namespace forkd::hub {

namespace {

struct Decoded {
  ChunkPos pos;
  ObjectPool<DecodedChunk>::Lease chunk;
};

// Writes the stored pages of a decoded chunk at their offsets, one pwrite per run of stored
// pages; zero pages stay holes.
Status write_pages(int fd, const ChunkPos& pos, const DecodedChunk& c) {
  size_t pages = c.present.size();
  uint64_t data_at = 0;
  for (size_t i = 0; i < pages;) {
    if (!c.present[i]) {
      i++;
      continue;
    }
    size_t j = i;
    uint64_t run = 0;
    while (j < pages && c.present[j]) run += c.page_len(j++);
    // (c.data holds the stored pages back to back: data_at is where this run starts.)
    uint64_t written = 0;
    while (written < run) {
      ssize_t n = ::pwrite(fd, c.data.data() + data_at + written, run - written,
                           static_cast<off_t>(pos.offset + c.page_offset(i) + written));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno_error(errno, "write " + pos.role);
      written += static_cast<uint64_t>(n);
    }
    data_at += run;
    i = j;
  }
  return {};
}

// A file of an image of this host ($FORKD_HOME/images/*/, whose image.json records checksums)
// with f's SHA-256 and size; "" when none (or when f's checksum is not a SHA-256).
std::string image_file(const store::SnapshotStore& st, const store::FileEntry& f) {
  if (f.sha256.empty()) return "";
  std::string images = std::filesystem::path(st.root()).parent_path().string() + "/images";
  for (const auto& name : list_dir_names(images)) {
    auto text = read_file(images + "/" + name + "/image.json", 1u << 20);
    if (!text) continue;
    auto j = json::parse_untrusted(*text);
    const auto* sums = json::member(j, "checksums");
    if (!sums || !sums->is_object()) continue;
    for (const auto& [file, sha] : sums->items()) {
      if (!sha.is_string() || sha.get<std::string>() != f.sha256 ||
          file.find('/') != std::string::npos) {
        continue;
      }
      std::string path = images + "/" + name + "/" + file;
      struct stat s;
      if (::stat(path.c_str(), &s) == 0 && static_cast<uint64_t>(s.st_size) == f.size) return path;
    }
  }
  return "";
}

}  // namespace

struct TagAssembler::Impl {
  const store::SnapshotStore* store = nullptr;
  PackManifest m;
  std::vector<ChunkPos> plan;
  size_t next = 0;    // next chunk add_chunk expects
  size_t hashed = 0;  // next chunk the in-order sink expects
  int threads = 1;
  ByteProgress progress;
  uint64_t done = 0, total = 0;
  std::vector<std::optional<store::TagWrite>> writes;  // per tag; empty when already present
  // Data files this host already holds (same sha256 and size, in a verified tag): linked at
  // finish instead of written; their chunks are not needed.
  std::map<std::pair<size_t, std::string>, std::string> local_src;
  bool needs(const ChunkPos& pos) const {
    return writes[pos.tag_index] && !local_src.count({pos.tag_index, pos.role});
  }
  std::map<std::pair<size_t, std::string>, UniqueFd> fds;
  std::map<std::pair<size_t, std::string>, std::unique_ptr<store::EntryHasher>> hashers;
  // Before the window: leases held by its results go back when it is destroyed.
  ObjectPool<DecodedChunk> chunks;
  ObjectPool<ChunkCodec> codecs;
  std::unique_ptr<OrderedWindow<Decoded>> window;
  std::string zero_page = std::string(kChunkPage, '\0');

  std::string file_path(size_t t, const std::string& role) const {
    return writes[t]->staging() + "/" + store::snapshot_file_name(role);
  }
  Status sink(Decoded& d);
  Status find_local_files(const store::SnapshotStore& st, const PackManifest& pm);
  Status open_target(size_t t, const std::string& role);
  Status link_ref(size_t t, const std::string& role, const FileRef& ref);
  Status link_local(size_t t, const std::string& role, const std::string& src);
};

Status TagAssembler::Impl::find_local_files(const store::SnapshotStore& st,
                                            const PackManifest& pm) {
  std::map<std::pair<std::string, uint64_t>, std::pair<std::string, std::string>> have;
  for (const auto& meta : st.list()) {
    for (const auto& [role, f] : meta.files) {
      if (!f.sha256.empty()) have.try_emplace({f.sha256, f.size}, meta.tag, role);
    }
  }
  std::map<std::string, bool> verified;  // tag -> its files match their record
  // Only a SHA-256 names a file well enough to take another for it: an XXH3 (a link's diff) is
  // no defence against a pack made to collide with a file of this host.
  auto local = [&](const store::FileEntry& f) -> std::string {
    if (f.sha256.empty()) return "";
    auto it = have.find({f.sha256, f.size});
    if (it == have.end()) return image_file(st, f);
    const auto& [tag, local_role] = it->second;
    if (!verified.count(tag)) {
      auto lm = st.load(tag);
      verified[tag] = lm && st.verify(*lm).has_value();
    }
    return verified[tag] ? st.dir(tag) + "/" + store::snapshot_file_name(local_role) : "";
  };
  for (size_t t = 0; t < pm.tags.size(); t++) {
    if (!writes[t]) continue;
    for (const auto& [role, f] : pm.tags[t].meta.files) {
      auto ref = pm.tags[t].refs.find(role);
      bool external = ref != pm.tags[t].refs.end() && ref->second.external();
      if (ref != pm.tags[t].refs.end() && !external) continue;  // linked from its tag
      if (!external && f.size < kChunkBytes) continue;          // small: not worth a lookup
      std::string path = local(f);
      if (!path.empty()) {
        local_src[{t, role}] = path;
      } else if (external) {
        return make_error(ErrorCode::kFailedPrecondition,
                          "tag " + pm.tags[t].meta.tag + ": the pack leaves out its " + role +
                              " (made --without-image), and this host has no file with its "
                              "sha256 " +
                              f.sha256.substr(0, 16) +
                              "...: build or pull that image here first, or use a full pack");
      }
    }
  }
  return {};
}

Status TagAssembler::Impl::open_target(size_t t, const std::string& role) {
  std::string path = file_path(t, role);
  auto fd = open_file(path, O_RDWR | O_CREAT | O_EXCL);
  if (!fd) return tl::unexpected(fd.error());
  uint64_t size = m.tags[t].meta.files.at(role).size;
  if (::ftruncate(fd->get(), static_cast<off_t>(size)) != 0) {
    return errno_error(errno, "size " + path);
  }
  fds[{t, role}] = std::move(*fd);
  hashers[{t, role}] = std::make_unique<store::EntryHasher>(m.tags[t].meta.files.at(role));
  return {};
}

// In chunk order: feeds the file's hash (zero pages included) and checks it after the file's
// last chunk.
Status TagAssembler::Impl::sink(Decoded& d) {
  const ChunkPos& pos = d.pos;
  auto& h = hashers.at({pos.tag_index, pos.role});
  uint64_t at = 0;
  for (size_t i = 0; i < d.chunk->present.size(); i++) {
    uint64_t len = d.chunk->page_len(i);
    if (d.chunk->present[i]) {
      h->update(d.chunk->data.data() + at, len);
      at += len;
    } else {
      h->update(zero_page.data(), len);
    }
  }
  const auto& meta = m.tags[pos.tag_index].meta;
  const auto& f = meta.files.at(pos.role);
  if (pos.index + 1 == PackManifest::chunk_count(f.size)) {
    std::string got = h->digest();
    if (got != f.digest()) {
      return make_error(ErrorCode::kChecksumMismatch,
                        "tag " + meta.tag + ": " + pos.role + " does not match its checksum (got " +
                            got + ", the manifest says " + f.digest() + ")");
    }
  }
  done += pos.length;
  if (progress) progress(done, total);
  return {};
}

TagAssembler::TagAssembler(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TagAssembler::~TagAssembler() {
  if (impl_) impl_->window.reset();  // jobs finish before their files close
}

const PackManifest& TagAssembler::manifest() const { return impl_->m; }
const std::vector<ChunkPos>& TagAssembler::plan() const { return impl_->plan; }

Result<std::unique_ptr<TagAssembler>> TagAssembler::begin(const store::SnapshotStore& store,
                                                          PackManifest m,
                                                          const std::string& new_tag, int threads,
                                                          ByteProgress progress) {
  if (!new_tag.empty()) {
    FORKD_TRY(store::SnapshotStore::validate_tag(new_tag));
    for (size_t i = 0; i + 1 < m.tags.size(); i++) {
      if (m.tags[i].meta.tag == new_tag) {
        return make_error(ErrorCode::kInvalidArgument,
                          "--tag " + new_tag + " is the name of a tag in the pack's chain");
      }
    }
    m.tags.back().meta.tag = new_tag;
  }
  for (const auto& req : m.requires_tags) {
    auto local = store.load(req.tag);
    if (!local || local->content_hash() != req.content_hash) {
      return make_error(ErrorCode::kFailedPrecondition,
                        "the pack continues a chain from tag " + req.tag + ", which this host " +
                            (local ? "has with other content" : "lacks") + ": unpack a pack of " +
                            req.tag + " first, or pack without --since");
    }
    FORKD_TRY(store.verify(*local));
  }
  auto impl = std::make_unique<Impl>();
  impl->store = &store;
  impl->writes.resize(m.tags.size());
  for (size_t t = 0; t < m.tags.size(); t++) {
    const auto& meta = m.tags[t].meta;
    bool last = t + 1 == m.tags.size();
    if (store.exists(meta.tag)) {
      auto local = store.load(meta.tag);
      if (!last && local && same_content(*local, meta)) {
        FORKD_TRY(store.verify(*local));
        continue;  // this host has it already
      }
      return make_error(ErrorCode::kAlreadyExists,
                        last ? "tag " + meta.tag + " already exists here; unpack with --tag NEW"
                             : "tag " + meta.tag +
                                   " (in the pack's chain) exists here with other "
                                   "content; remove it or unpack elsewhere");
    }
    auto w = store::TagWrite::begin(store, meta.tag, false);
    if (!w) return tl::unexpected(w.error());
    impl->writes[t].emplace(std::move(*w));
  }
  FORKD_TRY(impl->find_local_files(store, m));
  // Room for the data written (holes may make it less; files found here are linked).
  uint64_t need = 0;
  for (size_t t = 0; t < m.tags.size(); t++) {
    if (!impl->writes[t]) continue;
    for (const auto& role : m.tags[t].data_roles()) {
      if (!impl->local_src.count({t, role})) need += m.tags[t].meta.files.at(role).size;
    }
  }
  struct statvfs vfs;
  if (::statvfs(store.root().c_str(), &vfs) == 0 &&
      static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize < need) {
    return make_error(ErrorCode::kNoSpace, "unpack needs " + std::to_string(need >> 20) +
                                               " MiB free under " + store.root());
  }
  impl->plan = chunk_plan(m);
  impl->total = m.data_bytes();
  impl->m = std::move(m);
  impl->threads =
      threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  impl->progress = std::move(progress);
  Impl* raw = impl.get();
  impl->window = std::make_unique<OrderedWindow<Decoded>>(
      static_cast<size_t>(impl->threads) + 1, [raw](Decoded& d) { return raw->sink(d); });
  return std::unique_ptr<TagAssembler>(new TagAssembler(std::move(impl)));
}

bool TagAssembler::next_needed() const {
  return impl_->next < impl_->plan.size() && impl_->needs(impl_->plan[impl_->next]);
}

Status TagAssembler::skip_chunk() {
  Impl& s = *impl_;
  if (s.next >= s.plan.size() || s.needs(s.plan[s.next])) {
    return make_error(ErrorCode::kInternal, "skipped a chunk that is needed");
  }
  s.done += s.plan[s.next++].length;
  if (s.progress) s.progress(s.done, s.total);
  return {};
}

Status TagAssembler::add_chunk(std::string blob, const std::string& sha256) {
  Impl& s = *impl_;
  if (s.next >= s.plan.size()) {
    return make_error(ErrorCode::kInvalidArgument, "more chunks than the manifest describes");
  }
  const ChunkPos pos = s.plan[s.next++];
  if (!s.needs(pos)) {  // a tag or file this host has: only the digest is checked
    if (sha256_hex(blob) != sha256) {
      return make_error(ErrorCode::kChecksumMismatch, "chunk digest mismatch");
    }
    s.done += pos.length;
    if (s.progress) s.progress(s.done, s.total);
    return {};
  }
  if (pos.index == 0) FORKD_TRY(s.open_target(pos.tag_index, pos.role));
  int fd = s.fds.at({pos.tag_index, pos.role}).get();
  std::string what =
      s.m.tags[pos.tag_index].meta.tag + " " + pos.role + " chunk " + std::to_string(pos.index);
  auto job = [fd, pos, what, blob = std::move(blob), sha256, &s]() -> Result<Decoded> {
    if (sha256_hex(blob) != sha256) {
      return make_error(ErrorCode::kChecksumMismatch, what + ": digest mismatch");
    }
    Decoded d{pos, s.chunks.get()};
    if (auto st = s.codecs.get()->decode(blob, pos.length, d.chunk.get()); !st) {
      return tl::unexpected(st.error().wrap(what));
    }
    FORKD_TRY(write_pages(fd, pos, *d.chunk));
    return d;
  };
  return s.window->push(std::move(job));
}

Status TagAssembler::Impl::link_ref(size_t t, const std::string& role, const FileRef& ref) {
  std::string src;
  for (size_t i = 0; i < t; i++) {
    if (m.tags[i].meta.tag == ref.tag && writes[i]) {
      src = writes[i]->staging() + "/" + store::snapshot_file_name(ref.role);
    }
  }
  const auto& want = m.tags[t].meta.files.at(role);
  if (src.empty()) {
    // A file of a tag this host had: its record (verified in begin) must name the same bytes.
    auto local = store->load(ref.tag);
    auto f = local ? local->files.find(ref.role) : decltype(local->files.end()){};
    if (!local || f == local->files.end() || f->second.digest() != want.digest()) {
      return make_error(ErrorCode::kChecksumMismatch, "tag " + m.tags[t].meta.tag + ": " + role +
                                                          " should be the " + ref.role + " of " +
                                                          ref.tag + ", which differs here");
    }
    src = store->dir(ref.tag) + "/" + store::snapshot_file_name(ref.role);
  }
  std::string dst = file_path(t, role);
  if (::link(src.c_str(), dst.c_str()) != 0) return errno_error(errno, "link " + src);
  struct stat st;
  if (::stat(dst.c_str(), &st) != 0 || static_cast<uint64_t>(st.st_size) != want.size) {
    return make_error(ErrorCode::kChecksumMismatch, "tag " + m.tags[t].meta.tag + ": " + role +
                                                        " (shared with " + ref.tag +
                                                        ") has another size");
  }
  return {};
}

Status TagAssembler::Impl::link_local(size_t t, const std::string& role, const std::string& src) {
  std::string dst = file_path(t, role);
  if (::link(src.c_str(), dst.c_str()) != 0) return errno_error(errno, "link " + src);
  struct stat st;
  if (::stat(dst.c_str(), &st) != 0 ||
      static_cast<uint64_t>(st.st_size) != m.tags[t].meta.files.at(role).size) {
    return make_error(ErrorCode::kChecksumMismatch, "tag " + m.tags[t].meta.tag + ": " + role +
                                                        " (found here as " + src +
                                                        ") changed meanwhile");
  }
  return {};
}

Result<AssembleResult> TagAssembler::finish() {
  Impl& s = *impl_;
  FORKD_TRY(s.window->drain());
  if (s.next != s.plan.size()) {
    return make_error(ErrorCode::kIo, "truncated: " + std::to_string(s.plan.size() - s.next) +
                                          " of " + std::to_string(s.plan.size()) +
                                          " chunks missing");
  }
  AssembleResult res;
  for (size_t t = 0; t < s.m.tags.size(); t++) {
    const auto& pt = s.m.tags[t];
    if (!s.writes[t]) continue;
    for (const auto& [role, f] : pt.meta.files) {
      if (auto l = s.local_src.find({t, role}); l != s.local_src.end()) {
        FORKD_TRY(s.link_local(t, role, l->second));
        continue;
      }
      if (auto r = pt.refs.find(role); r != pt.refs.end()) {
        FORKD_TRY(s.link_ref(t, role, r->second));
        continue;
      }
      if (f.size == 0) {  // no chunks: an empty file
        FORKD_TRY(s.open_target(t, role));
        if (store::EntryHasher(f).digest() != f.digest()) {
          return make_error(ErrorCode::kChecksumMismatch, "tag " + pt.meta.tag + ": " + role);
        }
      }
      int fd = s.fds.at({t, role}).get();
      if (::fsync(fd) != 0) return errno_error(errno, "fsync " + role);
      ::fchmod(fd, store::kTagFileMode);
      res.logical_bytes += f.size;
    }
  }
  s.window.reset();
  s.fds.clear();
  for (size_t t = 0; t < s.m.tags.size(); t++) {
    const auto& meta = s.m.tags[t].meta;
    if (!s.writes[t]) {
      res.present.push_back(meta.tag);
      continue;
    }
    auto st = s.writes[t]->commit(meta, true);
    // Its lock goes now: a link's commit takes its parent's lock (flock: a second lock of this
    // process would wait on the first).
    s.writes[t].reset();
    if (!st) {
      for (auto it = res.created.rbegin(); it != res.created.rend(); ++it) {
        if (auto rm = s.store->remove(*it); !rm) {
          logger("hub")->warn("undo unpack: remove tag={} error={}", *it, rm.error().message());
        }
      }
      return tl::unexpected(st.error());
    }
    res.created.push_back(meta.tag);
  }
  return res;
}

}  // namespace forkd::hub

// pull_tag (see oci_tag.h): walk the linked manifests, then fetch root first through a resumable
// blob cache into a TagAssembler.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <set>
#include <thread>

#include "base/clock.h"
#include "base/files.h"
#include "base/json_get.h"
#include "hub/chunk_codec.h"
#include "hub/oci_tag.h"
#include "store/chain.h"

namespace forkd::hub {

namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Layer {
  std::string digest;
  uint64_t size = 0;
};

struct Link {
  std::string digest;  // of its OCI manifest
  PackManifest pack;
  std::vector<Layer> layers;
  std::string parent_manifest;
};

Error pull_error(const OciRef& ref, const std::string& what) {
  return Error(ErrorCode::kInvalidArgument, ref.to_string() + ": " + what);
}

// A ready tag of this host whose memory content is hash; "" when none.
std::string find_by_content(const store::SnapshotStore& store, const std::string& hash) {
  for (const auto& m : store.list()) {
    if (m.status == "ready" && m.content_hash() == hash) return m.tag;
  }
  return "";
}

// Makes a single-tag manifest continue from local instead of from the tag it names.
void rename_required(PackManifest* pm, std::string from, const std::string& local) {
  for (auto& r : pm->requires_tags) {
    if (r.tag == from) r.tag = local;
  }
  for (auto& t : pm->tags) {
    if (t.meta.parent_tag == from) t.meta.parent_tag = local;
    for (auto& [role, ref] : t.refs) {
      if (ref.tag == from) ref.tag = local;
    }
  }
}

Result<Link> read_link(RegistryClient& client, const OciRef& ref, const std::string& reference) {
  auto man = client.get_manifest(reference);
  if (!man) return tl::unexpected(man.error());
  Json j = json::parse_untrusted(man->body);
  const Json* config = json::member(j, "config");
  if (!config || json::string_or(*config, "mediaType", "") != kForkdConfigType) {
    return tl::unexpected(
        pull_error(ref, "not a forkd tag (a container image? use forkd image import)"));
  }
  Link link;
  link.digest = man->digest;
  std::string config_digest = json::string_or(*config, "digest", "");
  auto config_size = json::get_int<uint64_t>(*config, "size");
  if (!is_valid_digest(config_digest) || !config_size || *config_size > kMaxManifestBytes) {
    return tl::unexpected(pull_error(ref, "bad config descriptor"));
  }
  auto text = client.fetch_small_blob(config_digest, *config_size, "blob");
  if (!text) return tl::unexpected(text.error());
  Json cj = json::parse_untrusted(*text);
  auto pack = PackManifest::from_json(cj);
  if (!pack) return tl::unexpected(pack.error());
  if (pack->tags.size() != 1)
    return tl::unexpected(pull_error(ref, "a config must describe one tag"));
  link.pack = std::move(*pack);
  link.parent_manifest = json::string_or(cj, "parent_manifest", "");
  const Json* layers = json::member(j, "layers");
  if (!layers || !layers->is_array()) return tl::unexpected(pull_error(ref, "no layers"));
  for (const auto& l : *layers) {
    Layer layer{json::string_or(l, "digest", ""), json::int_or<uint64_t>(l, "size", 0)};
    if (json::string_or(l, "mediaType", "") != kForkdChunkType || !is_valid_digest(layer.digest) ||
        layer.size == 0 || layer.size > max_chunk_blob_bytes()) {
      return tl::unexpected(pull_error(ref, "bad layer descriptor"));
    }
    link.layers.push_back(layer);
  }
  if (link.layers.size() != chunk_plan(link.pack).size()) {
    return tl::unexpected(
        pull_error(ref, "the manifest lists " + std::to_string(link.layers.size()) +
                            " layers, its config describes " +
                            std::to_string(chunk_plan(link.pack).size()) + " chunks"));
  }
  return link;
}

// Blobs of a pull in flight: <dir>/<hex> when complete and checked, <hex>.partial while
// arriving (under an flock, so two pulls never write one file). A cut pull resumes from the
// partial's length with a Range request.
class BlobCache {
 public:
  BlobCache(RegistryClient& client, std::string dir) : client_(client), dir_(std::move(dir)) {}

  Result<std::string> get(const Layer& l, PullResult* stats) {
    std::string hex = l.digest.substr(7);
    std::string done = dir_ + "/" + hex;
    if (auto cached = read_file(done, l.size + 1); cached && cached->size() == l.size) {
      if (sha256_hex(*cached) == hex) {
        stats->blobs_reused++;
        used_.insert(done);
        return cached;
      }
    }
    std::string part = done + ".partial";
    auto fd = open_file(part, O_RDWR | O_CREAT, 0600);
    if (!fd) return tl::unexpected(fd.error());
    auto deadline = Clock::now() + std::chrono::minutes(10);
    while (::flock(fd->get(), LOCK_EX | LOCK_NB) != 0) {
      if (Clock::now() > deadline) {
        return make_error(ErrorCode::kTimeout, "another pull holds blob " + l.digest);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    struct stat st;
    uint64_t have = ::fstat(fd->get(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
    if (have > l.size) {
      if (::ftruncate(fd->get(), 0) != 0) return errno_error(errno, "truncate " + part);
      have = 0;
    }
    if (have > 0) stats->blobs_resumed++;
    std::string blob(have, '\0');
    if (have && ::pread(fd->get(), blob.data(), have, 0) != static_cast<ssize_t>(have)) {
      return errno_error(errno, "read " + part);
    }
    if (have < l.size) {
      uint64_t at = have;
      auto fetched =
          client_.fetch_blob(l.digest, l.size, have, [&](std::string_view piece) -> Status {
            FORKD_TRY(write_all_at(fd->get(), piece, at));
            at += piece.size();
            blob.append(piece);
            return Status{};
          });
      stats->bytes_fetched += at - have;
      if (!fetched) return tl::unexpected(fetched.error());
      stats->blobs_fetched++;
    }
    if (blob.size() != l.size || sha256_hex(blob) != hex) {
      ::unlink(part.c_str());
      return make_error(ErrorCode::kChecksumMismatch,
                        "blob " + l.digest + " does not match its digest (discarded)");
    }
    if (::fsync(fd->get()) != 0) return errno_error(errno, "fsync " + part);
    if (::rename(part.c_str(), done.c_str()) != 0) return errno_error(errno, "rename " + part);
    used_.insert(done);
    return blob;
  }
  // Removes the blobs this pull used (after its tags are committed).
  void forget() {
    for (const auto& p : used_) ::unlink(p.c_str());
  }

 private:
  static Status write_all_at(int fd, std::string_view data, uint64_t off) {
    while (!data.empty()) {
      ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(off));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno_error(errno, "write blob");
      data.remove_prefix(static_cast<size_t>(n));
      off += static_cast<uint64_t>(n);
    }
    return {};
  }
  RegistryClient& client_;
  std::string dir_;
  std::set<std::string> used_;
};

}  // namespace

Result<PullResult> pull_tag(const store::SnapshotStore& store, const std::string& cache_dir,
                            RegistryClient& client, const OciRef& ref, const std::string& new_tag,
                            const ByteProgress& progress) {
  auto t0 = Clock::now();
  PullResult res;
  // Walk parents until one this host has.
  std::deque<Link> links;
  std::set<std::string> seen;
  std::string reference = ref.reference();
  for (;;) {
    if (links.size() > static_cast<size_t>(store::kMaxChainDepth)) {
      return tl::unexpected(
          pull_error(ref, "chain deeper than " + std::to_string(store::kMaxChainDepth)));
    }
    auto link = read_link(client, ref, reference);
    if (!link) return tl::unexpected(link.error());
    if (!seen.insert(link->digest).second) {
      return tl::unexpected(pull_error(ref, "the manifests' parents form a loop"));
    }
    if (res.digest.empty()) res.digest = link->digest;
    links.push_front(std::move(*link));
    const PackManifest& pm = links.front().pack;
    if (pm.requires_tags.empty()) break;
    const PackRequirement& req = pm.requires_tags.front();
    auto local = store.load(req.tag);
    if (local && local->content_hash() == req.content_hash) break;
    // The parent may be here under another name (pulled or unpacked with --tag): the link then
    // names that tag instead.
    if (auto here = find_by_content(store, req.content_hash); !here.empty()) {
      rename_required(&links.front().pack, req.tag, here);
      break;
    }
    if (!is_valid_digest(links.front().parent_manifest)) {
      return tl::unexpected(pull_error(ref, "a link without its parent's manifest"));
    }
    reference = links.front().parent_manifest;
  }
  std::string blob_dir = cache_dir + "/blobs";
  FORKD_TRY(make_dirs(blob_dir, 0700));
  BlobCache cache(client, blob_dir);
  uint64_t total = 0, done = 0;
  for (const auto& l : links) total += l.pack.data_bytes();
  for (size_t i = 0; i < links.size(); i++) {
    Link& l = links[i];
    bool is_top = i + 1 == links.size();
    std::string name = is_top && !new_tag.empty() ? new_tag : l.pack.tags[0].meta.tag;
    auto here = store.load(name);  // an error when there is no such tag
    if (here && same_content(*here, l.pack.tags[0].meta)) {
      res.tags.present.push_back(name);  // already here (another pull finished it meanwhile)
      done += l.pack.data_bytes();
      continue;
    }
    uint64_t base = done;
    auto as =
        TagAssembler::begin(store, l.pack, is_top ? new_tag : "", 0, [&](uint64_t d, uint64_t) {
          if (progress) progress(base + d, total);
        });
    if (!as) return tl::unexpected(as.error());
    for (const auto& layer : l.layers) {
      if (!(*as)->next_needed()) {
        FORKD_TRY((*as)->skip_chunk());
        res.blobs_skipped++;
        continue;
      }
      auto blob = cache.get(layer, &res);
      if (!blob) return tl::unexpected(blob.error().wrap("pull " + name));
      FORKD_TRY((*as)->add_chunk(std::move(*blob), layer.digest.substr(7)));
    }
    auto fin = (*as)->finish();
    if (!fin) return tl::unexpected(fin.error().wrap("pull " + name));
    for (auto& t : fin->created) res.tags.created.push_back(t);
    res.tags.logical_bytes += fin->logical_bytes;
    done += l.pack.data_bytes();
  }
  cache.forget();
  res.ms = ms_since(t0);
  return res;
}

}  // namespace forkd::hub

#include "hub/oci_tag.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <set>

#include "base/clock.h"
#include "base/dir_lock.h"
#include "base/files.h"
#include "base/json_get.h"
#include "hub/chunk_codec.h"
#include "store/chain.h"

namespace forkd::hub {

namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

Json descriptor_json(std::string_view media_type, const std::string& digest, uint64_t size) {
  return {{"mediaType", media_type}, {"digest", digest}, {"size", size}};
}

// Uploads data unless the registry has it. Returns true when it was sent.
Result<bool> ensure_blob(RegistryClient& client, const std::string& digest, std::string_view data) {
  auto has = client.blob_exists(digest);
  if (!has) return tl::unexpected(has.error());
  if (*has) return false;
  FORKD_TRY(client.push_blob(digest, data));
  return true;
}

// What a pushed tag's manifest was, kept so a later push of a link skips re-encoding it.
std::string push_cache_path(const std::string& cache_dir, const store::SnapshotMeta& meta,
                            const std::string& parent_digest, const OciRef& ref) {
  std::string key = meta.to_json().dump() + "\n" + parent_digest + "\n" + ref.registry_address() +
                    "/" + ref.repository;
  return cache_dir + "/oci-pushed-" + sha256_hex(key).substr(0, 32) + ".json";
}

}  // namespace

Result<RegistryClient> open_registry(const std::string& ref_text, bool plain_http,
                                     const std::string& ca_file, const std::string& auth_file,
                                     OciRef* ref, std::shared_ptr<std::atomic<bool>> cancel) {
  auto parsed = parse_oci_ref(ref_text);
  if (!parsed) return tl::unexpected(parsed.error());
  *ref = *parsed;
  auto creds = load_credentials(ref->registry_address(), auth_file);
  if (!creds) return tl::unexpected(creds.error());
  RegistryClientOptions o;
  o.endpoint = registry_endpoint(*ref, plain_http, !ca_file.empty());
  o.repository = ref->repository;
  o.credentials = *creds;
  o.ca_file = ca_file;
  o.cancel = std::move(cancel);
  return RegistryClient::create(std::move(o));
}

Json push_result_json(const OciRef& ref, const PushResult& r) {
  return {{"ref", ref.to_string()},
          {"digest", r.digest},
          {"tags", r.tags},
          {"blobs_uploaded", r.blobs_uploaded},
          {"blobs_present", r.blobs_present},
          {"bytes_uploaded", r.bytes_uploaded},
          {"logical_bytes", r.logical_bytes},
          {"ms", r.ms}};
}

Json pull_result_json(const OciRef& ref, const PullResult& r) {
  return {{"ref", ref.to_string()},
          {"digest", r.digest},
          {"created", r.tags.created},
          {"present", r.tags.present},
          {"blobs_fetched", r.blobs_fetched},
          {"blobs_reused", r.blobs_reused},
          {"blobs_resumed", r.blobs_resumed},
          {"blobs_skipped", r.blobs_skipped},
          {"bytes_fetched", r.bytes_fetched},
          {"logical_bytes", r.tags.logical_bytes},
          {"ms", r.ms}};
}

Result<PushResult> push_tag(const store::SnapshotStore& store, const std::string& cache_dir,
                            RegistryClient& client, const OciRef& ref, const std::string& tag,
                            const ByteProgress& progress) {
  auto t0 = Clock::now();
  if (ref.tag.empty()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "push needs a reference with a tag (HOST/NAME:TAG), not only a digest");
  }
  FORKD_TRY(make_dirs(cache_dir, 0700));
  auto chain = chain_of(store, tag);
  if (!chain) return tl::unexpected(chain.error());
  const std::vector<std::string>& names = *chain;
  PushResult res;
  std::string parent_digest, parent;
  for (size_t i = 0; i < names.size(); i++) {
    const std::string& name = names[i];
    bool is_top = i + 1 == names.size();
    auto meta = store.load(name);
    // A link still without its content hash gets it first: the cache is keyed by that record.
    if (meta) meta = store::MemoryResolver(store, store.assembled_dir()).settle(*meta);
    if (!meta) return tl::unexpected(meta.error());
    std::string reference;
    std::string cached_path = push_cache_path(cache_dir, *meta, parent_digest, ref);
    if (auto cached = read_file(cached_path, kMaxRegistryManifestBytes); cached) {
      // Pushed before: if the registry still has that manifest, only the top needs its tag.
      std::string digest = "sha256:" + sha256_hex(*cached);
      auto there = client.get_manifest(digest);
      if (there) {
        if (is_top) {
          auto d = client.put_manifest(ref.tag, kOciManifestType, *cached);
          if (!d) return tl::unexpected(d.error());
        }
        res.tags.push_back(name);
        parent_digest = digest;
        parent = name;
        continue;
      }
    }
    auto pm = build_manifest(store, name, parent);
    if (!pm) return tl::unexpected(pm.error());
    Json layers = Json::array();
    auto stats = encode_chunks(
        store, *pm, 0,
        [&](const ChunkPos& pos, const std::string& blob, const std::string& sha) -> Status {
          std::string digest = "sha256:" + sha;
          auto sent = ensure_blob(client, digest, blob);
          if (!sent) return tl::unexpected(sent.error());
          if (*sent) {
            res.blobs_uploaded++;
            res.bytes_uploaded += blob.size();
          } else {
            res.blobs_present++;
          }
          Json d = descriptor_json(kForkdChunkType, digest, blob.size());
          d["annotations"] = {{"dev.forkd.role", pos.role},
                              {"dev.forkd.offset", std::to_string(pos.offset)}};
          layers.push_back(std::move(d));
          return {};
        },
        progress);
    if (!stats) return tl::unexpected(stats.error().wrap("push " + name));
    res.logical_bytes += pm->data_bytes();
    Json config = pm->to_json();
    config["parent_manifest"] = parent_digest;
    std::string config_text = config.dump();
    std::string config_digest = "sha256:" + sha256_hex(config_text);
    auto sent = ensure_blob(client, config_digest, config_text);
    if (!sent) return tl::unexpected(sent.error());
    Json annotations = {{"dev.forkd.tag", name}};
    if (!parent_digest.empty()) annotations["dev.forkd.parent_manifest"] = parent_digest;
    Json manifest = {
        {"schemaVersion", 2},
        {"mediaType", kOciManifestType},
        {"artifactType", kForkdArtifactType},
        {"config", descriptor_json(kForkdConfigType, config_digest, config_text.size())},
        {"layers", layers},
        {"annotations", annotations}};
    std::string body = manifest.dump();
    std::string digest = "sha256:" + sha256_hex(body);
    reference = is_top ? ref.tag : digest;
    auto put = client.put_manifest(reference, kOciManifestType, body);
    if (!put) return tl::unexpected(put.error().wrap("push " + name));
    (void)write_file_atomic(cached_path, body);
    res.tags.push_back(name);
    parent_digest = digest;
    parent = name;
  }
  res.digest = parent_digest;
  res.ms = ms_since(t0);
  return res;
}

}  // namespace forkd::hub

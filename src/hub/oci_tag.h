#pragma once
// Tags as OCI artifacts on any registry.
//
// Each tag of a chain is one OCI image manifest (artifactType application/vnd.forkd.tag.v1):
//   config: the tag's pack manifest (pack_manifest.h: its snapshot record, the parent it
//           requires, files equal to the parent's as references) plus "parent_manifest", the
//           digest of the parent's OCI manifest;
//   layers: the chunk blobs of its other files (chunk_codec.h), in chunk_plan order.
// A link names its parent's manifest, so a chain is a list of linked manifests; blobs are
// content-addressed, so a chunk equal to one already in the repository is never sent again.
// Only the top tag gets the reference's tag; ancestors are stored by digest.
//
// A pull walks the parents up to one this host has (by name and content hash), then fetches
// root first. Every blob is checked against its digest as it arrives and kept in
// $FORKD_HOME/cache/blobs until its tag is committed, so a pull killed midway resumes: finished
// blobs are reused and a partial one continues with an HTTP Range request.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/error.h"
#include "hub/oci_ref.h"
#include "hub/registry_client.h"
#include "hub/tag_chunks.h"
#include "store/snapshot_store.h"

namespace forkd::hub {

inline constexpr std::string_view kForkdArtifactType = "application/vnd.forkd.tag.v1";
inline constexpr std::string_view kForkdConfigType = "application/vnd.forkd.tag.config.v1+json";
inline constexpr std::string_view kForkdChunkType = "application/vnd.forkd.chunk.v1";

struct PushResult {
  std::vector<std::string> tags;  // pushed, root first
  std::string digest;             // the top tag's manifest
  uint64_t blobs_uploaded = 0;
  uint64_t blobs_present = 0;  // already in the registry
  uint64_t bytes_uploaded = 0;
  uint64_t logical_bytes = 0;
  double ms = 0;
};

struct PullResult {
  AssembleResult tags;
  std::string digest;
  uint64_t blobs_fetched = 0;
  uint64_t blobs_reused = 0;   // complete in the cache (an earlier cut pull, or a repeated chunk)
  uint64_t blobs_resumed = 0;  // a partial blob continued with a Range request
  uint64_t blobs_skipped = 0;  // not fetched: the host has their file already
  uint64_t bytes_fetched = 0;
  double ms = 0;
};

// A client of the repository ref_text names (*ref gets it parsed). Credentials come from the
// environment or auth_file (registry_auth.h), never from a command line or a request.
// Loopback registries and plain_http speak HTTP, others HTTPS; a ca_file asks for HTTPS even
// on loopback (unless plain_http).
Result<RegistryClient> open_registry(const std::string& ref_text, bool plain_http,
                                     const std::string& ca_file, const std::string& auth_file,
                                     OciRef* ref,
                                     std::shared_ptr<std::atomic<bool>> cancel = nullptr);

// Pushes tag (and every ancestor) to ref's repository, tagging the top as ref's tag.
// cache_dir keeps each tag's computed manifest, so a later push of a link need not re-encode
// its ancestors.
Result<PushResult> push_tag(const store::SnapshotStore& store, const std::string& cache_dir,
                            RegistryClient& client, const OciRef& ref, const std::string& tag,
                            const ByteProgress& progress = {});

// The results as the CLI's --json and the REST API give them.
nlohmann::json push_result_json(const OciRef& ref, const PushResult& r);
nlohmann::json pull_result_json(const OciRef& ref, const PullResult& r);

// Pulls ref into the store; new_tag renames the top tag. cache_dir holds blobs in flight.
Result<PullResult> pull_tag(const store::SnapshotStore& store, const std::string& cache_dir,
                            RegistryClient& client, const OciRef& ref, const std::string& new_tag,
                            const ByteProgress& progress = {});

}  // namespace forkd::hub

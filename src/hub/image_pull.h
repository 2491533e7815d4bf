#pragma once
// Fetches a container image from a registry and flattens its layers into a directory tree (the
// future guest root filesystem). The registry is hostile: manifests are parsed strictly
// (image_manifest.h), every blob is bounded by its declared size and its digest is computed as
// it arrives and checked before the blob is used, and layers go through apply_layer (no escapes,
// no device nodes, bounded totals).
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "base/error.h"
#include "hub/image_manifest.h"
#include "hub/layer_flatten.h"
#include "hub/oci_ref.h"
#include "hub/registry_client.h"

namespace forkd::hub {

struct ImagePullOptions {
  std::string blob_dir;  // layer blobs while they are applied (exists; each blob removed once used)
  std::string root_dir;  // the tree to fill (exists, empty)
  ImageManifestLimits manifest_limits;
  FlattenLimits flatten_limits;
  std::function<void(std::string_view line)> progress;       // one line per step; may be empty
  std::function<void(uint64_t done, uint64_t total)> bytes;  // layer bytes fetched; may be empty
};

struct ImagePullResult {
  std::string manifest_digest;  // the image manifest's (after choosing a platform)
  std::string index_digest;     // the index's when the reference named one, else ""
  std::string config_digest;
  size_t layers = 0;
  uint64_t layer_bytes = 0;  // fetched (compressed)
  FlattenStats stats;
  double ms = 0;
};

// Resolves ref (choosing linux/amd64 from an index), fetches the config and every layer into
// blob_dir, applying each to root_dir in order. On error root_dir is half-filled: the caller
// removes it. Errors: kNotFound (no such reference, no amd64 image), kInvalidArgument (not a
// container image, a malformed manifest or config, a hostile layer), kChecksumMismatch, the
// registry client's codes.
Result<ImagePullResult> pull_image_tree(RegistryClient& client, const OciRef& ref,
                                        const ImagePullOptions& options);

}  // namespace forkd::hub

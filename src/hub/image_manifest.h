#pragma once
// Container images on a registry, as `forkd image import` reads them: an OCI image manifest or a
// Docker v2 schema2 manifest (a config blob and layer blobs), possibly behind an OCI index or a
// Docker manifest list from which one platform is chosen. Pure functions over hostile text: every
// field is checked (types, media types, digests, sizes, counts) before anything is fetched.
// Errors are kInvalidArgument naming what is wrong, except where noted.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace forkd::hub {

struct ImageDescriptor {
  std::string media_type;
  std::string digest;  // "sha256:<64 lowercase hex>"
  uint64_t size = 0;   // bytes of the blob as stored (compressed for layers)
};

struct ImageManifestLimits {
  size_t max_layers = 256;
  uint64_t max_layer_bytes = 8ull << 30;   // one layer blob
  uint64_t max_total_bytes = 16ull << 30;  // all layer blobs together
  uint64_t max_config_bytes = 4u << 20;    // the config blob
};

struct ImageManifest {
  ImageDescriptor config;
  std::vector<ImageDescriptor> layers;  // lowest first, as applied
  uint64_t layer_bytes = 0;             // sum of the layers' sizes
};

// Media types of an OCI index / Docker manifest list, and of an image manifest (OCI or Docker).
bool is_index_media_type(std::string_view media_type);
bool is_image_manifest_media_type(std::string_view media_type);

// From an OCI index or Docker manifest list (its body): the descriptor of the image manifest for
// os/architecture (attestations and nested indexes are skipped). kNotFound naming the platforms
// the index offers when none matches.
Result<ImageDescriptor> select_platform(std::string_view index_body, std::string_view os = "linux",
                                        std::string_view architecture = "amd64");

// Parses an image manifest whose media type the registry declared (Content-Type, else the body's
// mediaType). An artifact that is not a container image (a forkd tag, a Helm chart, anything with
// another config media type or an artifactType) is refused, as are schema 1 manifests, foreign or
// non-distributable layers, and sizes beyond limits.
Result<ImageManifest> parse_image_manifest(std::string_view media_type, std::string_view body,
                                           const ImageManifestLimits& limits = {});

struct ImageConfig {
  std::string os;            // "" when the config does not say
  std::string architecture;  // "" when the config does not say
  size_t diff_ids = 0;       // entries of rootfs.diff_ids (0 when absent)
};

// Checks an image config blob: a JSON object whose os and architecture, when present, are
// linux and amd64, and whose rootfs.diff_ids (when present) count layers entries.
Result<ImageConfig> parse_image_config(std::string_view body, size_t layers);

}  // namespace forkd::hub

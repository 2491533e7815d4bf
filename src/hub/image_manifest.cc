#include "hub/image_manifest.h"

#include <array>

#include "base/json_get.h"
#include "hub/oci_ref.h"
#include "hub/registry_client.h"

namespace forkd::hub {

namespace {

using Json = nlohmann::json;

constexpr size_t kMaxIndexEntries = 1024;
constexpr size_t kMaxQuoted = 80;

constexpr std::array<std::string_view, 2> kConfigTypes = {
    "application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"};

// Layers apply_layer can read (it tells plain, gzip and zstd tar apart by their magic bytes).
constexpr std::array<std::string_view, 5> kLayerTypes = {
    "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar"};

tl::unexpected<Error> invalid_manifest(std::string message) {
  return make_error(ErrorCode::kInvalidArgument, std::move(message));
}

template <size_t N>
bool one_of(const std::array<std::string_view, N>& set, std::string_view s) {
  for (auto t : set) {
    if (t == s) return true;
  }
  return false;
}

// Untrusted text for a message: printable ASCII only, bounded.
std::string printable_quote(std::string_view s) {
  std::string out = "'";
  for (char c : s.substr(0, kMaxQuoted)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (s.size() > kMaxQuoted) out += "...";
  return out + "'";
}

std::string mib(uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

// A descriptor's mediaType, digest and size, each checked; `what` names it in errors.
Result<ImageDescriptor> parse_descriptor(const Json& j, const std::string& what) {
  if (!j.is_object()) return invalid_manifest(what + " is not an object");
  ImageDescriptor d;
  auto type = json::get_string(j, "mediaType");
  auto digest = json::get_string(j, "digest");
  auto size = json::get_int<uint64_t>(j, "size");
  if (!type || type->empty()) return invalid_manifest(what + " has no mediaType");
  if (!digest || !is_valid_digest(*digest)) {
    return invalid_manifest(what + " has a bad digest " + printable_quote(digest.value_or("")) +
                            " (sha256:<64 lowercase hex> expected)");
  }
  if (!size) return invalid_manifest(what + " has no valid size");
  d.media_type = *type;
  d.digest = *digest;
  d.size = *size;
  return d;
}

Result<Json> parse_object(std::string_view body, std::string_view what) {
  Json j = json::parse_untrusted(body);
  if (!j.is_object()) return invalid_manifest(std::string(what) + " is not a JSON object");
  return j;
}

}  // namespace

bool is_index_media_type(std::string_view media_type) {
  return media_type == kOciIndexType || media_type == kDockerListType;
}

bool is_image_manifest_media_type(std::string_view media_type) {
  return media_type == kOciManifestType || media_type == kDockerManifestType;
}

Result<ImageDescriptor> select_platform(std::string_view index_body, std::string_view os,
                                        std::string_view architecture) {
  auto j = parse_object(index_body, "the index");
  if (!j) return tl::unexpected(j.error());
  if (json::int_or<int>(*j, "schemaVersion", 0) != 2)
    return invalid_manifest("index schemaVersion is not 2");
  const Json* manifests = json::member(*j, "manifests");
  if (!manifests || !manifests->is_array())
    return invalid_manifest("the index has no manifests array");
  if (manifests->size() > kMaxIndexEntries) {
    return invalid_manifest("the index lists more than " + std::to_string(kMaxIndexEntries) +
                            " manifests");
  }
  std::string offered;
  size_t i = 0;
  for (const auto& m : *manifests) {
    auto d = parse_descriptor(m, "index entry " + std::to_string(i++));
    if (!d) return tl::unexpected(d.error());
    const Json* platform = json::member(m, "platform");
    std::string p_os = platform ? json::string_or(*platform, "os", "") : "";
    std::string p_arch = platform ? json::string_or(*platform, "architecture", "") : "";
    if (!is_image_manifest_media_type(d->media_type)) continue;  // nested index, artifact
    if (p_os == "unknown") continue;                             // buildkit's attestations
    if (p_os == os && p_arch == architecture) {
      if (d->size > kMaxRegistryManifestBytes) {
        return invalid_manifest("the " + std::string(os) + "/" + std::string(architecture) +
                                " manifest is larger than " + mib(kMaxRegistryManifestBytes));
      }
      return *d;
    }
    if (offered.size() < 400) {
      offered +=
          (offered.empty() ? "" : ", ") + printable_quote(p_os) + "/" + printable_quote(p_arch);
    }
  }
  return make_error(ErrorCode::kNotFound, "the index has no " + std::string(os) + "/" +
                                              std::string(architecture) + " image (it offers: " +
                                              (offered.empty() ? "nothing usable" : offered) + ")");
}

Result<ImageManifest> parse_image_manifest(std::string_view media_type, std::string_view body,
                                           const ImageManifestLimits& limits) {
  auto j = parse_object(body, "the manifest");
  if (!j) return tl::unexpected(j.error());
  std::string declared = json::string_or(*j, "mediaType", "");
  std::string type = media_type.empty() ? declared : std::string(media_type);
  if (type.rfind("application/vnd.docker.distribution.manifest.v1", 0) == 0) {
    return invalid_manifest("Docker schema 1 manifests are not supported (push the image again)");
  }
  if (is_index_media_type(type)) return invalid_manifest("an index, not an image manifest");
  if (!is_image_manifest_media_type(type)) {
    return invalid_manifest("not a container image: manifest media type " + printable_quote(type));
  }
  if (!declared.empty() && declared != type) {
    return invalid_manifest("the manifest says it is " + printable_quote(declared) +
                            ", the registry said " + printable_quote(type));
  }
  if (json::int_or<int>(*j, "schemaVersion", 0) != 2) {
    return invalid_manifest("manifest schemaVersion is not 2");
  }
  const Json* config = json::member(*j, "config");
  if (!config) return invalid_manifest("the manifest has no config");
  auto cfg = parse_descriptor(*config, "the config descriptor");
  if (!cfg) return tl::unexpected(cfg.error());
  if (cfg->media_type.rfind("application/vnd.forkd.", 0) == 0) {
    return invalid_manifest("a forkd tag, not a container image (use forkd pull)");
  }
  if (!one_of(kConfigTypes, cfg->media_type)) {
    return invalid_manifest("not a container image: config media type " +
                            printable_quote(cfg->media_type));
  }
  if (std::string art = json::string_or(*j, "artifactType", ""); !art.empty()) {
    return invalid_manifest("not a container image: artifactType " + printable_quote(art));
  }
  if (cfg->size == 0 || cfg->size > limits.max_config_bytes) {
    return invalid_manifest("config size " + std::to_string(cfg->size) + " is not in 1.." +
                            std::to_string(limits.max_config_bytes));
  }
  ImageManifest out;
  out.config = *cfg;
  const Json* layers = json::member(*j, "layers");
  if (!layers || !layers->is_array()) return invalid_manifest("the manifest has no layers array");
  if (layers->empty()) return invalid_manifest("the image has no layers");
  if (layers->size() > limits.max_layers) {
    return invalid_manifest("the image has " + std::to_string(layers->size()) +
                            " layers, more than " + std::to_string(limits.max_layers));
  }
  size_t i = 0;
  for (const auto& l : *layers) {
    std::string what = "layer " + std::to_string(++i);
    auto d = parse_descriptor(l, what);
    if (!d) return tl::unexpected(d.error());
    if (d->media_type.find("foreign") != std::string::npos ||
        d->media_type.find("nondistributable") != std::string::npos) {
      return invalid_manifest(what + " is a foreign (non-distributable) layer " +
                              printable_quote(d->media_type) +
                              "; forkd fetches only from the registry");
    }
    if (!one_of(kLayerTypes, d->media_type)) {
      return invalid_manifest(what + " has media type " + printable_quote(d->media_type) +
                              " (a tar, tar+gzip or tar+zstd layer expected)");
    }
    if (d->size == 0) return invalid_manifest(what + " is empty");
    if (d->size > limits.max_layer_bytes) {
      return invalid_manifest(what + " is " + mib(d->size) + ", more than " +
                              mib(limits.max_layer_bytes));
    }
    out.layer_bytes += d->size;  // both bounded by 2^63 / 256: no overflow
    if (out.layer_bytes > limits.max_total_bytes) {
      return invalid_manifest("the layers add up to more than " + mib(limits.max_total_bytes));
    }
    out.layers.push_back(std::move(*d));
  }
  return out;
}

Result<ImageConfig> parse_image_config(std::string_view body, size_t layers) {
  auto j = parse_object(body, "the image config");
  if (!j) return tl::unexpected(j.error());
  ImageConfig c;
  c.os = json::string_or(*j, "os", "");
  c.architecture = json::string_or(*j, "architecture", "");
  if (!c.os.empty() && c.os != "linux")
    return invalid_manifest("the image is for os " + printable_quote(c.os));
  if (!c.architecture.empty() && c.architecture != "amd64") {
    return invalid_manifest("the image is for architecture " + printable_quote(c.architecture) +
                            " (forkd guests are amd64)");
  }
  if (const Json* rootfs = json::member(*j, "rootfs")) {
    const Json* ids = json::member(*rootfs, "diff_ids");
    if (ids && ids->is_array()) {
      c.diff_ids = ids->size();
      if (c.diff_ids != layers) {
        return invalid_manifest("the config lists " + std::to_string(c.diff_ids) +
                                " layers, the manifest " + std::to_string(layers));
      }
    }
  }
  return c;
}

}  // namespace forkd::hub

#include "hub/image_pull.h"

#include <fcntl.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/files.h"
#include "base/units.h"

namespace forkd::hub {

namespace {

std::string digest_prefix(const std::string& digest) { return digest.substr(0, 7 + 12); }

// Streams a blob into path, hashing it as it arrives; kChecksumMismatch (and no file) unless it
// is exactly d.size bytes hashing to d.digest.
Status fetch_to_file(RegistryClient& client, const ImageDescriptor& d, const std::string& path,
                     const std::function<void(uint64_t)>& on_bytes) {
  auto fd = open_file(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (!fd) return tl::unexpected(fd.error());
  Sha256 hash;
  uint64_t got = 0;
  auto st = client.fetch_blob(d.digest, d.size, 0, [&](std::string_view piece) -> Status {
    hash.update(piece.data(), piece.size());
    got += piece.size();
    if (on_bytes) on_bytes(piece.size());
    return write_all(fd->get(), piece);
  });
  if (st && got != d.size) {
    st = make_error(ErrorCode::kIo, "blob " + d.digest + " truncated");
  }
  if (st && "sha256:" + hash.hex() != d.digest) {
    st = make_error(ErrorCode::kChecksumMismatch,
                    "blob " + d.digest + " does not match its digest (discarded)");
  }
  if (!st) {
    ::unlink(path.c_str());
    return st;
  }
  return {};
}

// The image manifest ref names, through an index when it names one.
Result<Manifest> resolve_manifest(RegistryClient& client, const OciRef& ref, ImagePullResult* res) {
  auto man = client.get_manifest(ref.reference());
  if (!man) return tl::unexpected(man.error());
  if (!is_index_media_type(man->media_type)) return man;
  res->index_digest = man->digest;
  auto d = select_platform(man->body);
  if (!d) return tl::unexpected(d.error());
  auto inner = client.get_manifest(d->digest);  // by digest: the client checks the body's hash
  if (!inner) return tl::unexpected(inner.error());
  if (is_index_media_type(inner->media_type)) {
    return make_error(ErrorCode::kInvalidArgument, "the index's linux/amd64 entry is an index");
  }
  if (inner->body.size() != d->size) {
    return make_error(ErrorCode::kInvalidArgument,
                      "the linux/amd64 manifest is not the size the index says");
  }
  if (!inner->media_type.empty() && inner->media_type != d->media_type) {
    return make_error(ErrorCode::kInvalidArgument,
                      "the index's linux/amd64 entry is not the manifest the registry returned");
  }
  return inner;
}

}  // namespace

Result<ImagePullResult> pull_image_tree(RegistryClient& client, const OciRef& ref,
                                        const ImagePullOptions& o) {
  auto t0 = SteadyClock::now();
  ImagePullResult res;
  const std::string name = ref.to_string();
  auto fail = [&](const Error& e) { return tl::unexpected(e.wrap("import " + name)); };
  auto say = [&](const std::string& line) {
    if (o.progress) o.progress(line);
  };

  auto man = resolve_manifest(client, ref, &res);
  if (!man) return fail(man.error());
  res.manifest_digest = man->digest;
  auto image = parse_image_manifest(man->media_type, man->body, o.manifest_limits);
  if (!image) return fail(image.error());
  res.config_digest = image->config.digest;
  auto config_text = client.fetch_small_blob(image->config.digest, image->config.size, "config");
  if (!config_text) return fail(config_text.error());
  auto config = parse_image_config(*config_text, image->layers.size());
  if (!config) return fail(config.error());
  say("image " + name + ": manifest " + digest_prefix(man->digest) + ", " +
      std::to_string(image->layers.size()) +
      (image->layers.size() == 1 ? " layer, " : " layers, ") + format_mb(image->layer_bytes));

  const size_t n = image->layers.size();
  uint64_t done = 0;
  for (size_t i = 0; i < n; ++i) {
    const ImageDescriptor& l = image->layers[i];
    std::string what =
        "layer " + std::to_string(i + 1) + "/" + std::to_string(n) + " " + digest_prefix(l.digest);
    std::string path = o.blob_dir + "/" + l.digest.substr(7) + ".layer";
    auto fetched = fetch_to_file(client, l, path, [&](uint64_t piece) {
      done += piece;
      if (o.bytes) o.bytes(done, image->layer_bytes);
    });
    if (!fetched) return fail(fetched.error().wrap(what));
    res.layer_bytes += l.size;
    uint64_t entries_before = res.stats.entries;
    auto applied = apply_layer(path, o.root_dir, o.flatten_limits, &res.stats);
    ::unlink(path.c_str());
    if (!applied) return fail(applied.error().wrap(what));
    say(what + " (" + format_mb(l.size) + "): fetched, digest checked, applied " +
        std::to_string(res.stats.entries - entries_before) + " entries");
  }
  res.layers = n;
  if (res.stats.skipped_count > 0) {
    say("not created: " + std::to_string(res.stats.skipped_count) +
        " device nodes, FIFOs or sockets (the guest's /dev is a devtmpfs)");
  }
  res.ms = ms_since(t0);
  return res;
}

}  // namespace forkd::hub

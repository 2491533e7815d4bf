// The registry client's operations (registry_client.h): blobs and manifests, over the
// transport in registry_client.cc.
#include <algorithm>
#include <thread>

#include "base/files.h"
#include "base/json_get.h"
#include "hub/registry_state.h"

namespace forkd::hub {

namespace {

std::string short_digest(const std::string& digest) {
  return is_valid_digest(digest) ? digest.substr(0, 7 + 12) : "\"" + sanitize(digest) + "\"";
}

bool printable(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

constexpr std::string_view kBadDigest = "bad digest (want sha256:<64 lowercase hex>)";

}  // namespace

Result<bool> RegistryClient::blob_exists(const std::string& digest) {
  const std::string op = "check blob " + short_digest(digest);
  if (!is_valid_digest(digest)) return state_->bad_arg(op, kBadDigest);
  Call call("HEAD", state_->path("blobs", digest));
  auto r = state_->get_following(call, state_->pull_scope, op);
  if (!r) return tl::unexpected(r.error());
  if (r->status == 200) return true;
  if (r->status == 404) return false;
  return tl::unexpected(state_->http_error(op, *r));
}

Status RegistryClient::push_blob(const std::string& digest, std::string_view data) {
  State& s = *state_;
  const std::string op = "push blob " + short_digest(digest);
  if (!is_valid_digest(digest)) return s.bad_arg(op, kBadDigest);
  for (size_t attempt = 0;; ++attempt) {
    Status st = [&]() -> Status {
      Call post("POST", s.path("blobs", "uploads/"));
      auto r = s.round_trip(s.opts.endpoint, post, op + ": start upload", &s.push_scope, true);
      if (!r) return tl::unexpected(r.error());
      if (r->status != 202) return tl::unexpected(s.http_error(op + ": start upload", *r));
      auto url = s.resolve(s.opts.endpoint, r->header("Location"), op);
      if (!url) return tl::unexpected(url.error());
      Call put("PUT", url->target, data);
      put.target += (put.target.find('?') == std::string::npos ? "?" : "&");
      put.target += "digest=" + percent_encode(digest);
      put.headers.emplace("Content-Type", "application/octet-stream");
      const bool here = url->endpoint.same_origin(s.opts.endpoint);
      r = s.round_trip(url->endpoint, put, op, here ? &s.push_scope : nullptr, false);
      if (!r) return tl::unexpected(r.error());
      if (r->status != 201 && r->status != 204) return tl::unexpected(s.http_error(op, *r));
      return {};
    }();
    if (st || st.error().code() != ErrorCode::kUnavailable ||
        attempt >= s.opts.retry_backoff.size()) {
      return st;
    }
    std::this_thread::sleep_for(s.opts.retry_backoff[attempt]);
  }
}

Status RegistryClient::mount_blob(const std::string& digest, const std::string& from_repo) {
  State& s = *state_;
  const std::string op = "mount blob " + short_digest(digest) + " from " + sanitize(from_repo);
  if (!is_valid_digest(digest)) return s.bad_arg(op, kBadDigest);
  if (!is_valid_repository(from_repo)) return s.bad_arg(op, "bad source repository name");
  const std::string scope = s.push_scope + " repository:" + from_repo + ":pull";
  Call post("POST", s.path("blobs", "uploads/?mount=" + percent_encode(digest) +
                                        "&from=" + percent_encode(from_repo)));
  auto r = s.round_trip(s.opts.endpoint, post, op, &scope, true);
  if (!r) return tl::unexpected(r.error());
  if (r->status == 201) return {};
  if (r->status != 202) return tl::unexpected(s.http_error(op, *r));
  // The registry opened an upload session instead: close it (best effort).
  if (auto url = s.resolve(s.opts.endpoint, r->header("Location"), op);
      url && url->endpoint.same_origin(s.opts.endpoint)) {
    Call del("DELETE", url->target);
    (void)s.round_trip(s.opts.endpoint, del, op + ": cancel upload", &scope, false);
  }
  return tl::unexpected(s.fail(ErrorCode::kNotFound, op, "the registry did not mount it"));
}

Status RegistryClient::fetch_blob(const std::string& digest, uint64_t expected_size,
                                  uint64_t offset,
                                  const std::function<Status(std::string_view)>& sink) {
  State& s = *state_;
  const std::string op = "fetch blob " + short_digest(digest);
  if (!is_valid_digest(digest)) return s.bad_arg(op, kBadDigest);
  if (offset > expected_size) return s.bad_arg(op, "offset beyond the blob's size");
  const uint64_t want = expected_size - offset;
  if (want == 0) return {};
  uint64_t delivered = 0, skip = 0;
  bool ours = false;  // the transfer was aborted by a check here or by sink
  Call call("GET", s.path("blobs", digest));
  if (offset > 0) call.headers.emplace("Range", "bytes=" + std::to_string(offset) + "-");
  call.on_headers = [&](const httplib::Response& res) -> Result<bool> {
    ours = true;
    if (res.status == 206) {
      std::string range = res.get_header_value("Content-Range");
      std::string expect = "bytes " + std::to_string(offset) + "-";
      if (offset == 0 || range.rfind(expect, 0) != 0) {
        return tl::unexpected(s.fail(ErrorCode::kIo, op,
                                     "partial answer for the wrong range \"" + sanitize(range) +
                                         "\" (asked from " + std::to_string(offset) + ")"));
      }
      skip = 0;
    } else if (res.status == 200) {
      skip = offset;  // the registry ignored Range: drop what the caller already has
    } else {
      ours = false;
      return false;
    }
    if (res.has_header("Content-Length") &&
        res.get_header_value<uint64_t>("Content-Length") > want + skip) {
      return tl::unexpected(s.fail(
          ErrorCode::kIo, op,
          "the registry announces more bytes than the blob's " + std::to_string(expected_size)));
    }
    ours = false;
    return true;
  };
  call.on_data = [&](std::string_view piece) -> Status {
    uint64_t drop = std::min<uint64_t>(skip, piece.size());
    piece.remove_prefix(drop);
    skip -= drop;
    if (piece.empty()) return {};
    ours = true;
    if (piece.size() > want - delivered) {
      return tl::unexpected(s.fail(ErrorCode::kIo, op,
                                   "more bytes than the blob's " + std::to_string(expected_size)));
    }
    FORKD_TRY(sink(piece));
    delivered += piece.size();
    ours = false;
    return {};
  };
  auto r = s.get_following(call, s.pull_scope, op);
  const std::string got = std::to_string(delivered) + " of " + std::to_string(want) + " bytes";
  if (!r) {
    if (ours || delivered == 0 || r.error().code() == ErrorCode::kTimeout ||
        r.error().code() == ErrorCode::kCancelled) {
      return tl::unexpected(r.error());
    }
    return tl::unexpected(
        s.fail(ErrorCode::kIo, op, "truncated after " + got + " (" + r.error().message() + ")"));
  }
  if (r->status != 200 && r->status != 206) return tl::unexpected(s.http_error(op, *r));
  if (delivered != want) {
    return tl::unexpected(s.fail(ErrorCode::kIo, op, "truncated: received " + got));
  }
  return {};
}

Result<std::string> RegistryClient::fetch_small_blob(const std::string& digest, uint64_t size,
                                                     std::string_view what) {
  std::string out;
  FORKD_TRY(fetch_blob(digest, size, 0, [&out](std::string_view piece) -> Status {
    out.append(piece);
    return {};
  }));
  if (out.size() != size || "sha256:" + sha256_hex(out) != digest) {
    return make_error(ErrorCode::kChecksumMismatch,
                      std::string(what) + " " + digest + " does not match its digest");
  }
  return out;
}

Result<Manifest> RegistryClient::get_manifest(const std::string& reference) {
  State& s = *state_;
  const bool by_digest = is_valid_digest(reference);
  const std::string op = "get manifest " + sanitize(reference);
  if (!by_digest && !is_valid_tag(reference)) return s.bad_arg(op, "bad reference");
  Call call("GET", s.path("manifests", reference), {}, kMaxRegistryManifestBytes);
  call.headers.emplace("Accept", std::string(kOciManifestType) + ", " + std::string(kOciIndexType) +
                                     ", " + std::string(kDockerManifestType) + ", " +
                                     std::string(kDockerListType));
  auto r = s.get_following(call, s.pull_scope, op);
  if (!r) return tl::unexpected(r.error());
  if (r->status != 200) return tl::unexpected(s.http_error(op, *r));
  Manifest m;
  m.body = std::move(r->body);
  m.digest = "sha256:" + sha256_hex(m.body);
  if (by_digest && m.digest != reference) {
    return tl::unexpected(s.fail(ErrorCode::kChecksumMismatch, op, "body hashes to " + m.digest));
  }
  std::string claimed = r->header("Docker-Content-Digest");
  if (claimed.rfind("sha256:", 0) == 0 && claimed != m.digest) {
    return tl::unexpected(
        s.fail(ErrorCode::kChecksumMismatch, op,
               "body hashes to " + m.digest + ", registry says " + sanitize(claimed)));
  }
  json::Json doc = json::parse_untrusted(m.body);
  if (!doc.is_object()) {
    return tl::unexpected(s.fail(ErrorCode::kIo, op, "the manifest is not a JSON object"));
  }
  std::string type = r->header("Content-Type");
  type = type.substr(0, type.find(';'));
  while (!type.empty() && type.back() == ' ') type.pop_back();
  if (type.empty() || type == "application/json" || type == "application/octet-stream" ||
      type == "text/plain") {
    type = json::string_or(doc, "mediaType", type);
  }
  m.media_type = sanitize(type);
  return m;
}

Result<std::string> RegistryClient::put_manifest(const std::string& reference,
                                                 std::string_view media_type,
                                                 std::string_view body) {
  State& s = *state_;
  const bool by_digest = is_valid_digest(reference);
  const std::string op = "put manifest " + sanitize(reference);
  if (!by_digest && !is_valid_tag(reference)) return s.bad_arg(op, "bad reference");
  if (body.size() > kMaxRegistryManifestBytes) return s.bad_arg(op, "manifest larger than 4 MiB");
  if (media_type.empty() || media_type.size() > 255 || !printable(media_type)) {
    return s.bad_arg(op, "bad media type");
  }
  std::string digest = "sha256:" + sha256_hex(body);
  if (by_digest && digest != reference) {
    return tl::unexpected(s.fail(ErrorCode::kChecksumMismatch, op, "body hashes to " + digest));
  }
  Call put("PUT", s.path("manifests", reference), body);
  put.headers.emplace("Content-Type", std::string(media_type));
  auto r = s.round_trip(s.opts.endpoint, put, op, &s.push_scope, true);
  if (!r) return tl::unexpected(r.error());
  if (r->status / 100 != 2) return tl::unexpected(s.http_error(op, *r));
  std::string claimed = r->header("Docker-Content-Digest");
  if (!claimed.empty() && claimed != digest) {
    return tl::unexpected(s.fail(ErrorCode::kChecksumMismatch, op,
                                 "registry stored " + sanitize(claimed) + ", we sent " + digest));
  }
  return digest;
}

}  // namespace forkd::hub

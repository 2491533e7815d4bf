#pragma once
// A client of one repository on an OCI registry (distribution spec v1.1): blobs and manifests.
//
// Errors name the registry, the repository and the operation, with the HTTP status and the
// start of the registry's error body (printable ASCII only). Codes: 401/403 kFailedPrecondition
// ("authentication failed"), 404 kNotFound, no answer in time kTimeout, 429/5xx and lost
// connections kUnavailable, anything else kIo (kChecksumMismatch where a digest is checked).
// On 401 the client answers the WWW-Authenticate challenge (Basic, or Bearer via the token
// service) and retries once. Reads, manifest PUTs and upload starts are retried up to 3 times on
// 429/5xx/lost connections (backoff 0.2, 0.5, 1 s); timeouts are not retried. Every request is
// bounded in time (connect/read timeouts, plus a whole-request deadline for everything but blob
// bodies) and in size (manifests 4 MiB, token replies and error bodies 64 KiB).
//
// Thread-safe: operations may run concurrently; connections are pooled and kept alive, bearer
// tokens are cached per scope for the client's life.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "hub/oci_ref.h"
#include "hub/registry_auth.h"

namespace forkd::hub {

inline constexpr size_t kMaxRegistryManifestBytes = 4u << 20;

inline constexpr std::string_view kOciManifestType = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciIndexType = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kDockerManifestType =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerListType =
    "application/vnd.docker.distribution.manifest.list.v2+json";

struct RegistryClientOptions {
  HttpEndpoint endpoint;  // registry_endpoint(ref, plain_http)
  std::string repository;
  std::optional<Credentials> credentials;  // none: anonymous (token services may still grant pull)
  std::string ca_file;                     // PEM CA bundle for https; empty: the system's CAs
  // Set (from any thread) to end the client's work: the request in flight is stopped within
  // about 100 ms and every call from then on fails with kCancelled. Null: never cancelled.
  std::shared_ptr<std::atomic<bool>> cancel;
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds read_timeout{60'000};  // per read/write; also bounds small replies
  std::vector<std::chrono::milliseconds> retry_backoff{std::chrono::milliseconds(200),
                                                       std::chrono::milliseconds(500),
                                                       std::chrono::milliseconds(1000)};
};

struct Manifest {
  std::string media_type;  // Content-Type without parameters, else the body's mediaType
  std::string body;        // the exact bytes, as digested
  std::string digest;      // "sha256:<hex of body>"
};

class RegistryClient {
 public:
  // kInvalidArgument for a bad repository name, scheme or host, or an unreadable ca_file.
  static Result<RegistryClient> create(RegistryClientOptions options);
  RegistryClient(RegistryClient&&) noexcept;
  RegistryClient& operator=(RegistryClient&&) noexcept;
  ~RegistryClient();

  // HEAD /v2/NAME/blobs/DIGEST: true on 200, false on 404.
  Result<bool> blob_exists(const std::string& digest);

  // Monolithic upload: POST /v2/NAME/blobs/uploads/, then PUT data to the returned Location with
  // ?digest=. The registry checks the digest. The whole pair is retried on 429/5xx/lost
  // connections. data must stay valid for the call.
  Status push_blob(const std::string& digest, std::string_view data);

  // Cross-repository mount from from_repo on the same registry. OK when the registry mounted it
  // (201); kNotFound when it did not (202: the upload session it opened is cancelled), so the
  // caller uploads with push_blob.
  Status mount_blob(const std::string& digest, const std::string& from_repo);

  // Streams bytes [offset, expected_size) of the blob to sink, in pieces, in order, each exactly
  // once, never buffering the whole blob. Redirects to storage are followed (without our
  // Authorization when they leave the registry's origin). With offset > 0 a Range request is sent;
  // a registry that ignores it (200 instead of 206) is handled here: the first offset bytes of
  // its reply are skipped, so the caller never restarts. More bytes than expected_size - offset
  // abort the transfer (kIo); a short body is kIo "truncated" and the caller may resume from the
  // bytes it received. A sink error aborts and is returned as is. Retried only before the first
  // byte reached sink. The caller checks the digest.
  Status fetch_blob(const std::string& digest, uint64_t expected_size, uint64_t offset,
                    const std::function<Status(std::string_view)>& sink);

  // A small blob (a config) read whole: exactly size bytes hashing to digest, else
  // kChecksumMismatch naming `what` ("config", "blob"). The caller bounds size beforehand.
  Result<std::string> fetch_small_blob(const std::string& digest, uint64_t size,
                                       std::string_view what);

  // GET /v2/NAME/manifests/REFERENCE (a tag or a digest), accepting OCI and Docker manifests
  // and indexes. The body must be a JSON object of at most 4 MiB. When reference is a digest, or
  // the registry sends Docker-Content-Digest, the body must hash to it (kChecksumMismatch).
  Result<Manifest> get_manifest(const std::string& reference);

  // PUT /v2/NAME/manifests/REFERENCE; returns "sha256:<hex of body>", after checking it against
  // a digest reference and the registry's Docker-Content-Digest (kChecksumMismatch).
  Result<std::string> put_manifest(const std::string& reference, std::string_view media_type,
                                   std::string_view body);

  const RegistryClientOptions& options() const;

 private:
  struct State;
  explicit RegistryClient(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace forkd::hub

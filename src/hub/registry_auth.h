#pragma once
// Registry credentials and the pure parts of registry authentication: where credentials come
// from, WWW-Authenticate challenges, token replies and the per-scope token cache. The HTTP
// exchanges themselves live in RegistryClient.
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "base/error.h"
#include "hub/oci_ref.h"

namespace forkd::hub {

// Secrets: never logged, never put in an error message.
struct Credentials {
  std::string username;
  std::string password;
};

// Credentials for a registry ("host" or "host:port", as OciRef::registry_address()), in order:
//  1. $FORKD_REGISTRY_USER and $FORKD_REGISTRY_PASSWORD (both must be set; one alone is an error);
//  2. the Docker-style config file auth_file, or $FORKD_REGISTRY_AUTH_FILE when auth_file is empty.
// nullopt when neither names credentials for this registry (anonymous access). Never from argv.
Result<std::optional<Credentials>> load_credentials(std::string_view registry,
                                                    const std::string& auth_file = {});

// Looks up registry in a config.json text: {"auths": {"HOST[:PORT]": {"auth": base64(user:pass)}}}
// or {..."username": ..., "password": ...}. Keys may also carry a scheme and a path
// ("https://host:port/v1/"). source names the file in messages (never the contents).
Result<std::optional<Credentials>> parse_auth_file(std::string_view text, std::string_view registry,
                                                   std::string_view source);

// "Basic base64(user:pass)", the Authorization header value.
std::string basic_authorization(const Credentials& creds);

// Standard base64 (with padding); decoding refuses anything else.
std::string base64_encode(std::string_view data);
std::optional<std::string> base64_decode(std::string_view text);

// One challenge of a WWW-Authenticate header.
struct AuthChallenge {
  enum class Scheme { kBasic, kBearer };
  Scheme scheme = Scheme::kBasic;
  std::string realm;    // Bearer: the token service URL (required)
  std::string service;  // Bearer: may be empty
  std::string scope;    // Bearer: may be empty or hold several space-separated scopes
};

// Parses `Basic realm="..."` or `Bearer realm="...",service="...",scope="..."`: the scheme is
// case-insensitive, values are tokens or quoted strings (with \-escapes and commas inside), and
// a header longer than 8 KiB is refused. Only the first challenge is read; schemes other than
// Basic and Bearer are kFailedPrecondition, malformed headers kProtocol.
Result<AuthChallenge> parse_www_authenticate(std::string_view header);

// The token service request for a Bearer challenge: its realm plus service= and one scope= for
// each space-separated scope of `scope` (what the operation needs) and of the challenge,
// deduplicated, at most 16. kProtocol when the realm is no http(s) URL; kFailedPrecondition for
// a plain-http realm of an https registry (credentials would travel in clear) unless loopback.
Result<HttpUrl> token_request_url(const AuthChallenge& challenge, const std::string& scope,
                                  bool registry_is_https);

// The token of a token service's JSON reply ("token", else "access_token"). kProtocol when the
// reply is not JSON, has neither, or the token is not a header-safe string of at most 16 KiB.
Result<std::string> parse_token_reply(std::string_view body);

// Bearer tokens by scope, kept for the owning client's life. Thread-safe.
class TokenCache {
 public:
  std::optional<std::string> get(const std::string& scope) const;
  void put(const std::string& scope, std::string token);

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::string> tokens_;
};

}  // namespace forkd::hub

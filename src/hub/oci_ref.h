#pragma once
// References to OCI registry content ("127.0.0.1:5000/tags/python:v1") and the small pieces of
// URL handling the registry client needs. Pure functions over untrusted text: no I/O.
#include <cstdint>
#include <string>
#include <string_view>

#include "base/error.h"

namespace forkd::hub {

// A parsed `HOST[:PORT]/NAME[:TAG][@sha256:HEX]`.
struct OciRef {
  std::string registry;    // host as written: a DNS name, an IPv4 address or "[v6]"
  uint16_t port = 0;       // 0: the scheme's default (443 or 80)
  std::string repository;  // "tags/python"
  std::string tag;         // "latest" when neither a tag nor a digest was given; else may be ""
  std::string digest;      // "" or "sha256:<64 lowercase hex>"

  // "host[:port]": the key of a credentials file and the HTTP Host header.
  std::string registry_address() const;
  // The digest when there is one, else the tag: what /v2/NAME/manifests/ takes.
  const std::string& reference() const { return digest.empty() ? tag : digest; }
  // The canonical text form, which parse_oci_ref accepts again.
  std::string to_string() const;
};

// Parses and validates per the OCI distribution spec. The registry host is required (a first
// component counts as a host only if it has '.' or ':' or is "localhost"). Errors are
// kInvalidArgument and quote the (truncated) input.
Result<OciRef> parse_oci_ref(std::string_view text);

// Grammar checks, exposed for the registry client's arguments.
bool is_valid_repository(std::string_view name);  // components joined by '/', <= 255 chars
bool is_valid_tag(std::string_view tag);          // [A-Za-z0-9_][A-Za-z0-9._-]{0,127}
bool is_valid_digest(std::string_view digest);    // sha256: + 64 lowercase hex

// localhost, 127.0.0.0/8, ::1 (bare or bracketed).
bool is_loopback_host(std::string_view host);

// "http" when plain_http is asked for, or for a loopback host unless want_tls (a CA file was
// given); "https" otherwise.
std::string_view registry_scheme(std::string_view host, bool plain_http, bool want_tls = false);

// Where to send HTTP requests: the registry itself, a token realm or an upload location.
struct HttpEndpoint {
  std::string scheme;  // "http" or "https"
  std::string host;    // as in a URL: IPv6 keeps its brackets
  uint16_t port = 0;   // 0: the scheme's default

  uint16_t effective_port() const { return port ? port : (scheme == "https" ? 443 : 80); }
  // "scheme://host:port", the form httplib::Client takes.
  std::string base_url() const;
  // "host" or "host:port" (port omitted when it is the scheme's default): the Host header.
  std::string host_header() const;
  bool same_origin(const HttpEndpoint& other) const;
};

HttpEndpoint registry_endpoint(const OciRef& ref, bool plain_http, bool want_tls = false);

// An absolute http(s) URL split into its endpoint and request target ("/path?query"; "/" when
// the path is empty; any fragment dropped). Refuses user info, control characters, spaces,
// non-ASCII bytes and more than 8 KiB.
struct HttpUrl {
  HttpEndpoint endpoint;
  std::string target;
};
Result<HttpUrl> parse_http_url(std::string_view url);

// s with every byte outside [A-Za-z0-9-._~] percent-encoded (a query parameter's value).
std::string percent_encode(std::string_view s);

}  // namespace forkd::hub

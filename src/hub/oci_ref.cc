#include "hub/oci_ref.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "base/files.h"

namespace forkd::hub {

namespace {

constexpr size_t kMaxRefBytes = 4096;
constexpr size_t kMaxUrlBytes = 8192;
constexpr size_t kMaxRepositoryBytes = 255;
constexpr std::string_view kRefExample =
    "use HOST[:PORT]/NAME:TAG such as 127.0.0.1:5000/tags/python:v1";

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_alnum(char c) { return is_lower_alnum(c) || (c >= 'A' && c <= 'Z'); }
char to_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// The input for an error message: at most 200 bytes, control and non-ASCII bytes as '?'.
std::string quoted_input(std::string_view text) {
  std::string out = "\"";
  for (char c : text.substr(0, 200)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (text.size() > 200) out += "...";
  return out + "\"";
}

// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
bool is_valid_component(std::string_view c) {
  size_t i = 0;
  while (true) {
    size_t run = i;
    while (i < c.size() && is_lower_alnum(c[i])) ++i;
    if (i == run) return false;  // every separator sits between alphanumeric runs
    if (i == c.size()) return true;
    if (c[i] == '.') {
      ++i;
    } else if (c[i] == '_') {
      ++i;
      if (i < c.size() && c[i] == '_') ++i;
    } else if (c[i] == '-') {
      while (i < c.size() && c[i] == '-') ++i;
    } else {
      return false;
    }
  }
}

// A DNS name or IPv4 address (labels of [A-Za-z0-9-], not starting or ending with '-'), or a
// bracketed IPv6 address.
bool is_valid_host(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']' || host.size() > 2 + INET6_ADDRSTRLEN) return false;
    std::string inner(host.substr(1, host.size() - 2));
    in6_addr addr;
    return inet_pton(AF_INET6, inner.c_str(), &addr) == 1;
  }
  size_t start = 0;
  while (true) {
    size_t dot = host.find('.', start);
    std::string_view label = host.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      if (!is_alnum(c) && c != '-') return false;
    }
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

// "host[:port]" with the port 1..65535; a bare IPv6 address (several ':') is refused.
Status parse_host_port(std::string_view authority, std::string& host, uint16_t& port) {
  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return make_error(ErrorCode::kInvalidArgument, "unterminated '[' in host");
    }
    host = std::string(authority.substr(0, close + 1));
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return make_error(ErrorCode::kInvalidArgument, "junk after ']'");
      port_text = rest.substr(1);
      if (port_text.empty()) return make_error(ErrorCode::kInvalidArgument, "empty port");
    }
  } else {
    size_t colon = authority.find(':');
    host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) return make_error(ErrorCode::kInvalidArgument, "empty port");
    }
  }
  if (!is_valid_host(host)) {
    return make_error(ErrorCode::kInvalidArgument, "bad registry host " + quoted_input(host));
  }
  port = 0;
  if (!port_text.empty()) {
    uint32_t value = 0;
    if (port_text.size() > 5) return make_error(ErrorCode::kInvalidArgument, "bad port");
    for (char c : port_text) {
      if (c < '0' || c > '9') return make_error(ErrorCode::kInvalidArgument, "bad port");
      value = value * 10 + static_cast<uint32_t>(c - '0');
    }
    if (value == 0 || value > 65535) {
      return make_error(ErrorCode::kInvalidArgument, "port out of range");
    }
    port = static_cast<uint16_t>(value);
  }
  return {};
}

}  // namespace

std::string OciRef::registry_address() const {
  return port ? registry + ":" + std::to_string(port) : registry;
}

std::string OciRef::to_string() const {
  std::string out = registry_address() + "/" + repository;
  if (!tag.empty()) out += ":" + tag;
  if (!digest.empty()) out += "@" + digest;
  return out;
}

bool is_valid_repository(std::string_view name) {
  if (name.empty() || name.size() > kMaxRepositoryBytes) return false;
  size_t start = 0;
  while (true) {
    size_t slash = name.find('/', start);
    std::string_view comp =
        name.substr(start, slash == std::string_view::npos ? slash : slash - start);
    if (!is_valid_component(comp)) return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

bool is_valid_tag(std::string_view tag) {
  if (tag.empty() || tag.size() > 128) return false;
  if (!is_alnum(tag[0]) && tag[0] != '_') return false;
  return std::all_of(tag.begin() + 1, tag.end(),
                     [](char c) { return is_alnum(c) || c == '_' || c == '.' || c == '-'; });
}

bool is_valid_digest(std::string_view digest) {
  constexpr std::string_view kPrefix = "sha256:";
  if (digest.size() != kPrefix.size() + 64 || digest.substr(0, kPrefix.size()) != kPrefix) {
    return false;
  }
  return is_lower_hex(digest.substr(kPrefix.size()), 64);
}

Result<OciRef> parse_oci_ref(std::string_view text) {
  auto fail = [&](const std::string& why) {
    return make_error(ErrorCode::kInvalidArgument, "reference " + quoted_input(text) + ": " + why);
  };
  if (text.empty()) return fail("empty; " + std::string(kRefExample));
  if (text.size() > kMaxRefBytes) {
    return fail("longer than " + std::to_string(kMaxRefBytes) + " bytes");
  }
  size_t slash = text.find('/');
  std::string_view first = text.substr(0, slash);
  bool has_host = slash != std::string_view::npos &&
                  (first.find_first_of(".:") != std::string_view::npos || first == "localhost");
  if (!has_host) {
    return fail("no registry host (forkd needs an explicit one); " + std::string(kRefExample));
  }
  OciRef ref;
  if (auto st = parse_host_port(first, ref.registry, ref.port); !st) {
    return fail(st.error().message());
  }
  std::string_view rest = text.substr(slash + 1);
  if (size_t at = rest.find('@'); at != std::string_view::npos) {
    std::string_view digest = rest.substr(at + 1);
    if (!is_valid_digest(digest)) {
      return fail("bad digest " + quoted_input(digest) +
                  " (want sha256: and 64 lowercase hex digits)");
    }
    ref.digest = std::string(digest);
    rest = rest.substr(0, at);
  }
  size_t colon = rest.rfind(':');
  size_t last_slash = rest.rfind('/');
  if (colon != std::string_view::npos &&
      (last_slash == std::string_view::npos || colon > last_slash)) {
    std::string_view tag = rest.substr(colon + 1);
    if (!is_valid_tag(tag)) {
      return fail("bad tag " + quoted_input(tag) + " (want [A-Za-z0-9_][A-Za-z0-9._-]{0,127})");
    }
    ref.tag = std::string(tag);
    rest = rest.substr(0, colon);
  }
  if (!is_valid_repository(rest)) {
    return fail("bad repository name " + quoted_input(rest) +
                " (lowercase letters and digits, components joined by '/', separators '.', '_', "
                "'__' or '-' between them, at most 255 bytes)");
  }
  ref.repository = std::string(rest);
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

bool is_loopback_host(std::string_view host) {
  std::string h(host);
  std::transform(h.begin(), h.end(), h.begin(), to_lower);
  if (h == "localhost") return true;
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  in_addr v4;
  if (inet_pton(AF_INET, h.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, h.c_str(), &v6) == 1) {
    return std::memcmp(&v6, &in6addr_loopback, sizeof(v6)) == 0;
  }
  return false;
}

std::string_view registry_scheme(std::string_view host, bool plain_http, bool want_tls) {
  return plain_http || (is_loopback_host(host) && !want_tls) ? "http" : "https";
}

std::string HttpEndpoint::base_url() const {
  return scheme + "://" + host + ":" + std::to_string(effective_port());
}

std::string HttpEndpoint::host_header() const {
  uint16_t def = scheme == "https" ? 443 : 80;
  return port == 0 || port == def ? host : host + ":" + std::to_string(port);
}

bool HttpEndpoint::same_origin(const HttpEndpoint& other) const {
  auto lower = [](std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), to_lower);
    return s;
  };
  return scheme == other.scheme && lower(host) == lower(other.host) &&
         effective_port() == other.effective_port();
}

HttpEndpoint registry_endpoint(const OciRef& ref, bool plain_http, bool want_tls) {
  return HttpEndpoint{std::string(registry_scheme(ref.registry, plain_http, want_tls)),
                      ref.registry, ref.port};
}

Result<HttpUrl> parse_http_url(std::string_view url) {
  auto fail = [&](const std::string& why) {
    return make_error(ErrorCode::kInvalidArgument, "URL " + quoted_input(url) + ": " + why);
  };
  if (url.size() > kMaxUrlBytes) return fail("longer than 8 KiB");
  for (char c : url) {
    if (c <= 0x20 || c >= 0x7f) return fail("control, space or non-ASCII byte");
  }
  HttpUrl out;
  size_t sep = url.find("://");
  if (sep == std::string_view::npos) return fail("not absolute");
  std::string scheme(url.substr(0, sep));
  std::transform(scheme.begin(), scheme.end(), scheme.begin(), to_lower);
  if (scheme != "http" && scheme != "https") return fail("scheme is not http or https");
  out.endpoint.scheme = scheme;
  std::string_view rest = url.substr(sep + 3);
  size_t end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, end);
  if (authority.find('@') != std::string_view::npos) return fail("user info is not allowed");
  if (auto st = parse_host_port(authority, out.endpoint.host, out.endpoint.port); !st) {
    return fail(st.error().message());
  }
  std::string_view target = end == std::string_view::npos ? "" : rest.substr(end);
  target = target.substr(0, target.find('#'));
  out.target =
      target.empty() || target.front() != '/' ? "/" + std::string(target) : std::string(target);
  return out;
}

std::string percent_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (is_alnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace forkd::hub

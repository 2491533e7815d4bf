#include "hub/registry_auth.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstdlib>
#include <set>

#include "base/files.h"
#include "base/json_get.h"

namespace forkd::hub {

namespace {

constexpr size_t kMaxAuthFileBytes = 1u << 20;
constexpr size_t kMaxChallengeBytes = 8u << 10;
constexpr size_t kMaxTokenBytes = 16u << 10;

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; });
  return out;
}

// An auths key reduced to host[:port]: "https://Host:5000/v1/" -> "host:5000".
std::string normalize_registry_key(std::string_view key) {
  std::string k = lower(key);
  for (std::string_view prefix : {"https://", "http://"}) {
    if (k.rfind(prefix, 0) == 0) k.erase(0, prefix.size());
  }
  if (size_t slash = k.find('/'); slash != std::string::npos) k.resize(slash);
  return k;
}

// RFC 7230 tchar.
bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

}  // namespace

Result<std::optional<Credentials>> load_credentials(std::string_view registry,
                                                    const std::string& auth_file) {
  const char* user = std::getenv("FORKD_REGISTRY_USER");
  const char* pass = std::getenv("FORKD_REGISTRY_PASSWORD");
  if (user || pass) {
    if (!user || !pass) {
      return make_error(ErrorCode::kInvalidArgument,
                        "registry credentials: set both FORKD_REGISTRY_USER and "
                        "FORKD_REGISTRY_PASSWORD, or neither");
    }
    if (*user == '\0') {
      return make_error(ErrorCode::kInvalidArgument,
                        "registry credentials: FORKD_REGISTRY_USER is empty");
    }
    return Credentials{user, pass};
  }
  std::string path = auth_file;
  if (path.empty()) {
    const char* env = std::getenv("FORKD_REGISTRY_AUTH_FILE");
    if (env) path = env;
  }
  if (path.empty()) return std::optional<Credentials>();
  auto text = read_file(path, kMaxAuthFileBytes);
  if (!text) return tl::unexpected(text.error().wrap("registry auth file " + path));
  return parse_auth_file(*text, registry, path);
}

Result<std::optional<Credentials>> parse_auth_file(std::string_view text, std::string_view registry,
                                                   std::string_view source) {
  auto fail = [&](const std::string& why) {
    return make_error(ErrorCode::kInvalidArgument,
                      "registry auth file " + std::string(source) + ": " + why);
  };
  json::Json doc = json::parse_untrusted(text);
  if (doc.is_discarded() || !doc.is_object()) return fail("not a JSON object");
  const json::Json* auths = json::member(doc, "auths");
  if (!auths) return std::optional<Credentials>();
  if (!auths->is_object()) return fail("\"auths\" is not an object");
  const std::string want = lower(registry);
  const json::Json* entry = nullptr;
  for (auto it = auths->begin(); it != auths->end(); ++it) {
    if (lower(it.key()) == want) {
      entry = &it.value();  // an exact key beats a normalized one
      break;
    }
    if (!entry && normalize_registry_key(it.key()) == want) entry = &it.value();
  }
  if (!entry) return std::optional<Credentials>();
  const std::string where = "entry for " + std::string(registry);
  if (!entry->is_object()) return fail(where + " is not an object");
  if (auto auth = json::get_string(*entry, "auth"); auth && !auth->empty()) {
    auto decoded = base64_decode(*auth);
    if (!decoded) return fail(where + ": \"auth\" is not base64");
    size_t colon = decoded->find(':');
    if (colon == std::string::npos || colon == 0) {
      return fail(where + ": \"auth\" does not decode to user:password");
    }
    return Credentials{decoded->substr(0, colon), decoded->substr(colon + 1)};
  }
  auto user = json::get_string(*entry, "username");
  auto pass = json::get_string(*entry, "password");
  if (user && pass && !user->empty()) return Credentials{*user, *pass};
  return fail(where +
              " has neither \"auth\" nor \"username\" and \"password\" (credential "
              "helpers and identity tokens are not supported)");
}

std::string base64_encode(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0 || text.size() > (1u << 20)) return std::nullopt;
  size_t pad = 0;
  while (pad < 2 && pad < text.size() && text[text.size() - 1 - pad] == '=') ++pad;
  for (size_t i = 0; i < text.size() - pad; ++i) {
    char c = text[i];
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/';
    if (!ok) return std::nullopt;
  }
  if (text.empty()) return std::string();
  std::string out(text.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < 0 || static_cast<size_t>(n) < pad) return std::nullopt;
  out.resize(static_cast<size_t>(n) - pad);  // EVP_DecodeBlock counts the padding as zero bytes
  return out;
}

std::string basic_authorization(const Credentials& creds) {
  return "Basic " + base64_encode(creds.username + ":" + creds.password);
}

Result<AuthChallenge> parse_www_authenticate(std::string_view header) {
  auto malformed = [](const std::string& why) {
    return make_error(ErrorCode::kProtocol, "malformed WWW-Authenticate header: " + why);
  };
  if (header.size() > kMaxChallengeBytes) return malformed("longer than 8 KiB");
  size_t i = 0;
  auto skip_ows = [&] {
    while (i < header.size() && (header[i] == ' ' || header[i] == '\t')) ++i;
  };
  auto read_token = [&] {
    size_t start = i;
    while (i < header.size() && is_tchar(header[i])) ++i;
    return header.substr(start, i - start);
  };
  skip_ows();
  std::string scheme = lower(read_token());
  AuthChallenge out;
  if (scheme == "basic") {
    out.scheme = AuthChallenge::Scheme::kBasic;
  } else if (scheme == "bearer") {
    out.scheme = AuthChallenge::Scheme::kBearer;
  } else if (scheme.empty()) {
    return malformed("no scheme");
  } else {
    std::string shown = scheme.substr(0, 32);
    return make_error(ErrorCode::kFailedPrecondition,
                      "registry asks for unsupported authentication scheme \"" + shown +
                          "\" (forkd speaks Basic and Bearer)");
  }
  std::map<std::string, std::string> params;
  while (true) {
    skip_ows();
    while (i < header.size() && (header[i] == ',' || header[i] == ' ' || header[i] == '\t')) ++i;
    if (i >= header.size()) break;
    std::string name = lower(read_token());
    if (name.empty()) return malformed("expected a parameter name");
    skip_ows();
    if (i >= header.size() || header[i] != '=') break;  // the next challenge: only one is read
    ++i;
    skip_ows();
    std::string value;
    if (i < header.size() && header[i] == '"') {
      ++i;
      bool closed = false;
      while (i < header.size()) {
        char c = header[i++];
        if (c == '"') {
          closed = true;
          break;
        }
        if (c == '\\' && i < header.size()) c = header[i++];
        value += c;
      }
      if (!closed) return malformed("unterminated quoted string");
    } else {
      value = std::string(read_token());
    }
    params.emplace(name, std::move(value));
    skip_ows();
    if (i < header.size() && header[i] != ',') return malformed("expected ',' between parameters");
  }
  out.realm = params["realm"];
  out.service = params["service"];
  out.scope = params["scope"];
  if (out.scheme == AuthChallenge::Scheme::kBearer && out.realm.empty()) {
    return malformed("Bearer challenge without a realm");
  }
  return out;
}

Result<HttpUrl> token_request_url(const AuthChallenge& challenge, const std::string& scope,
                                  bool registry_is_https) {
  auto url = parse_http_url(challenge.realm);
  if (!url) return make_error(ErrorCode::kProtocol, "token realm: " + url.error().message());
  if (url->endpoint.scheme == "http" && registry_is_https &&
      !is_loopback_host(url->endpoint.host)) {
    return make_error(ErrorCode::kFailedPrecondition,
                      "token realm " + url->endpoint.base_url() +
                          " is plain http for an https registry; refusing to send credentials");
  }
  char sep = url->target.find('?') == std::string::npos ? '?' : '&';
  auto add = [&](std::string_view key, std::string_view value) {
    url->target += sep + std::string(key) + "=" + percent_encode(value);
    sep = '&';
  };
  if (!challenge.service.empty()) add("service", challenge.service);
  std::set<std::string> seen;
  for (const std::string& list : {scope, challenge.scope}) {
    for (size_t pos = 0; pos < list.size();) {
      size_t space = std::min(list.find(' ', pos), list.size());
      std::string one = list.substr(pos, space - pos);
      if (!one.empty() && seen.size() < 16 && seen.insert(one).second) add("scope", one);
      pos = space + 1;
    }
  }
  return url;
}

Result<std::string> parse_token_reply(std::string_view body) {
  json::Json doc = json::parse_untrusted(body);
  if (doc.is_discarded() || !doc.is_object()) {
    return make_error(ErrorCode::kProtocol, "token service answered with something not JSON");
  }
  auto token = json::get_string(doc, "token");
  if (!token || token->empty()) token = json::get_string(doc, "access_token");
  if (!token || token->empty()) {
    return make_error(ErrorCode::kProtocol,
                      "token service reply has neither \"token\" nor \"access_token\"");
  }
  bool safe =
      token->size() <= kMaxTokenBytes &&
      std::all_of(token->begin(), token->end(), [](char c) { return c > 0x20 && c < 0x7f; });
  if (!safe) {
    return make_error(ErrorCode::kProtocol,
                      "token service returned a token that is too long or not printable ASCII");
  }
  return *token;
}

std::optional<std::string> TokenCache::get(const std::string& scope) const {
  std::lock_guard lock(mu_);
  auto it = tokens_.find(scope);
  if (it == tokens_.end()) return std::nullopt;
  return it->second;
}

void TokenCache::put(const std::string& scope, std::string token) {
  std::lock_guard lock(mu_);
  tokens_[scope] = std::move(token);
}

}  // namespace forkd::hub

#include "daemon/auth.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>

#include "base/files.h"

namespace forkd::daemon {

namespace {

constexpr std::array<std::string_view, 12> kPlaceholders = {
    "changeme", "change-me", "change_me", "token",      "secret", "password",
    "example",  "replace",   "xxxx",      "your-token", "test",   "default"};

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

}  // namespace

Status check_token_strength(std::string_view token) {
  if (token.size() < kMinTokenLength) {
    return make_error(ErrorCode::kInvalidArgument, "token is " + std::to_string(token.size()) +
                                                       " characters; at least " +
                                                       std::to_string(kMinTokenLength) +
                                                       " are required (e.g. openssl rand -hex 32)");
  }
  if (std::all_of(token.begin(), token.end(), [&](char c) { return c == token[0]; })) {
    return make_error(ErrorCode::kInvalidArgument,
                      "token is one repeated character; use a random one (openssl rand -hex 32)");
  }
  std::string low = lower(token);
  for (auto p : kPlaceholders) {
    if (low.find(p) != std::string::npos) {
      return make_error(ErrorCode::kInvalidArgument,
                        "token looks like a placeholder (contains '" + std::string(p) +
                            "'); use a random one (openssl rand -hex 32)");
    }
  }
  return {};
}

Result<std::string> load_token(const std::string& path) {
  // The token is a password: a file others can read gives them the daemon (every sandbox).
  auto fd = open_file(path, O_RDONLY);
  if (!fd) return tl::unexpected(fd.error().wrap("token file " + path));
  struct stat info {};
  if (::fstat(fd->get(), &info) != 0) return errno_error(errno, "token file " + path);
  if ((info.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(info.st_mode & 07777));
    return make_error(ErrorCode::kInvalidArgument,
                      "token file " + path + " is readable by group or others (mode " + mode +
                          "); restrict it with: chmod 600 " + path);
  }
  auto text = read_file(path, 4096);
  if (!text) return tl::unexpected(text.error().wrap("token file " + path));
  std::string_view t = *text;
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.front()))) t.remove_prefix(1);
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.remove_suffix(1);
  for (char c : t) {
    if (!std::isgraph(static_cast<unsigned char>(c))) {
      return make_error(ErrorCode::kInvalidArgument,
                        "token file " + path + ": token must be printable ASCII, one line");
    }
  }
  if (auto st = check_token_strength(t); !st) {
    return tl::unexpected(st.error().wrap("weak token in " + path));
  }
  return std::string(t);
}

bool bearer_matches(std::string_view header, std::string_view token) {
  // Hashing first makes the comparison independent of where the strings differ and of the
  // length of the presented value.
  std::string want = sha256_hex(std::string("Bearer ") + std::string(token));
  std::string got = sha256_hex(header);
  return want.size() == got.size() && CRYPTO_memcmp(want.data(), got.data(), want.size()) == 0;
}

bool is_loopback_host(std::string_view host) {
  if (host == "localhost") return true;
  std::string h(host);
  if (h.size() > 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  in_addr v4{};
  if (::inet_pton(AF_INET, h.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (::inet_pton(AF_INET6, h.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

}  // namespace forkd::daemon

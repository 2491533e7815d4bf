#include "base/paths.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#ifndef FORKD_SOURCE_DIR
#define FORKD_SOURCE_DIR ""
#endif
#ifndef FORKD_VERSION
#define FORKD_VERSION "0.0.0"
#endif

namespace forkd {

namespace {
std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : std::string();
}
}  // namespace

std::string forkd_home() {
  std::string home = env_or_empty("FORKD_HOME");
  // Absolute: QEMUs are found by the paths in their command lines, and a relative home would
  // match any path with that tail.
  if (!home.empty()) {
    std::error_code ec;
    auto abs = std::filesystem::absolute(home, ec);
    if (ec) return home;
    home = abs.lexically_normal().string();
    while (home.size() > 1 && home.back() == '/') home.pop_back();
    return home;
  }
  if (::geteuid() == 0) return "/var/lib/forkd";
  std::string user_home = env_or_empty("HOME");
  if (user_home.empty()) user_home = "/tmp";
  return user_home + "/.local/share/forkd";
}

std::string exe_dir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return ".";
  return p.parent_path().string();
}

std::string assets_dir() {
  std::string env = env_or_empty("FORKD_ASSETS_DIR");
  if (!env.empty()) return env;
  std::error_code ec;
  auto beside = std::filesystem::path(exe_dir()) / ".." / "guest";
  if (std::filesystem::exists(beside / "kernel" / "build.sh", ec)) {
    return std::filesystem::weakly_canonical(beside, ec).string();
  }
  return std::string(FORKD_SOURCE_DIR) + "/guest";
}

std::string agent_binary_path() {
  std::string env = env_or_empty("FORKD_AGENT");
  if (!env.empty()) return env;
  return exe_dir() + "/forkd-agent";
}

std::string_view forkd_version() { return FORKD_VERSION; }

bool is_safe_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace forkd

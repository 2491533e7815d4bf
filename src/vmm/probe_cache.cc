#include "vmm/probe_cache.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <vector>

#include "base/files.h"
#include "base/paths.h"
#include "base/subprocess.h"
#include "vmm/lean_qemu.h"

namespace forkd::vmm {

namespace {

using Json = nlohmann::json;

constexpr int kSchema = 2;
constexpr size_t kMaxCacheBytes = 64 * 1024;

// One line per file: path, device, inode, size, mode, owner, modification and change times (ns).
// lstat first, so a symlink swapped for another shows, then its target (only the target when
// follow_only: /proc/self/exe is a new link in every process).
std::string identity(const std::string& path, bool follow_only = false) {
  std::string out = path;
  struct stat st {};
  for (bool follow : {follow_only, true}) {
    if ((follow ? ::stat(path.c_str(), &st) : ::lstat(path.c_str(), &st)) != 0) {
      return out + " missing\n";
    }
    auto ns = [](const timespec& t) {
      return std::to_string(t.tv_sec * 1'000'000'000LL + t.tv_nsec);
    };
    out += " " + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" +
           std::to_string(st.st_size) + ":" + std::to_string(st.st_mode) + ":" +
           std::to_string(st.st_uid) + ":" + ns(st.st_mtim) + ":" + ns(st.st_ctim);
    if (!S_ISLNK(st.st_mode)) break;
  }
  return out + "\n";
}

// A directory above the stubs: what the probe checks of it (owner and mode), and which directory
// it is; not its times, which change with every file created in it.
std::string owner_and_mode(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return path + " missing\n";
  return path + " " + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" +
         std::to_string(st.st_mode) + ":" + std::to_string(st.st_uid) + "\n";
}

std::string env_line(const char* name) {
  const char* v = std::getenv(name);
  return std::string(name) + "=" + (v ? v : "") + "\n";
}

}  // namespace

std::string qemu_probe_key(const std::string& binary, const std::string& lean_dir) {
  std::string path = binary.find('/') != std::string::npos ? binary : find_in_path(binary);
  if (path.empty()) return {};
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  std::string key = "schema " + std::to_string(kSchema) + "\n";
  key += identity(path);
  // forkd itself: a rebuild may probe differently.
  key += identity("/proc/self/exe", true);
  key += "lean " + identity(lean_dir);
  // Every directory above it too: the probe refuses stubs under one that others may write.
  for (std::string up = lean_dir; up.size() > 1;) {
    size_t slash = up.find_last_of('/');
    if (slash == std::string::npos) break;
    up = slash == 0 ? "/" : up.substr(0, slash);
    key += owner_and_mode(up);
  }
  // Its files, and those of the second set's directory in it.
  for (const std::string& dir : {lean_dir, lean_dir + "/" + kUnusedStubsDirName}) {
    std::vector<std::string> names = list_dir_names(dir);
    std::sort(names.begin(), names.end());
    for (const std::string& n : names) key += identity(dir + "/" + n);
  }
  key += env_line("LD_LIBRARY_PATH") + env_line("LD_PRELOAD") + env_line("PATH");
  return key;
}

std::optional<QemuProbe> load_qemu_probe(const std::string& file, const std::string& key) {
  if (key.empty()) return std::nullopt;
  auto text = read_file(file, kMaxCacheBytes);
  if (!text) return std::nullopt;
  Json j = Json::parse(*text, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  auto str = [&](const char* k) -> std::optional<std::string> {
    auto it = j.find(k);
    if (it == j.end() || !it->is_string()) return std::nullopt;
    return it->get<std::string>();
  };
  auto k = str("key"), dir = str("lean_dir"), reason = str("lean_reason"),
       lean_version = str("lean_version"), version = str("qemu_version");
  auto unused_reason = str("unused_reason");
  auto pmem = j.find("pmem_stub"), unused = j.find("unused_stubs");
  if (!k || *k != key || !dir || !reason || !lean_version || !version || pmem == j.end() ||
      !pmem->is_boolean() || unused == j.end() || !unused->is_boolean() || !unused_reason ||
      version->empty()) {
    return std::nullopt;
  }
  QemuProbe p;
  p.lean.dir = *dir;
  p.lean.reason = *reason;
  p.lean.version = *lean_version;
  p.lean.pmem_stub = pmem->get<bool>();
  p.lean.unused_stubs = unused->get<bool>();
  p.lean.unused_reason = *unused_reason;
  p.qemu_version = *version;
  return p;
}

void store_qemu_probe(const std::string& file, const std::string& key, const QemuProbe& p) {
  if (key.empty() || p.qemu_version.empty()) return;
  Json j = {{"key", key},
            {"lean_dir", p.lean.dir},
            {"lean_reason", p.lean.reason},
            {"lean_version", p.lean.version},
            {"pmem_stub", p.lean.pmem_stub},
            {"unused_stubs", p.lean.unused_stubs},
            {"unused_reason", p.lean.unused_reason},
            {"qemu_version", p.qemu_version}};
  std::string text = j.dump(2) + "\n";
  if (text.size() > kMaxCacheBytes) return;
  // A cache: replaced atomically, but not flushed (an empty file after a crash is probed again).
  (void)replace_file(file, text, 0600);
}

std::string qemu_probe_cache_path() { return forkd_home() + "/cache/qemu-probe.json"; }

}  // namespace forkd::vmm

#include "engine/disk_checks.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "store/snapshot_meta.h"

namespace forkd::engine {

bool file_directly_in(const std::string& dir, const std::string& path) {
  if (dir.empty() || path.size() <= dir.size() + 1) return false;
  if (path.compare(0, dir.size(), dir) != 0 || path[dir.size()] != '/') return false;
  std::string name = path.substr(dir.size() + 1);
  return name.find('/') == std::string::npos && name != "." && name != "..";
}

Result<std::optional<SpawnOptions::Credentials>> check_active_image(const std::string& source_dir,
                                                                    const std::string& path) {
  struct stat st {};
  std::string name = file_directly_in(source_dir, path) ? path.substr(source_dir.size() + 1) : "";
  bool overlay_name = name.rfind("overlay", 0) == 0 && name.size() >= 13 &&
                      name.compare(name.size() - 6, 6, ".qcow2") == 0;
  if (!overlay_name || ::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return make_error(ErrorCode::kQemuFailed, "the disk's active image " + path +
                                                  " is not a file of the sandbox's directory");
  }
  if (st.st_uid == ::geteuid()) return std::optional<SpawnOptions::Credentials>();
  return std::optional<SpawnOptions::Credentials>(SpawnOptions::Credentials{st.st_uid, st.st_gid});
}

Result<std::string> check_tag_base(const std::string& snapshots_root, const std::string& base) {
  std::error_code ec, ec_root;
  std::string path = std::filesystem::canonical(base, ec).string();
  std::string root = std::filesystem::canonical(snapshots_root, ec_root).string();
  auto slash = path.rfind('/');
  struct stat st {};
  if (ec || ec_root || slash == std::string::npos ||
      path.substr(slash + 1) != store::snapshot_file_name("base") ||
      !file_directly_in(root, path.substr(0, slash)) || ::lstat(path.c_str(), &st) != 0 ||
      !S_ISREG(st.st_mode)) {
    return make_error(ErrorCode::kQemuFailed,
                      "the disk's chain ends in " + base + ", not in a tag's base image");
  }
  return path;
}

}  // namespace forkd::engine

#include "engine/code_window.h"

#include <charconv>
#include <set>

#include "base/files.h"
#include "store/snapshot_store.h"
#include "vmm/code_pages.h"

namespace forkd::engine {
namespace {

constexpr size_t kMaxHintBytes = 64;

std::string windows_dir(const EngineConfig& cfg) { return cfg.home + "/cache/code-window"; }

std::string hint_name(const std::string& tag_dir, const store::SnapshotMeta& meta) {
  return sha256_hex(tag_dir + "\n" + meta.memory_sha256).substr(0, 32);
}

}  // namespace

std::string code_window_path(const EngineConfig& cfg, const std::string& tag_dir,
                             const store::SnapshotMeta& meta) {
  if (meta.memory_sha256.empty()) return "";
  return windows_dir(cfg) + "/" + hint_name(tag_dir, meta);
}

std::optional<int> read_code_window(const std::string& path) {
  if (path.empty()) return std::nullopt;
  auto text = read_file(path, kMaxHintBytes);
  if (!text) return std::nullopt;
  std::string_view s(*text);
  if (!s.empty() && s.back() == '\n') s.remove_suffix(1);
  int step = -1;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), step);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty() || step < 0 ||
      step >= vmm::kMaxCodeWindow) {
    return std::nullopt;
  }
  return step;
}

void note_code_window(const std::string& path, int step) {
  if (path.empty() || step < 0 || step >= vmm::kMaxCodeWindow) return;
  if (read_code_window(path) == step) return;
  const std::string dir = path.substr(0, path.rfind('/'));
  if (!make_dirs(dir)) return;
  (void)replace_file(path, std::to_string(step) + "\n");
}

std::vector<std::string> sweep_code_windows(const EngineConfig& cfg) {
  store::SnapshotStore snaps(cfg.home);
  std::set<std::string> wanted;
  for (const auto& meta : snaps.list()) {
    if (!meta.memory_sha256.empty()) wanted.insert(hint_name(snaps.dir(meta.tag), meta));
  }
  // replace_file's staging file (.staging.) may be a child's, still being written.
  std::vector<std::string> removed = remove_files_except(windows_dir(cfg), wanted, ".staging.");
  for (auto& name : removed) name = "cache/code-window/" + name;
  return removed;
}

}  // namespace forkd::engine

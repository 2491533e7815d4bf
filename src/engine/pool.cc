#include "engine/pool.h"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>

#include "base/files.h"
#include "base/paths.h"

namespace forkd::engine {

namespace {

constexpr int kMaxPoolSize = 256;

// The member file ties a pre-started QEMU to one version of a tag (its vmstate hash), so a tag
// replaced with --force never gets children from QEMUs mapping the old memory file.
Json member_json(const PrestartedVm& vm, const store::SnapshotMeta& meta) {
  return {{"id", vm.id},
          {"pid", vm.vm.pid()},
          {"tag", meta.tag},
          {"warm", vm.loaded},
          {"vmstate_sha256", meta.files.at("vmstate").sha256}};
}

void kill_member(const std::string& sandboxes, const Json& m) {
  if (m.contains("pid") && m["pid"].is_number_integer()) {
    pid_t pid = m["pid"].get<pid_t>();
    std::string id = m.value("id", "");
    auto cmd = read_file("/proc/" + std::to_string(pid) + "/cmdline", 1 << 20);
    if (is_safe_name(id) && cmd && cmd->find(sandboxes + "/" + id + "/") != std::string::npos) {
      // Waited for, so a drain that returned has really stopped its members.
      if (auto vm = vmm::VmProcess::adopt(pid)) {
        vm->terminate(std::chrono::milliseconds(0));
      } else {
        ::kill(pid, SIGKILL);
      }
    }
  }
  std::string id = m.value("id", "");
  if (is_safe_name(id)) (void)remove_tree(sandboxes + "/" + id);
}

}  // namespace

Pool::Pool(const EngineConfig& cfg) : cfg_(cfg), root_(cfg.home + "/pool") {}

std::vector<std::string> Pool::member_ids(const std::string& tag) const {
  std::vector<std::string> out;
  DIR* d = ::opendir(members_dir(tag).c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0) {
      std::string id = name.substr(0, name.size() - 5);
      if (is_safe_name(id)) out.push_back(id);
    }
  }
  ::closedir(d);
  return out;
}

std::optional<PrestartedVm> Pool::claim(const store::SnapshotMeta& meta,
                                        const std::string& tag_dir_path) {
  (void)tag_dir_path;
  for (const auto& id : member_ids(meta.tag)) {
    std::string file = members_dir(meta.tag) + "/" + id + ".json";
    std::string mine = file + ".claimed-" + std::to_string(::getpid());
    if (::rename(file.c_str(), mine.c_str()) != 0) continue;  // someone else took it
    auto text = read_file(mine, 1 << 16);
    ::unlink(mine.c_str());
    if (!text) continue;
    Json m = Json::parse(*text, nullptr, false);
    if (m.is_discarded() || !m.is_object()) continue;
    bool current =
        m.value("vmstate_sha256", "") == meta.files.at("vmstate").sha256 && m.value("id", "") == id;
    std::string dir = cfg_.sandboxes_dir() + "/" + id;
    auto cmd = read_file("/proc/" + std::to_string(m.value("pid", 0)) + "/cmdline", 1 << 20);
    bool alive = cmd && cmd->find(dir + "/") != std::string::npos;
    if (!current || !alive) {
      kill_member(cfg_.sandboxes_dir(), m);
      continue;
    }
    auto vm = vmm::VmProcess::adopt(m["pid"].get<pid_t>());
    if (!vm) {
      kill_member(cfg_.sandboxes_dir(), m);
      continue;
    }
    auto qmp = vmm::QmpClient::connect(dir + "/qmp.sock", std::chrono::seconds(2));
    if (!qmp) {
      kill_member(cfg_.sandboxes_dir(), m);
      continue;
    }
    return PrestartedVm{id, dir, std::move(*vm), std::move(*qmp), m.value("warm", false)};
  }
  return std::nullopt;
}

Status Pool::configure(const std::string& tag, PoolConfig config) {
  if (!is_safe_name(tag)) return make_error(ErrorCode::kInvalidArgument, "invalid tag");
  if (config.size < 0 || config.size > kMaxPoolSize) {
    return make_error(ErrorCode::kInvalidArgument,
                      "pool size must be 0.." + std::to_string(kMaxPoolSize));
  }
  FORKD_TRY(make_dirs(tag_dir(tag)));
  return write_file_atomic(tag_dir(tag) + "/config.json",
                           Json{{"size", config.size}, {"warm", config.warm}}.dump());
}

PoolConfig Pool::config(const std::string& tag) const {
  PoolConfig c;
  auto text = read_file(tag_dir(tag) + "/config.json", 4096);
  if (!text) return c;
  Json j = Json::parse(*text, nullptr, false);
  if (!j.is_object()) return c;
  if (j.contains("size") && j["size"].is_number_integer()) {
    c.size = std::clamp(j["size"].get<int>(), 0, kMaxPoolSize);
  }
  if (j.contains("warm") && j["warm"].is_boolean()) c.warm = j["warm"].get<bool>();
  return c;
}

Result<int> Pool::fill(const store::SnapshotMeta& meta, const std::string& tag_dir_path) {
  PoolConfig pc = config(meta.tag);
  int want = pc.size - static_cast<int>(member_ids(meta.tag).size());
  int started = 0;
  for (int i = 0; i < want; ++i) {
    auto pre = prestart_child(cfg_, meta, tag_dir_path);
    if (!pre) return tl::unexpected(pre.error().wrap("pool " + meta.tag));
    if (pc.warm) {
      if (auto st = warm_up_prestarted(*pre, tag_dir_path); !st) {
        pre->vm.terminate(std::chrono::milliseconds(1000));
        (void)remove_tree(pre->dir);
        return tl::unexpected(st.error().wrap("pool " + meta.tag + ": warm up"));
      }
    }
    FORKD_TRY(make_dirs(members_dir(meta.tag)));
    FORKD_TRY(write_file_atomic(members_dir(meta.tag) + "/" + pre->id + ".json",
                                member_json(*pre, meta).dump()));
    ++started;
  }
  return started;
}

int Pool::drain(const std::string& tag) {
  std::vector<std::string> tags;
  if (!tag.empty()) {
    tags.push_back(tag);
  } else if (DIR* d = ::opendir(root_.c_str())) {
    while (auto* e = ::readdir(d)) {
      if (is_safe_name(e->d_name)) tags.push_back(e->d_name);
    }
    ::closedir(d);
  }
  int n = 0;
  for (const auto& t : tags) {
    for (const auto& id : member_ids(t)) {
      std::string file = members_dir(t) + "/" + id + ".json";
      std::string mine = file + ".drain-" + std::to_string(::getpid());
      if (::rename(file.c_str(), mine.c_str()) != 0) continue;
      auto text = read_file(mine, 1 << 16);
      ::unlink(mine.c_str());
      Json m = text ? Json::parse(*text, nullptr, false) : Json();
      if (m.is_object()) kill_member(cfg_.sandboxes_dir(), m);
      ++n;
    }
  }
  return n;
}

std::vector<PoolStatus> Pool::status() const {
  std::vector<PoolStatus> out;
  DIR* d = ::opendir(root_.c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    std::string t = e->d_name;
    if (!is_safe_name(t)) continue;
    out.push_back({t, config(t), static_cast<int>(member_ids(t).size())});
  }
  ::closedir(d);
  return out;
}

}  // namespace forkd::engine

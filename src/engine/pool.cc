#include "engine/pool.h"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>

#include "base/dir_lock.h"
#include "base/files.h"
#include "base/json_get.h"
#include "base/paths.h"
#include "base/random.h"
#include "engine/registry.h"
#include "engine/sandbox_jail.h"

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
          {"jail", vm.jail},
          {"vmstate_sha256", meta.files.at("vmstate").sha256},
          {"collapse_code_pages", vm.collapse_code_pages},
          {"code_window", vm.code_window}};
}

void kill_member(const std::string& sandboxes, const Json& m) {
  if (auto member_pid = json::get_int<pid_t>(m, "pid")) {
    pid_t pid = *member_pid;
    std::string id = json::string_or(m, "id", "");
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
  std::string id = json::string_or(m, "id", "");
  if (is_safe_name(id)) (void)remove_run_dir(sandboxes + "/" + id);
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
    std::string dir = cfg_.sandboxes_dir() + "/" + id;
    // Locked before the member file goes: between the two, gc would otherwise see a run dir
    // with neither a member file nor a record, and reap it.
    auto lock = LockedDir::lock_existing(dir);
    if (!lock) continue;  // another claimer, or gc, has it
    std::string file = members_dir(meta.tag) + "/" + id + ".json";
    std::string mine = file + ".claimed-" + random_hex(4);
    if (::rename(file.c_str(), mine.c_str()) != 0) continue;  // someone else took it
    auto text = read_file(mine, 1 << 16);
    ::unlink(mine.c_str());
    if (!text) continue;
    Json m = json::parse_untrusted(*text);
    if (m.is_discarded() || !m.is_object()) continue;
    bool current = json::string_or(m, "vmstate_sha256", "") == meta.files.at("vmstate").sha256 &&
                   json::string_or(m, "id", "") == id;
    pid_t member_pid = json::int_or(m, "pid", 0);
    auto cmd = read_file("/proc/" + std::to_string(member_pid) + "/cmdline", 1 << 20);
    bool alive = cmd && cmd->find(dir + "/") != std::string::npos;
    if (!current || !alive) {
      kill_member(cfg_.sandboxes_dir(), m);
      continue;
    }
    auto vm = vmm::VmProcess::adopt(member_pid);
    if (!vm) {
      kill_member(cfg_.sandboxes_dir(), m);
      continue;
    }
    auto qmp = vmm::QmpClient::connect(dir + "/qmp.sock", std::chrono::seconds(2));
    if (!qmp) {
      kill_member(cfg_.sandboxes_dir(), m);
      continue;
    }
    return PrestartedVm{id,
                        dir,
                        std::move(*vm),
                        std::move(*qmp),
                        json::bool_or(m, "warm", false),
                        meta.has_nic(),  // started like every child of the tag
                        std::move(*lock),
                        m.contains("jail") ? m["jail"] : Json::object(),
                        json::bool_or(m, "collapse_code_pages", false),
                        json::int_or(m, "code_window", -1),
                        ""};  // its claim notes no hint: pool members start ahead of time
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
  Json j = json::parse_untrusted(*text);
  if (!j.is_object()) return c;
  if (j.contains("size") && j["size"].is_number_integer()) {
    c.size = std::clamp(j["size"].get<int>(), 0, kMaxPoolSize);
  }
  if (j.contains("warm") && j["warm"].is_boolean()) c.warm = j["warm"].get<bool>();
  return c;
}

Result<int> Pool::fill(const store::SnapshotMeta& meta, const std::string& tag_dir_path) {
  // One filler per tag at a time (two would both see the pool short and overfill it); a fill
  // already running does this one's work.
  FORKD_TRY(make_dirs(tag_dir(meta.tag)));
  auto fill_lock = FileLock::try_lock(tag_dir(meta.tag) + "/fill.lock", "pool " + meta.tag);
  if (!fill_lock) {
    if (fill_lock.error().code() == ErrorCode::kAlreadyExists) return 0;
    return tl::unexpected(fill_lock.error());
  }
  PoolConfig pc = config(meta.tag);
  int want = pc.size - static_cast<int>(member_ids(meta.tag).size());
  int started = 0;
  for (int i = 0; i < want; ++i) {
    auto pre = prestart_child(cfg_, meta, tag_dir_path, cfg_.default_limits);
    if (!pre) return tl::unexpected(pre.error().wrap("pool " + meta.tag));
    if (pc.warm) {
      if (auto st = warm_up_prestarted(*pre, tag_dir_path); !st) {
        pre->vm.terminate(std::chrono::milliseconds(1000));
        (void)remove_run_dir(pre->dir);
        return tl::unexpected(st.error().wrap("pool " + meta.tag + ": warm up"));
      }
    }
    auto recorded = [&]() -> Status {
      FORKD_TRY(make_dirs(members_dir(meta.tag)));
      return write_file_atomic(members_dir(meta.tag) + "/" + pre->id + ".json",
                               member_json(*pre, meta).dump());
    }();
    if (!recorded) {  // a member nobody can find must not keep its QEMU
      pre->vm.terminate(std::chrono::milliseconds(1000));
      (void)remove_run_dir(pre->dir);
      return tl::unexpected(recorded.error().wrap("pool " + meta.tag));
    }
    pre->lock.unlock();  // recorded: claimers and gc see it now
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
      std::string mine = file + ".drain-" + random_hex(4);
      if (::rename(file.c_str(), mine.c_str()) != 0) continue;
      auto text = read_file(mine, 1 << 16);
      ::unlink(mine.c_str());
      Json m = text ? json::parse_untrusted(*text) : Json();
      if (m.is_object()) kill_member(cfg_.sandboxes_dir(), m);
      ++n;
    }
  }
  return n;
}

std::set<std::string> Pool::member_ids() const {
  std::set<std::string> out;
  for (const auto& t : list_dir_names(root_)) {
    if (!is_safe_name(t)) continue;
    for (auto& id : member_ids(t)) out.insert(std::move(id));
  }
  return out;
}

int Pool::prune() {
  int n = 0;
  for (const auto& t : list_dir_names(root_)) {
    if (!is_safe_name(t)) continue;
    for (const auto& id : member_ids(t)) {
      std::string file = members_dir(t) + "/" + id + ".json";
      auto text = read_file(file, 1 << 16);
      Json m = text ? json::parse_untrusted(*text) : Json();
      pid_t pid = json::int_or(m, "pid", 0);
      if (pid > 0 && qemu_owns_dir(pid, cfg_.sandboxes_dir() + "/" + id)) continue;
      // Dead (or unreadable): take the file away atomically, so a claimer cannot get it too.
      std::string mine = file + ".prune-" + random_hex(4);
      if (::rename(file.c_str(), mine.c_str()) != 0) continue;
      ::unlink(mine.c_str());
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

#include "vmm/cgroup.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <thread>

#include "base/files.h"

namespace forkd::vmm {

namespace {

constexpr const char* kControllers[] = {"memory", "cpu", "pids"};

// A "key value" line's value from a flat-keyed file (memory.events, memory.oom_control).
uint64_t keyed_value(const std::string& path, std::string_view key) {
  auto text = read_file(path, 64 << 10);
  if (!text) return 0;
  size_t pos = 0;
  while (pos < text->size()) {
    size_t nl = text->find('\n', pos);
    if (nl == std::string::npos) nl = text->size();
    std::string_view line(text->data() + pos, nl - pos);
    if (line.size() > key.size() + 1 && line.substr(0, key.size()) == key &&
        line[key.size()] == ' ') {
      return std::strtoull(std::string(line.substr(key.size() + 1)).c_str(), nullptr, 10);
    }
    pos = nl + 1;
  }
  return 0;
}

// On v2 a controller works in a child only when every ancestor enables it for its children.
Status enable_v2_controllers(const std::string& dir, const CgroupLayout& layout) {
  std::string want;
  for (const auto& c : layout.controllers) want += (want.empty() ? "+" : " +") + c;
  if (want.empty()) return {};
  return write_control_file(dir + "/cgroup.subtree_control", want);
}

}  // namespace

std::string_view cgroup_version_name(CgroupVersion v) {
  switch (v) {
    case CgroupVersion::kV1:
      return "v1";
    case CgroupVersion::kV2:
      return "v2";
    case CgroupVersion::kNone:
      break;
  }
  return "none";
}

bool CgroupLayout::has(std::string_view controller) const {
  return std::find(controllers.begin(), controllers.end(), controller) != controllers.end();
}

std::string CgroupLayout::hierarchy(std::string_view controller) const {
  return version == CgroupVersion::kV2 ? root : root + "/" + std::string(controller);
}

CgroupLayout detect_cgroups(const std::string& root) {
  CgroupLayout l;
  l.root = root;
  // v2 when the root itself is the unified hierarchy and offers at least one of ours.
  if (auto text = read_file(root + "/cgroup.controllers", 4096)) {
    std::string padded = " " + *text + " ";
    for (char& c : padded) c = c == '\n' ? ' ' : c;
    for (const char* c : kControllers) {
      if (padded.find(" " + std::string(c) + " ") != std::string::npos) l.controllers.push_back(c);
    }
    if (!l.controllers.empty()) {
      l.version = CgroupVersion::kV2;
      return l;
    }
  }
  // v1 (or hybrid): one hierarchy per controller, found by its cgroup.procs.
  for (const char* c : kControllers) {
    if (path_exists(root + "/" + c + "/cgroup.procs")) l.controllers.push_back(c);
  }
  if (!l.controllers.empty()) {
    l.version = CgroupVersion::kV1;
  } else {
    l.reason = "no memory, cpu or pids controller under " + root;
  }
  return l;
}

std::vector<LimitWrite> limit_writes(CgroupVersion version, const Limits& limits) {
  std::vector<LimitWrite> w;
  const bool v2 = version == CgroupVersion::kV2;
  if (limits.memory_bytes) {
    std::string bytes = std::to_string(*limits.memory_bytes);
    if (v2) {
      w.push_back({"memory", "memory.max", bytes});
      // No swap: a limit the guest can page around is no limit (the file may be absent).
      w.push_back({"memory", "memory.swap.max?", "0"});
    } else {
      w.push_back({"memory", "memory.limit_in_bytes", bytes});
      // memsw (memory + swap) exists only with swap accounting; it must be >= the limit above.
      w.push_back({"memory", "memory.memsw.limit_in_bytes?", bytes});
    }
  }
  if (limits.cpus) {
    auto quota = static_cast<int64_t>(std::llround(*limits.cpus * kCpuPeriodUs));
    quota = std::max<int64_t>(quota, 1000);  // the kernel's minimum quota is 1 ms
    if (v2) {
      w.push_back({"cpu", "cpu.max", std::to_string(quota) + " " + std::to_string(kCpuPeriodUs)});
    } else {
      w.push_back({"cpu", "cpu.cfs_period_us", std::to_string(kCpuPeriodUs)});
      w.push_back({"cpu", "cpu.cfs_quota_us", std::to_string(quota)});
    }
  }
  if (limits.pids) w.push_back({"pids", "pids.max", std::to_string(*limits.pids)});
  return w;
}

SandboxCgroup SandboxCgroup::existing(const CgroupLayout& layout, const std::string& parent,
                                      const std::string& name) {
  SandboxCgroup cg;
  cg.version_ = layout.version;
  if (layout.version == CgroupVersion::kV2) {
    cg.dirs_.push_back(layout.root + "/" + parent + "/" + name);
    if (layout.has("memory")) cg.memory_dir_ = cg.dirs_.back();
  } else if (layout.version == CgroupVersion::kV1) {
    for (const auto& c : layout.controllers) {
      cg.dirs_.push_back(layout.hierarchy(c) + "/" + parent + "/" + name);
      if (c == "memory") cg.memory_dir_ = cg.dirs_.back();
    }
  }
  return cg;
}

Result<SandboxCgroup> SandboxCgroup::create(const CgroupLayout& layout, const std::string& parent,
                                            const std::string& name, const Limits& limits) {
  if (layout.version == CgroupVersion::kNone) {
    return make_error(ErrorCode::kUnavailable, "no cgroups on this host: " + layout.reason);
  }
  SandboxCgroup cg = existing(layout, parent, name);
  auto fail = [&](Error e) -> Result<SandboxCgroup> {
    (void)cg.remove();
    return tl::unexpected(e.wrap("cgroup " + parent + "/" + name));
  };
  if (layout.version == CgroupVersion::kV2) {
    if (auto st = enable_v2_controllers(layout.root, layout); !st) return fail(st.error());
    if (auto st = make_dirs(layout.root + "/" + parent, 0755); !st) return fail(st.error());
    if (auto st = enable_v2_controllers(layout.root + "/" + parent, layout); !st) {
      return fail(st.error());
    }
  }
  for (const auto& dir : cg.dirs_) {
    if (auto st = make_dirs(dir, 0755); !st) return fail(st.error());
  }
  for (const auto& w : limit_writes(layout.version, limits)) {
    if (!layout.has(w.controller)) {
      return fail(Error(ErrorCode::kUnavailable,
                        "this host's cgroups have no " + w.controller + " controller"));
    }
    std::string file = w.file;
    const bool optional = !file.empty() && file.back() == '?';
    if (optional) file.pop_back();
    std::string dir = layout.version == CgroupVersion::kV2
                          ? cg.dirs_.front()
                          : layout.hierarchy(w.controller) + "/" + parent + "/" + name;
    if (optional && !path_exists(dir + "/" + file)) continue;
    if (auto st = write_control_file(dir + "/" + file, w.value); !st) return fail(st.error());
  }
  return cg;
}

std::vector<std::string> SandboxCgroup::join_files() const {
  std::vector<std::string> out;
  const char* file = version_ == CgroupVersion::kV1 ? "/tasks" : "/cgroup.procs";
  for (const auto& d : dirs_) out.push_back(d + file);
  return out;
}

uint64_t SandboxCgroup::oom_kills() const {
  if (memory_dir_.empty()) return 0;
  return version_ == CgroupVersion::kV2
             ? keyed_value(memory_dir_ + "/memory.events", "oom_kill")
             : keyed_value(memory_dir_ + "/memory.oom_control", "oom_kill");
}

uint64_t SandboxCgroup::memory_current() const {
  if (memory_dir_.empty()) return 0;
  auto text = read_file(
      memory_dir_ + (version_ == CgroupVersion::kV2 ? "/memory.current" : "/memory.usage_in_bytes"),
      64);
  return text ? std::strtoull(text->c_str(), nullptr, 10) : 0;
}

int sweep_stale_leaves(const CgroupLayout& layout, const std::string& parent,
                       std::chrono::seconds min_age) {
  if (layout.version == CgroupVersion::kNone) return 0;
  std::vector<std::string> hierarchies;
  if (layout.version == CgroupVersion::kV2) {
    hierarchies.push_back(layout.root);
  } else {
    for (const auto& c : layout.controllers) hierarchies.push_back(layout.hierarchy(c));
  }
  const auto now = std::chrono::system_clock::now();
  int removed = 0;
  for (const auto& h : hierarchies) {
    const std::string base = h + "/" + parent;
    for (const auto& name : list_dir_names(base)) {
      std::string leaf = base + "/" + name;
      struct stat st {};
      if (::lstat(leaf.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
      auto made = std::chrono::system_clock::time_point(std::chrono::seconds(st.st_mtim.tv_sec));
      if (now - made < min_age) continue;
      if (::rmdir(leaf.c_str()) == 0) ++removed;  // EBUSY: still has a process
    }
  }
  return removed;
}

Status SandboxCgroup::remove() const {
  Status result;
  for (const auto& d : dirs_) {
    for (int attempt = 0;; ++attempt) {
      if (::rmdir(d.c_str()) == 0 || errno == ENOENT) break;
      // A fake tree (tests) holds plain files: clear them. cgroupfs refuses unlink, so this
      // never touches a real cgroup's control files.
      if (errno == ENOTEMPTY && !path_exists(d + "/cgroup.controllers") &&
          !path_exists(d + "/tasks")) {
        for (const auto& f : list_dir_names(d)) ::unlink((d + "/" + f).c_str());
        continue;
      }
      if (errno != EBUSY || attempt >= 50) {
        if (result) result = errno_error(errno, "rmdir " + d);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  return result;
}

}  // namespace forkd::vmm

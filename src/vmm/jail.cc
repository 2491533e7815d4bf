#include "vmm/jail.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <vector>

#include "base/files.h"
#include "base/log.h"
#include "base/random.h"
#include "base/subprocess.h"
#include "vmm/lean_qemu.h"
#include "vmm/probe_cache.h"
#include "vmm/qemu_cmdline.h"

namespace forkd::vmm {

namespace {

// The group forkd-qemu, created (with its system user) when missing.
Result<gid_t> jail_group() {
  auto lookup = []() -> std::optional<gid_t> {
    struct group grp {};
    struct group* found = nullptr;
    std::vector<char> buf(16384);
    if (::getgrnam_r(kJailUser, &grp, buf.data(), buf.size(), &found) == 0 && found) {
      return found->gr_gid;
    }
    return std::nullopt;
  };
  if (auto g = lookup()) return *g;
  // scripts/install-deps.sh creates it; this covers a host that skipped it.
  auto r = run_capture({"useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                        "/nonexistent", "--shell", "/usr/sbin/nologin", kJailUser},
                       std::chrono::seconds(30));
  if (auto g = lookup()) return *g;
  std::string why = r ? r->output : r.error().message();
  return make_error(ErrorCode::kUnavailable,
                    std::string("cannot create the user ") + kJailUser + ": " + why);
}

HostJail probe() {
  HostJail j;
  j.cgroups = detect_cgroups();
  // One start of QEMU tells its version and whether it runs with the stubs; a second only when
  // it does not. Both answers are kept for the next forkd process (probe_cache.h).
  const std::string binary = default_qemu_binary(), lean_dir = lean_qemu_default_dir();
  const std::string cache = qemu_probe_cache_path();
  const std::string key = qemu_probe_key(binary, lean_dir);
  std::optional<QemuProbe> known = load_qemu_probe(cache, key);
  // The stubs' directory is checked again each time: the key covers its files, not every
  // directory above it.
  if (known && !known->lean.dir.empty() && !check_lean_dir(known->lean.dir)) known.reset();
  if (known && known->lean.unused_stubs &&
      !check_lean_dir(known->lean.dir + "/" + kUnusedStubsDirName)) {
    known.reset();
  }
  if (!known) {
    known.emplace();
    known->lean = probe_lean_qemu(binary, lean_dir);
    known->qemu_version =
        known->lean.dir.empty() ? probe_qemu_version(binary) : known->lean.version;
    store_qemu_probe(cache, key, *known);
  }
  j.lean = known->lean;
  j.qemu_version = known->qemu_version;
  j.private_readonly_ram = version_at_least(j.qemu_version, 8, 2);
  j.tcg_ram_pad = needs_tcg_ram_pad(j.qemu_version);
  j.switchover_ack = has_switchover_ack(j.qemu_version);
  if (const char* q = std::getenv("FORKD_QEMU"); q && *q) {
    j.static_qemu.reason = std::string("FORKD_QEMU names the QEMU to run (") + q + ")";
  } else {
    j.static_qemu = find_static_qemu(static_qemu_default_dir(), j.qemu_version);
  }
  const char* env = std::getenv("FORKD_JAIL");
  if (env && std::string(env) == "off") {
    j.reason = "turned off by FORKD_JAIL=off";
    return j;
  }
  if (::geteuid() != 0) {
    j.reason = "forkd is not root, so QEMU runs as the calling user (uid " +
               std::to_string(::geteuid()) + ")";
    return j;
  }
  if (!j.private_readonly_ram) {
    j.reason = "QEMU " + (j.qemu_version.empty() ? std::string("(not found)") : j.qemu_version) +
               " cannot map a read-only tag copy-on-write (needs 8.2+; scripts/install-deps.sh "
               "installs QEMU 10 from bookworm-backports), so QEMU runs as root";
    return j;
  }
  auto gid = jail_group();
  if (!gid) {
    j.reason = gid.error().message() + ", so QEMU runs as root";
    return j;
  }
  j.gid = *gid;
  j.active = true;
  return j;
}

// Every uid of a running process (the owners of /proc/<pid>) inside the jail range.
std::vector<uid_t> jail_uids_in_use() {
  std::vector<uid_t> used;
  DIR* d = ::opendir("/proc");
  if (!d) return used;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    struct stat st {};
    if (::fstatat(::dirfd(d), e->d_name, &st, 0) != 0) continue;
    if (st.st_uid >= kJailUidBase && st.st_uid - kJailUidBase < kJailUidCount) {
      used.push_back(st.st_uid);
    }
  }
  ::closedir(d);
  return used;
}

}  // namespace

const HostJail& host_jail() {
  static std::once_flag once;
  static HostJail jail;
  std::call_once(once, [] {
    jail = probe();
    if (!jail.active) logger("vmm")->info("event=jail_off reason=\"{}\"", jail.reason);
  });
  return jail;
}

Result<JailIdentity> allocate_identity(const HostJail& jail) {
  if (!jail.active) return make_error(ErrorCode::kUnavailable, "jail: " + jail.reason);
  auto used = jail_uids_in_use();
  for (int attempt = 0; attempt < 64; ++attempt) {
    std::string r = random_bytes(4);
    uint32_t v = 0;
    for (unsigned char c : r) v = v << 8 | c;
    uid_t uid = kJailUidBase + v % kJailUidCount;
    if (std::find(used.begin(), used.end(), uid) == used.end()) return JailIdentity{uid, jail.gid};
  }
  return make_error(ErrorCode::kUnavailable, "jail: no free uid in the jail range");
}

Status give_file(const std::string& path, const JailIdentity& id) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return errno_error(errno, "jail: open " + path);
  if (::fchown(fd.get(), id.uid, id.gid) != 0) return errno_error(errno, "jail: chown " + path);
  if (::fchmod(fd.get(), 0600) != 0) return errno_error(errno, "jail: chmod " + path);
  return {};
}

Status open_dir_to_group(const std::string& dir, gid_t gid) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return errno_error(errno, "jail: open " + dir);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return errno_error(errno, "jail: stat " + dir);
  if (st.st_uid != ::geteuid()) return {};
  if (st.st_gid != gid && ::fchown(fd.get(), static_cast<uid_t>(-1), gid) != 0) {
    return errno_error(errno, "jail: chgrp " + dir);
  }
  if ((st.st_mode & 07777) != 02710 && ::fchmod(fd.get(), 02710) != 0) {
    return errno_error(errno, "jail: chmod " + dir);
  }
  return {};
}

void share_tree_with_group(const std::string& dir, gid_t gid) {
  // Iterative, bounded: these trees hold images, tags and caches (a few files each).
  std::vector<std::pair<std::string, int>> todo{{dir, 0}};
  size_t visited = 0;
  while (!todo.empty() && visited < 100000) {
    auto [path, depth] = todo.back();
    todo.pop_back();
    ++visited;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || st.st_uid != ::geteuid()) continue;
    if (S_ISDIR(st.st_mode)) {
      (void)open_dir_to_group(path, gid);
      if (depth < 8) {
        for (const auto& name : list_dir_names(path))
          todo.push_back({path + "/" + name, depth + 1});
      }
    } else if (S_ISREG(st.st_mode)) {
      if (st.st_gid != gid) (void)::lchown(path.c_str(), static_cast<uid_t>(-1), gid);
      if ((st.st_mode & 0040) == 0) (void)::chmod(path.c_str(), (st.st_mode & 07777) | 0040);
    }
  }
}

std::string probe_qemu_version(const std::string& binary) {
  auto r = run_capture({binary, "--version"}, std::chrono::seconds(10));
  if (!r || r->exit_code != 0) return {};
  return parse_qemu_version(r->output);
}

std::string parse_qemu_version(const std::string& output) {
  const std::string key = "QEMU emulator version ";
  size_t at = output.find(key);
  if (at == std::string::npos) return {};
  size_t start = at + key.size();
  size_t end = start;
  while (end < output.size() &&
         (std::isdigit(static_cast<unsigned char>(output[end])) || output[end] == '.')) {
    ++end;
  }
  return output.substr(start, end - start);
}

bool version_at_least(const std::string& version, int major, int minor) {
  int ma = 0, mi = 0;
  if (std::sscanf(version.c_str(), "%d.%d", &ma, &mi) < 1) return false;
  return ma > major || (ma == major && mi >= minor);
}

}  // namespace forkd::vmm

#include "engine/config.h"

#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "base/files.h"
#include "base/paths.h"
#include "engine/sandbox_jail.h"

namespace forkd::engine {

EngineConfig EngineConfig::from_env() {
  EngineConfig c;
  c.home = forkd_home();
  c.assets = assets_dir();
  c.agent = agent_binary_path();
  if (const char* a = std::getenv("FORKD_ACCEL"); a && *a) c.accel = a;
  if (const char* t = std::getenv("FORKD_TB_SIZE_MIB"); t && *t) c.tb_size_mib = std::atoi(t);
  if (const char* k = std::getenv("FORKD_KSM"); k && *k) c.ksm = is_true_word(k);
  if (const char* l = std::getenv("FORKD_LEAN_QEMU"); l && *l) c.lean_qemu = is_true_word(l);
  if (const char* q = std::getenv("FORKD_STATIC_QEMU"); q && *q) c.static_qemu = is_true_word(q);
  if (const char* h = std::getenv("FORKD_QEMU_HUGE_PAGES"); h && *h) {
    c.qemu_huge_pages = is_true_word(h);
  }
  if (const char* p = std::getenv("FORKD_COLLAPSE_CODE_PAGES"); p && *p) {
    c.collapse_code_pages = is_true_word(p);
  }
  if (const char* w = std::getenv("FORKD_CODE_WINDOW"); w && *w) c.code_window = is_true_word(w);
  if (const char* m = std::getenv("FORKD_MACHINE"); m && std::string(m) == "pc") {
    c.machine = vmm::MachineType::kPc;
  }
  // Default limits; malformed or out-of-range values are ignored (the flags check theirs).
  if (const char* m = std::getenv("FORKD_MEMORY_LIMIT_MIB"); m && std::atoi(m) >= 32) {
    c.default_limits.memory_bytes = static_cast<uint64_t>(std::atoi(m)) << 20;
  }
  if (const char* cpu = std::getenv("FORKD_CPU_LIMIT"); cpu && std::atof(cpu) >= 0.01) {
    c.default_limits.cpus = std::atof(cpu);
  }
  if (const char* p = std::getenv("FORKD_PIDS_LIMIT"); p && std::atoi(p) >= 8) {
    c.default_limits.pids = std::atoi(p);
  }
  if (const char* a = std::getenv("FORKD_EXPOSE_ADDRESS"); a && is_ipv4_address(a)) {
    c.expose_address = a;
  }
  return c;
}

bool is_true_word(const std::string& s) {
  return s == "1" || s == "on" || s == "yes" || s == "true";
}

bool is_ipv4_address(const std::string& s) {
  in_addr a{};
  return s.size() <= 15 && ::inet_pton(AF_INET, s.c_str(), &a) == 1;
}

Status prepare_home(const EngineConfig& cfg) {
  FORKD_TRY(make_dirs(cfg.home, 0700));
  if (vmm::host_jail().active) return share_home_with_jail(cfg.home);
  for (const char* sub : kHomeDirs) {
    std::string dir = cfg.home + sub;
    struct stat st;
    // lstat: a symlink to another home's directory (the tests share images so) is not ours to
    // change.
    if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    // Group traversal alone (02710: a home the jail opened to its group) is not "open".
    if (st.st_uid == ::geteuid() && (st.st_mode & 067) != 0) {
      if (::chmod(dir.c_str(), 0700) != 0) return errno_error(errno, "chmod 0700 " + dir);
    }
  }
  return {};
}

}  // namespace forkd::engine

#include "vmm/ksm.h"

#include <sys/prctl.h>
#include <sys/utsname.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <string_view>

#include "base/files.h"
#include "base/subprocess.h"

namespace forkd::vmm {

namespace {

constexpr int kPrGetMemoryMerge = 68;  // Linux 6.4; Debian 12's headers predate it

std::optional<uint64_t> read_number(const std::string& path) {
  auto s = read_file(path, 64);
  if (!s || s->empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s->c_str(), &end, 10);
  if (errno != 0 || end == s->c_str()) return std::nullopt;
  return v;
}

std::string kernel_release() {
  struct utsname u {};
  return ::uname(&u) == 0 ? std::string(u.release) : std::string("?");
}

std::string check_support() {
  if (!path_exists(kKsmSysfs)) return "this kernel has no KSM (" + std::string(kKsmSysfs) + ")";
  if (::prctl(kPrGetMemoryMerge, 0, 0, 0, 0) < 0) {
    return "this kernel (" + kernel_release() +
           ") cannot mark a whole process mergeable (PR_SET_MEMORY_MERGE, Linux 6.4+)";
  }
  if (find_in_path("grep").empty()) return "grep, used to check KSM, is not installed";
  SpawnOptions opts;
  opts.memory_merge = true;
  auto child = Child::spawn({"grep", "-qx", "ksm_merge_any: yes", "/proc/self/ksm_stat"}, opts);
  if (!child) return "launching a mergeable process failed: " + child.error().message();
  auto code = child->wait(std::chrono::seconds(10));
  if (!code) return "checking a mergeable process failed: " + code.error().message();
  if (*code != 0) {
    return "this kernel (" + kernel_release() +
           ") drops PR_SET_MEMORY_MERGE at exec (kept across exec since Linux 6.10)";
  }
  return {};
}

}  // namespace

KsmState read_ksm_state(const std::string& dir) {
  KsmState k;
  auto run = read_number(dir + "/run");
  if (!run) return k;
  k.present = true;
  k.running = *run == 1;
  k.pages_shared = read_number(dir + "/pages_shared").value_or(0);
  k.pages_sharing = read_number(dir + "/pages_sharing").value_or(0);
  k.full_scans = read_number(dir + "/full_scans").value_or(0);
  k.pages_to_scan = read_number(dir + "/pages_to_scan").value_or(0);
  k.sleep_ms = read_number(dir + "/sleep_millisecs").value_or(0);
  return k;
}

std::string ksm_unsupported_reason() {
  static std::once_flag once;
  static std::string reason;
  std::call_once(once, [] { reason = check_support(); });
  return reason;
}

std::optional<bool> process_merge_any(pid_t pid) {
  auto s = read_file("/proc/" + std::to_string(pid) + "/ksm_stat", 4096);
  if (!s) return std::nullopt;
  constexpr std::string_view kKey = "ksm_merge_any: ";
  size_t at = s->find(kKey);
  if (at == std::string::npos) return std::nullopt;
  return s->compare(at + kKey.size(), 3, "yes") == 0;
}

std::optional<pid_t> ksmd_pid() {
  for (const auto& name : list_dir_names("/proc")) {
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    auto comm = read_file("/proc/" + name + "/comm", 64);
    if (comm && *comm == "ksmd\n") return static_cast<pid_t>(std::atoi(name.c_str()));
  }
  return std::nullopt;
}

Status set_ksmd_running(bool on, const std::string& dir) {
  return write_control_file(dir + "/run", on ? "1" : "0");
}

Status set_ksmd_pages_to_scan(uint64_t pages, const std::string& dir) {
  return write_control_file(dir + "/pages_to_scan", std::to_string(pages));
}

namespace {

struct Changed {
  std::mutex mu;
  std::string dir;
  bool started = false;               // ksmd was off before
  std::optional<uint64_t> old_pages;  // pages_to_scan before, when changed
};

Changed& changed() {
  static Changed c;
  return c;
}

}  // namespace

Result<bool> run_ksmd_for_measurement(int pages_to_scan, const std::string& dir) {
  auto& c = changed();
  std::lock_guard<std::mutex> lock(c.mu);
  if ((c.started || c.old_pages) && c.dir != dir) {
    return make_error(ErrorCode::kFailedPrecondition,
                      "ksm: another measurement's settings are "
                      "not set back yet");
  }
  c.dir = dir;
  const auto state = read_ksm_state(dir);
  if (!state.present) return make_error(ErrorCode::kUnavailable, "ksm: no KSM in " + dir);
  if (pages_to_scan > 0 && static_cast<uint64_t>(pages_to_scan) != state.pages_to_scan) {
    FORKD_TRY(set_ksmd_pages_to_scan(static_cast<uint64_t>(pages_to_scan), dir));
    if (!c.old_pages) c.old_pages = state.pages_to_scan;
  }
  if (state.running) return false;
  FORKD_TRY(set_ksmd_running(true, dir));
  c.started = true;
  return true;
}

void restore_ksmd() {
  auto& c = changed();
  std::lock_guard<std::mutex> lock(c.mu);
  if (c.started) (void)set_ksmd_running(false, c.dir);
  if (c.old_pages) (void)set_ksmd_pages_to_scan(*c.old_pages, c.dir);
  c.started = false;
  c.old_pages.reset();
}

}  // namespace forkd::vmm

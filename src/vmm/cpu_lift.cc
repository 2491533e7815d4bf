#include "vmm/cpu_lift.h"

#include <charconv>
#include <cstdlib>

#include "base/files.h"
#include "base/proc_stat.h"
#include "base/sched_attr.h"

namespace forkd::vmm {

namespace {

// The part of rest before the first sep (all of it without one); rest keeps what follows sep.
std::string_view take(std::string_view& rest, char sep) {
  size_t at = rest.find(sep);
  std::string_view part = rest.substr(0, at);
  rest = at == std::string_view::npos ? std::string_view() : rest.substr(at + 1);
  return part;
}

}  // namespace

std::optional<std::string> v1_cpu_cgroup(std::string_view text) {
  while (!text.empty()) {
    std::string_view line = take(text, '\n');
    // hierarchy-id:controller,list:/path
    size_t a = line.find(':');
    if (a == std::string_view::npos) continue;
    size_t b = line.find(':', a + 1);
    if (b == std::string_view::npos) continue;
    std::string_view controllers = line.substr(a + 1, b - a - 1);
    std::string_view path = line.substr(b + 1);
    bool cpu = false;
    while (!controllers.empty()) {
      if (take(controllers, ',') == "cpu") cpu = true;
    }
    if (!cpu || path.empty() || path.front() != '/') continue;
    // A path climbing out of the hierarchy is not one the kernel writes.
    if (path.find("/..") != std::string_view::npos) return std::nullopt;
    return std::string(path);
  }
  return std::nullopt;
}

CpuLift::CpuLift(const CgroupLayout& layout, std::string name, std::string proc)
    : proc_(std::move(proc)) {
  if (layout.version != CgroupVersion::kV1 || !layout.has("cpu")) return;
  hierarchy_ = layout.hierarchy("cpu");
  group_ = hierarchy_ + "/" + name;
}

bool CpuLift::ensure_group() {
  if (group_ready_) return true;
  if (!make_dirs(group_, 0755)) return false;
  // Written each time: a group made by hand or by another forkd may hold another weight.
  if (!write_control_file(group_ + "/cpu.shares", std::to_string(kLiftShares))) return false;
  // With real-time group scheduling, a budget for a thread of the pause run at a real-time
  // priority (base/rt_window.h); a kernel without it has no such file.
  const std::string rt = group_ + "/cpu.rt_runtime_us";
  if (path_exists(rt)) (void)write_control_file(rt, std::to_string(kLiftRtRuntimeUs));
  group_ready_ = true;
  return true;
}

std::optional<std::string> CpuLift::cpu_cgroup_of(pid_t pid, pid_t tid) const {
  auto text = read_file(thread_dir(pid, tid, proc_) + "/cgroup", 64 << 10);
  if (!text) return std::nullopt;
  auto path = v1_cpu_cgroup(*text);
  if (!path) return std::nullopt;
  return hierarchy_ + (*path == "/" ? "" : *path);
}

bool CpuLift::lift(pid_t pid, pid_t tid) {
  if (hierarchy_.empty() || tid <= 0 || pid < 0) return false;
  auto from = cpu_cgroup_of(pid, tid);
  if (!from || *from == group_ || !ensure_group()) return false;
  if (!write_control_file(group_ + "/tasks", std::to_string(tid))) return false;
  moved_.push_back(Moved{pid, tid, *from});
  return true;
}

int CpuLift::return_leftovers(const std::function<bool(pid_t process)>& may_return) {
  if (hierarchy_.empty() || !path_exists(group_ + "/tasks")) return 0;
  auto tasks = read_file(group_ + "/tasks", 1 << 20);
  if (!tasks) return 0;
  int returned = 0;
  std::string_view rest = *tasks;
  while (!rest.empty()) {
    std::string_view word = take(rest, '\n');
    pid_t tid = 0;
    if (std::from_chars(word.data(), word.data() + word.size(), tid).ptr !=
            word.data() + word.size() ||
        tid <= 0) {
      continue;
    }
    // The thread's process: the Tgid line of its status.
    auto status = read_file(proc_ + "/" + std::to_string(tid) + "/status", 64 << 10);
    if (!status) continue;
    size_t at = status->find("\nTgid:");
    if (at == std::string::npos) continue;
    pid_t tgid = static_cast<pid_t>(std::strtol(status->c_str() + at + 6, nullptr, 10));
    if (tgid <= 0 || !may_return(tgid)) continue;
    // Where its process's other threads are.
    std::optional<std::string> home;
    for (int sibling : process_threads(tgid, proc_).value_or(std::vector<int>())) {
      if (sibling == tid) continue;
      auto where = cpu_cgroup_of(tgid, sibling);
      if (where && *where != group_) {
        home = where;
        break;
      }
    }
    if (home && move_thread(*home, tid)) ++returned;
  }
  return returned;
}

bool CpuLift::move_thread(const std::string& dir, pid_t tid) {
  if (write_control_file(dir + "/tasks", std::to_string(tid))) return true;
  // A group without a real-time budget refuses a thread at a real-time priority: one a forkd
  // left so (it died with a pause's window open, base/rt_window.h) goes back at the normal one.
  // (Only in the host's own /proc: a test's fake tree names no real thread.)
  if (proc_ != "/proc") return false;
  sched::Attr attr{};
  if (sched::get_attr(tid, attr) != 0 || !sched::real_time(attr.sched_policy)) return false;
  attr.size = sizeof attr;
  attr.sched_policy = sched::kNormal;
  attr.sched_flags = 0;
  attr.sched_priority = 0;
  if (sched::set_attr(tid, attr) != 0) return false;
  return write_control_file(dir + "/tasks", std::to_string(tid)).has_value();
}

void CpuLift::restore() {
  for (auto it = moved_.rbegin(); it != moved_.rend(); ++it) {
    // A thread that has exited may have left its tid to another process's thread.
    if (!thread_of(it->pid, it->tid, proc_)) continue;
    (void)move_thread(it->from, it->tid);
  }
  moved_.clear();
}

}  // namespace forkd::vmm

#include "base/thread_boost.h"

#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/files.h"
#include "base/proc_stat.h"

namespace forkd {

namespace {

// The first version of the kernel's struct sched_attr (48 bytes), which every kernel since 3.14
// takes; glibc 2.36 has neither it nor the calls' wrappers.
struct sched_attr {
  uint32_t size;
  uint32_t sched_policy;
  uint64_t sched_flags;
  int32_t sched_nice;
  uint32_t sched_priority;
  uint64_t sched_runtime;
  uint64_t sched_deadline;
  uint64_t sched_period;
};
static_assert(sizeof(sched_attr) == 48);
constexpr uint32_t kSchedNormal = 0;

int get_attr(pid_t tid, sched_attr& attr) {
  std::memset(&attr, 0, sizeof attr);
  return static_cast<int>(::syscall(SYS_sched_getattr, tid, &attr, sizeof attr, 0));
}

int set_attr(pid_t tid, const sched_attr& attr) {
  return static_cast<int>(::syscall(SYS_sched_setattr, tid, &attr, 0));
}

}  // namespace

bool ThreadBoost::raise(pid_t pid, pid_t tid, BoostLevel level) {
  if (!thread_of(pid, tid)) return false;
  sched_attr old{};
  if (get_attr(tid, old) != 0 || old.sched_policy != kSchedNormal) return false;
  sched_attr next = old;
  next.size = sizeof next;
  next.sched_flags = 0;
  next.sched_nice = std::min(old.sched_nice, level.nice);
  if (level.slice_ns != 0) {
    next.sched_runtime =
        old.sched_runtime == 0 ? level.slice_ns : std::min(old.sched_runtime, level.slice_ns);
  }
  if (set_attr(tid, next) != 0) {
    // A kernel without custom slices may refuse the runtime: the nice alone then.
    next.sched_runtime = old.sched_runtime;
    if (set_attr(tid, next) != 0) return false;
  }
  saved_.push_back(Saved{pid, tid, old.sched_nice, old.sched_runtime});
  return true;
}

void ThreadBoost::restore() {
  for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
    // A thread that has exited since may have left its tid to another process's thread.
    if (!thread_of(it->pid, it->tid)) continue;
    sched_attr attr{};
    if (get_attr(it->tid, attr) != 0) continue;
    attr.size = sizeof attr;
    attr.sched_flags = 0;
    attr.sched_nice = it->nice;
    attr.sched_runtime = it->slice_ns;
    (void)set_attr(it->tid, attr);
  }
  saved_.clear();
}

std::vector<pid_t> threads_named(pid_t pid, const std::vector<std::string_view>& names) {
  std::vector<pid_t> out;
  for (int tid : process_threads(pid).value_or(std::vector<int>())) {
    auto comm = read_file(thread_dir(pid, tid) + "/comm", 64);
    if (!comm) continue;
    std::string_view name = *comm;
    if (!name.empty() && name.back() == '\n') name.remove_suffix(1);
    if (std::find(names.begin(), names.end(), name) != names.end()) out.push_back(tid);
  }
  return out;
}

}  // namespace forkd

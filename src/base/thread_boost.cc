#include "base/thread_boost.h"

#include <algorithm>

#include "base/files.h"
#include "base/proc_stat.h"
#include "base/sched_attr.h"

namespace forkd {

bool ThreadBoost::raise(pid_t pid, pid_t tid, BoostLevel level) {
  if (!thread_of(pid, tid)) return false;
  sched::Attr old{};
  if (sched::get_attr(tid, old) != 0 || old.sched_policy != sched::kNormal) return false;
  sched::Attr next = old;
  next.size = sizeof next;
  next.sched_flags = 0;
  next.sched_nice = std::min(old.sched_nice, level.nice);
  if (level.slice_ns != 0) {
    next.sched_runtime =
        old.sched_runtime == 0 ? level.slice_ns : std::min(old.sched_runtime, level.slice_ns);
  }
  if (sched::set_attr(tid, next) != 0) {
    // A kernel without custom slices may refuse the runtime: the nice alone then.
    next.sched_runtime = old.sched_runtime;
    if (sched::set_attr(tid, next) != 0) return false;
  }
  saved_.push_back(Saved{pid, tid, old.sched_nice, old.sched_runtime});
  return true;
}

void ThreadBoost::restore() {
  for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
    // A thread that has exited since may have left its tid to another process's thread.
    if (!thread_of(it->pid, it->tid)) continue;
    sched::Attr attr{};
    if (sched::get_attr(it->tid, attr) != 0) continue;
    attr.size = sizeof attr;
    attr.sched_flags = 0;
    attr.sched_nice = it->nice;
    attr.sched_runtime = it->slice_ns;
    (void)sched::set_attr(it->tid, attr);
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

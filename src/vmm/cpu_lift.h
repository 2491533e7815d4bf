#pragma once
// Threads lifted into a CPU cgroup of a high weight for a short critical section, then put back:
// a live branch's pause. On cgroup v1 a sandbox's QEMU sits in <cpu>/forkd/<sandbox>, one
// entity beside forkd's own threads at the hierarchy's top, and after a copy that kept its
// migration thread and its vCPU busy, that entity is behind on its share: a thread of it that
// wakes (QEMU's main thread, to run `cont`) waits for the whole group's turn, up to a
// millisecond or more on two busy cores, however high its own priority inside the group
// (traced: QEMU's main thread picked `cont` up 0.5-1.3 ms late at times; at most 0.2 ms with
// its group's weight raised).
//
// The lift moves single threads (v1 `tasks`), so the group's CPU limit no longer counts them
// while lifted: only host-side threads are lifted (never a vCPU), and only for the copy. On v2
// a thread cannot leave its process's domain cgroup, and without cgroups there is nothing to
// lift: both do nothing.
#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/cgroup.h"

namespace forkd::vmm {

// The path of the v1 cpu cgroup in the text of a /proc/PID/task/TID/cgroup file (the line whose
// controller list holds "cpu"), e.g. "/forkd/sb-1". nullopt when there is none.
std::optional<std::string> v1_cpu_cgroup(std::string_view proc_cgroup_text);

// The lift group's weight (v1 cpu.shares; a plain group has 1024).
inline constexpr int kLiftShares = 10240;
// Its real-time budget where the kernel schedules real-time threads by group (v1
// cpu.rt_runtime_us, of cpu.rt_period_us, 1 s by default): room for a pause's window at a
// real-time priority (base/rt_window.h; ~1 ms each, 20 ms at most) in several branches at once.
inline constexpr int kLiftRtRuntimeUs = 100'000;

class CpuLift {
 public:
  // The group is <cpu hierarchy>/<name>, a sibling of forkd's sandbox parent, made when first
  // needed. proc: where /proc is (tests give a fake tree).
  CpuLift(const CgroupLayout& layout, std::string name, std::string proc = "/proc");
  CpuLift(const CpuLift&) = delete;
  CpuLift& operator=(const CpuLift&) = delete;
  ~CpuLift() { restore(); }

  // Moves thread tid of process pid (pid 0: of this process) into the group. False when it was
  // left where it was: no v1 cpu hierarchy, the thread is gone, or a write was refused.
  bool lift(pid_t pid, pid_t tid);
  // Puts every lifted thread back into the cgroup it came from, if it still belongs to its
  // process.
  void restore();
  size_t lifted() const { return moved_.size(); }

  // Threads left in the group by a forkd that died before restore(): each goes back to the
  // cgroup of another thread of its process (a QEMU's vCPU is never lifted), when
  // may_return(its process) says no lift of it is in flight. Returns how many went back.
  int return_leftovers(const std::function<bool(pid_t process)>& may_return);

 private:
  std::optional<std::string> cpu_cgroup_of(pid_t pid, pid_t tid) const;
  // Writes tid into the group dir's tasks.
  bool move_thread(const std::string& dir, pid_t tid);
  bool ensure_group();

  std::string hierarchy_;  // empty: nothing to do
  std::string group_;
  std::string proc_;
  bool group_ready_ = false;
  struct Moved {
    pid_t pid;
    pid_t tid;
    std::string from;  // the cgroup's directory
  };
  std::vector<Moved> moved_;
};

}  // namespace forkd::vmm

#pragma once
// A thread's CPU priority raised for a short critical section and put back after. A branch's
// pause is a relay across threads of two processes (QEMU's migration thread stops the guest and
// sends the last pages; forkd wakes on the completion event and sends `cont`; QEMU's main thread
// runs it); on two busy cores each wake-up can wait a whole scheduler slice (1.5 ms here) behind
// a thread that has nothing to do with the pause.
//
// Best effort: a thread that cannot be changed (not permitted, gone) is left as it is.
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace forkd {

struct BoostLevel {
  int nice = 0;  // -20..19; lower is a larger share of the CPU
  // Linux 6.12+ (EEVDF): the thread's own slice; a short one lets it preempt at once when it
  // wakes. 0 keeps the thread's own; older kernels ignore it.
  uint64_t slice_ns = 0;
};

class ThreadBoost {
 public:
  ThreadBoost() = default;
  ThreadBoost(const ThreadBoost&) = delete;
  ThreadBoost& operator=(const ThreadBoost&) = delete;
  ~ThreadBoost() { restore(); }

  // Raises thread tid of process pid (tid == pid: its main thread; pid 0: tid is a thread of
  // this process). False when it was left as it is.
  bool raise(pid_t pid, pid_t tid, BoostLevel level);
  // Puts every raised thread back as it was, if it still belongs to its process.
  void restore();
  size_t raised() const { return saved_.size(); }

 private:
  struct Saved {
    pid_t pid;
    pid_t tid;
    int nice;
    uint64_t slice_ns;
  };
  std::vector<Saved> saved_;
};

// The threads of process pid whose name (/proc/PID/task/TID/comm) is one of names; at most 4096
// threads read.
std::vector<pid_t> threads_named(pid_t pid, const std::vector<std::string_view>& names);

}  // namespace forkd

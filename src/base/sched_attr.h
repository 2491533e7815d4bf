#pragma once
// The kernel's scheduling attributes of one thread (sched_getattr / sched_setattr, Linux 3.14+),
// which glibc 2.36 wraps neither: the first version of struct sched_attr (48 bytes), which every
// kernel since takes.
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

namespace forkd::sched {

struct Attr {
  uint32_t size;
  uint32_t sched_policy;
  uint64_t sched_flags;
  int32_t sched_nice;
  uint32_t sched_priority;
  uint64_t sched_runtime;
  uint64_t sched_deadline;
  uint64_t sched_period;
};
static_assert(sizeof(Attr) == 48);

inline constexpr uint32_t kNormal = 0;  // SCHED_OTHER
inline constexpr uint32_t kFifo = 1;
inline constexpr uint32_t kRoundRobin = 2;
// A thread this one creates starts at the normal policy, whatever this one runs at; only a thread
// with CAP_SYS_NICE can take the flag off again.
inline constexpr uint64_t kResetOnFork = 0x01;

inline bool real_time(uint32_t policy) { return policy == kFifo || policy == kRoundRobin; }

// 0 on success, else -1 with errno set.
inline int get_attr(pid_t tid, Attr& attr) {
  std::memset(&attr, 0, sizeof attr);
  return static_cast<int>(::syscall(SYS_sched_getattr, tid, &attr, sizeof attr, 0));
}

inline int set_attr(pid_t tid, const Attr& attr) {
  return static_cast<int>(::syscall(SYS_sched_setattr, tid, &attr, 0));
}

}  // namespace forkd::sched

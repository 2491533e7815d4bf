#pragma once
// Child processes: spawn (posix_spawn, no shell), wait with a timeout, kill. A Child that is still
// running when destroyed is killed (SIGKILL) and reaped, unless detach() was called.
#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace forkd {

struct SpawnOptions {
  // -1 means inherit; the fds are dup2'ed onto 0/1/2 in the child.
  int stdin_fd = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;
  bool null_stdin = true;  // /dev/null on stdin unless stdin_fd is set
  bool new_session = false;
  // SIGKILL the child when this thread's process dies (PR_SET_PDEATHSIG). Spawned with fork+exec
  // instead of posix_spawn; the death signal fires when the *spawning thread* exits, so spawn
  // from a thread that lives as long as the child should.
  bool die_with_parent = false;
  std::optional<std::string> cwd;
  // Extra variables added to the current environment.
  std::map<std::string, std::string> env;

  // The jail (each of these makes spawn use fork+exec; every step failing fails the spawn with
  // the step's name and errno, reported back before spawn returns):
  // Descriptors the child keeps, renumbered 3, 4, ... in this order (CLOEXEC cleared); every
  // other descriptor above 2 is closed.
  std::vector<int> pass_fds;
  // Open cgroup.procs (or v1 tasks) files: the child writes "0" (itself) to each before anything
  // else, so it never runs outside its cgroups. Through `tasks` the child, one thread then, moves
  // without the kernel's global cgroup lock (see vmm::SandboxCgroup::join_files).
  std::vector<int> cgroup_procs_fds;
  // An open network namespace (/run/netns/NAME) the child joins, before dropping privileges.
  int netns_fd = -1;
  // Drop to this uid/gid with no supplementary groups (setgroups(0), setresgid, setresuid).
  struct Credentials {
    uid_t uid = 0;
    gid_t gid = 0;
  };
  std::optional<Credentials> drop_to;
  bool no_new_privs = false;  // PR_SET_NO_NEW_PRIVS before exec
  // PR_SET_MEMORY_MERGE before exec: KSM may merge every anonymous page of the child with equal
  // pages of other processes (Linux 6.4+; the setting survives exec on the kernels that have
  // vmm/ksm.h's check). Not part of the jail, but also a fork+exec step.
  bool memory_merge = false;
  // PR_SET_THP_DISABLE before exec: no transparent huge pages for the child, even where it asks
  // for them with madvise (the setting survives exec). Also a fork+exec step.
  bool no_huge_pages = false;
  // RLIMIT_RTPRIO 0, soft and hard, before exec: the child can never give itself a real-time
  // priority (an unprivileged process may, up to that limit, which it otherwise inherits), and
  // a thread that forkd runs at one for a while (base/rt_window.h) cannot raise it further.
  bool no_real_time = false;
};

class Child {
 public:
  static Result<Child> spawn(const std::vector<std::string>& argv, const SpawnOptions& opts = {});
  Child(Child&& other) noexcept;
  Child& operator=(Child&& other) noexcept;
  Child(const Child&) = delete;
  ~Child();

  pid_t pid() const { return pid_; }
  // Waits until the child exits; returns its exit code (128+signal when killed). A timeout
  // returns kTimeout and leaves the child running.
  Result<int> wait(std::optional<std::chrono::milliseconds> timeout = std::nullopt);
  void kill(int sig);
  // Leaves the child running and unreaped by this object.
  void detach() { pid_ = -1; }

 private:
  explicit Child(pid_t pid, UniqueFd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  pid_t pid_ = -1;
  UniqueFd pidfd_;
};

struct RunResult {
  int exit_code = 0;
  std::string output;  // stdout and stderr, interleaved
};

// Runs argv to completion, capturing up to 1 MiB of its output; env is added to this process's.
// With as, it runs as that uid and gid (no supplementary groups, no new privileges): a tool
// that follows what a sandbox's QEMU wrote (an image's backing file) reaches no more than that
// QEMU could.
Result<RunResult> run_capture(const std::vector<std::string>& argv,
                              std::chrono::milliseconds timeout,
                              const std::map<std::string, std::string>& env = {},
                              const std::optional<SpawnOptions::Credentials>& as = std::nullopt);

// True when a process with this pid exists (signal 0 succeeds or fails with EPERM).
bool process_alive(pid_t pid);

// Finds an executable in $PATH; empty when absent.
std::string find_in_path(const std::string& name);

}  // namespace forkd

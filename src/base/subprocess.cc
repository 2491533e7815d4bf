#include "base/subprocess.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

extern char** environ;

namespace forkd {

namespace {

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::vector<std::string> merged_env(const std::map<std::string, std::string>& extra) {
  std::vector<std::string> out;
  for (char** e = environ; e && *e; ++e) {
    std::string kv(*e);
    auto eq = kv.find('=');
    if (eq != std::string::npos && extra.count(kv.substr(0, eq))) continue;
    out.push_back(std::move(kv));
  }
  for (const auto& [k, v] : extra) out.push_back(k + "=" + v);
  return out;
}

}  // namespace

namespace {

// Linux 6.4's PR_SET_MEMORY_MERGE, which Debian 12's headers predate.
constexpr int kPrSetMemoryMerge = 67;

// What the child reports through its CLOEXEC pipe when a step before exec fails.
struct ChildFailure {
  int step;
  int err;
};
constexpr const char* kSteps[] = {"join cgroup",
                                  "join network namespace",
                                  "setgroups",
                                  "setresgid",
                                  "setresuid",
                                  "no_new_privs",
                                  "memory merge (KSM)",
                                  "death signal",
                                  "chdir",
                                  "pass descriptor",
                                  "exec",
                                  "no huge pages",
                                  "no real-time priority"};
enum Step {
  kJoin,
  kSetns,
  kSetgroups,
  kSetgid,
  kSetuid,
  kNoNewPrivs,
  kMemoryMerge,
  kDeathSig,
  kChdir,
  kPassFd,
  kExec,
  kThpDisable,
  kNoRealTime
};

[[noreturn]] void child_fail(int report_fd, int step) {
  ChildFailure f{step, errno};
  (void)!::write(report_fd, &f, sizeof f);
  ::_exit(127);
}

// The child's side of fork_exec: only async-signal-safe calls.
[[noreturn]] void child_exec(const SpawnOptions& opts, const char* path, char* const* cargv,
                             char* const* cenv, int null_fd, pid_t parent, int report_fd) {
  // (report_fd is moved above the passed descriptors below; failures before use the original.)
  // "0": the writer itself (see SpawnOptions::cgroup_procs_fds).
  for (int fd : opts.cgroup_procs_fds) {
    if (::write(fd, "0", 1) != 1) child_fail(report_fd, kJoin);
  }
  // While still privileged (joining a namespace needs CAP_SYS_ADMIN).
  if (opts.netns_fd >= 0 && ::setns(opts.netns_fd, CLONE_NEWNET) != 0) {
    child_fail(report_fd, kSetns);
  }
  if (opts.new_session) ::setsid();
  sigset_t empty;
  sigemptyset(&empty);
  ::sigprocmask(SIG_SETMASK, &empty, nullptr);
  int in = opts.stdin_fd >= 0 ? opts.stdin_fd : null_fd;
  if (in >= 0) ::dup2(in, 0);
  if (opts.stdout_fd >= 0) ::dup2(opts.stdout_fd, 1);
  if (opts.stderr_fd >= 0) ::dup2(opts.stderr_fd, 2);
  if (opts.cwd && ::chdir(opts.cwd->c_str()) != 0) child_fail(report_fd, kChdir);
  if (opts.drop_to) {
    if (::setgroups(0, nullptr) != 0) child_fail(report_fd, kSetgroups);
    gid_t g = opts.drop_to->gid;
    uid_t u = opts.drop_to->uid;
    if (::setresgid(g, g, g) != 0) child_fail(report_fd, kSetgid);
    if (::setresuid(u, u, u) != 0) child_fail(report_fd, kSetuid);
  }
  if (opts.no_new_privs && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    child_fail(report_fd, kNoNewPrivs);
  }
  if (opts.memory_merge && ::prctl(kPrSetMemoryMerge, 1, 0, 0, 0) != 0) {
    child_fail(report_fd, kMemoryMerge);
  }
  if (opts.no_huge_pages && ::prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0) {
    child_fail(report_fd, kThpDisable);
  }
  if (opts.no_real_time) {
    const struct rlimit none = {0, 0};
    if (::setrlimit(RLIMIT_RTPRIO, &none) != 0) child_fail(report_fd, kNoRealTime);
  }
  // After the credential change, which clears a death signal set earlier.
  if (opts.die_with_parent) {
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) child_fail(report_fd, kDeathSig);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl took effect
  }
  // Passed descriptors go to 3, 4, ...: first (with the report pipe) above everything involved,
  // then down into place, so no dup2 overwrites a descriptor still to be moved.
  const size_t n = opts.pass_fds.size();
  if (n > 64) child_fail(report_fd, kPassFd);
  int floor = static_cast<int>(3 + n);
  for (int fd : opts.pass_fds) floor = fd >= floor ? fd + 1 : floor;
  if (report_fd >= floor) floor = report_fd + 1;
  int rep = ::fcntl(report_fd, F_DUPFD_CLOEXEC, floor);  // the lowest free one >= floor
  if (rep < 0) child_fail(report_fd, kPassFd);
  report_fd = rep;
  int high[64];
  for (size_t i = 0; i < n; ++i) {
    high[i] = ::fcntl(opts.pass_fds[i], F_DUPFD_CLOEXEC, rep + 1);
    if (high[i] < 0) child_fail(report_fd, kPassFd);
  }
  for (size_t i = 0; i < n; ++i) {
    if (::dup2(high[i], static_cast<int>(3 + i)) < 0) child_fail(report_fd, kPassFd);
  }
  // Nothing else crosses into the child, whatever a library opened without O_CLOEXEC (an HTTP
  // server's accepted sockets, for one). The report pipe is CLOEXEC: exec closes it.
  const auto first = static_cast<unsigned>(3 + n);
  if (static_cast<unsigned>(rep) > first) {
    ::syscall(SYS_close_range, first, static_cast<unsigned>(rep - 1), 0u);
  }
  ::syscall(SYS_close_range, static_cast<unsigned>(rep + 1), ~0u, 0u);
  ::execve(path, cargv, cenv);
  child_fail(report_fd, kExec);
}

// fork+exec for options posix_spawn cannot express. Everything the child needs is prepared
// before fork(); between fork and exec the child calls only async-signal-safe functions.
Result<pid_t> fork_exec(const std::vector<std::string>& argv, const SpawnOptions& opts,
                        char* const* cargv, char* const* cenv) {
  std::string path = find_in_path(argv[0]);
  if (path.empty()) return errno_error(ENOENT, "spawn " + argv[0]);
  UniqueFd null_fd;
  if (opts.stdin_fd < 0 && opts.null_stdin) {
    null_fd = UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!null_fd) return errno_error(errno, "open /dev/null");
  }
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return errno_error(errno, "pipe");
  UniqueFd report_rd(pipe_fds[0]), report_wr(pipe_fds[1]);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return errno_error(errno, "fork");
  if (pid == 0) {
    child_exec(opts, path.c_str(), cargv, cenv, null_fd.get(), parent, report_wr.get());
  }
  report_wr.reset();
  // EOF: exec happened. A record: a step failed, and the child has exited (reap it).
  ChildFailure f{};
  ssize_t got;
  do {
    got = ::read(report_rd.get(), &f, sizeof f);
  } while (got < 0 && errno == EINTR);
  if (got == static_cast<ssize_t>(sizeof f)) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    const char* step = f.step >= 0 && f.step <= kThpDisable ? kSteps[f.step] : "?";
    return errno_error(f.err, "spawn " + argv[0] + ": " + step);
  }
  return pid;
}

bool needs_fork_exec(const SpawnOptions& o) {
  return o.die_with_parent || !o.pass_fds.empty() || !o.cgroup_procs_fds.empty() ||
         o.drop_to.has_value() || o.no_new_privs || o.netns_fd >= 0 || o.memory_merge ||
         o.no_huge_pages || o.no_real_time;
}

}  // namespace

Result<Child> Child::spawn(const std::vector<std::string>& argv, const SpawnOptions& opts) {
  if (argv.empty()) return make_error(ErrorCode::kInternal, "spawn: empty argv");
  // NULL-terminated argv and envp for exec; they point into argv and env, which outlive them.
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  std::vector<std::string> env = merged_env(opts.env);
  std::vector<char*> cenv;
  for (auto& e : env) cenv.push_back(e.data());
  cenv.push_back(nullptr);
  if (needs_fork_exec(opts)) {
    auto pid = fork_exec(argv, opts, cargv.data(), cenv.data());
    if (!pid) return tl::unexpected(pid.error());
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, *pid, 0));
    return Child(*pid, UniqueFd(pidfd));
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  if (opts.new_session) flags |= POSIX_SPAWN_SETSID;
  posix_spawnattr_setflags(&attr, flags);
  sigset_t empty, all;
  sigemptyset(&empty);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &all);
  if (opts.stdin_fd >= 0) {
    posix_spawn_file_actions_adddup2(&fa, opts.stdin_fd, 0);
  } else if (opts.null_stdin) {
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  }
  if (opts.stdout_fd >= 0) posix_spawn_file_actions_adddup2(&fa, opts.stdout_fd, 1);
  if (opts.stderr_fd >= 0) posix_spawn_file_actions_adddup2(&fa, opts.stderr_fd, 2);
  if (opts.cwd) posix_spawn_file_actions_addchdir_np(&fa, opts.cwd->c_str());
  // Nothing but 0-2 crosses into the child, whatever a library opened without O_CLOEXEC (an
  // HTTP server's accepted sockets: a QEMU holding one keeps a client waiting for an answer).
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);

  pid_t pid = -1;
  int rc = posix_spawnp(&pid, argv[0].c_str(), &fa, &attr, cargv.data(), cenv.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return errno_error(rc, "spawn " + argv[0]);
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  return Child(pid, UniqueFd(pidfd));
}

Child::Child(Child&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), pidfd_(std::move(other.pidfd_)) {}

Child& Child::operator=(Child&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0) {
      kill(SIGKILL);
      (void)wait();
    }
    pid_ = std::exchange(other.pid_, -1);
    pidfd_ = std::move(other.pidfd_);
  }
  return *this;
}

Child::~Child() {
  if (pid_ > 0) {
    kill(SIGKILL);
    (void)wait();
  }
}

void Child::kill(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

Result<int> Child::wait(std::optional<std::chrono::milliseconds> timeout) {
  if (pid_ <= 0) return make_error(ErrorCode::kInternal, "wait: no child");
  if (timeout && pidfd_) {
    struct pollfd p = {pidfd_.get(), POLLIN, 0};
    int rc;
    do {
      rc = ::poll(&p, 1, static_cast<int>(timeout->count()));
    } while (rc < 0 && errno == EINTR);
    if (rc == 0)
      return make_error(ErrorCode::kTimeout, "process " + std::to_string(pid_) + " still running");
  } else if (timeout) {
    auto deadline = std::chrono::steady_clock::now() + *timeout;
    for (;;) {
      int status = 0;
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return decode_status(status);
      }
      if (std::chrono::steady_clock::now() > deadline) {
        return make_error(ErrorCode::kTimeout, "process still running");
      }
      ::usleep(5000);
    }
  }
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, 0);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return errno_error(errno, "waitpid");
  pid_ = -1;
  pidfd_.reset();
  return decode_status(status);
}

Result<RunResult> run_capture(const std::vector<std::string>& argv,
                              std::chrono::milliseconds timeout,
                              const std::map<std::string, std::string>& env,
                              const std::optional<SpawnOptions::Credentials>& as) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return errno_error(errno, "pipe");
  UniqueFd rd(fds[0]), wr(fds[1]);
  SpawnOptions opts;
  opts.stdout_fd = wr.get();
  opts.stderr_fd = wr.get();
  opts.env = env;
  if (as) {
    opts.drop_to = *as;
    opts.no_new_privs = true;
  }
  auto child = Child::spawn(argv, opts);
  if (!child) return tl::unexpected(child.error());
  wr.reset();
  RunResult res;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[8192];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      child->kill(SIGKILL);
      return make_error(ErrorCode::kTimeout, argv[0] + " did not finish in time");
    }
    struct pollfd p = {rd.get(), POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(left.count()));
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) continue;
    ssize_t n = ::read(rd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (res.output.size() < (1u << 20)) res.output.append(buf, static_cast<size_t>(n));
  }
  auto code = child->wait(std::chrono::milliseconds(5000));
  if (!code) return tl::unexpected(code.error());
  res.exit_code = *code;
  return res;
}

bool process_alive(pid_t pid) {
  if (pid <= 0) return false;
  return ::kill(pid, 0) == 0 || errno == EPERM;
}

std::string find_in_path(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string cand = p.substr(start, end - start) + "/" + name;
    if (end > start && ::access(cand.c_str(), X_OK) == 0) return cand;
    start = end + 1;
  }
  return "";
}

}  // namespace forkd

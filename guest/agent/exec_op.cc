#include "exec_op.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>

#include "base/unique_fd.h"
#include "identity.h"

extern char** environ;

namespace forkd::agent {

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kReadChunk = 64 * 1024;
constexpr auto kExitDrain = std::chrono::milliseconds(100);  // output grace after the child exits
constexpr auto kKillDrain = std::chrono::seconds(1);         // output grace after a timeout kill

struct ChildFailure {
  int32_t stage;  // 1 = chdir, 2 = execve, 3 = switching user
  int32_t err;
};

// Running commands started with a `handle`, for the signal op: handle -> process group.
std::mutex g_handles_mu;
std::map<std::string, pid_t> g_handles;

// Keeps a handle registered while its command runs.
class HandleGuard {
 public:
  HandleGuard() = default;
  HandleGuard(const HandleGuard&) = delete;
  HandleGuard& operator=(const HandleGuard&) = delete;
  ~HandleGuard() {
    if (name_.empty()) return;
    std::lock_guard lock(g_handles_mu);
    g_handles.erase(name_);
  }
  // False when the handle belongs to a running command already.
  bool claim(const std::string& name) {
    std::lock_guard lock(g_handles_mu);
    if (!g_handles.emplace(name, 0).second) return false;
    name_ = name;
    return true;
  }
  void set_pid(pid_t pid) {
    if (name_.empty()) return;
    std::lock_guard lock(g_handles_mu);
    g_handles[name_] = pid;
  }

 private:
  std::string name_;
};

// The guest's /etc/passwd, at most 1 MiB of it.
std::string read_passwd() {
  std::ifstream in("/etc/passwd", std::ios::binary);
  std::string text(1 << 20, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(std::max<std::streamsize>(in.gcount(), 0)));
  return text;
}

struct Pipe {
  UniqueFd read;
  UniqueFd write;
};

bool make_pipe(Pipe* p) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return false;
  p->read.reset(fds[0]);
  p->write.reset(fds[1]);
  return true;
}

// Runs in the forked child: async-signal-safe calls only.
[[noreturn]] void child_exec(int in_fd, int out_fd, int err_fd, int report_fd, const RunAs* as,
                             const char* cwd, const char* path, char* const* argv,
                             char* const* envp) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  signal(SIGPIPE, SIG_DFL);
  setsid();
  dup2(in_fd, 0);
  dup2(out_fd, 1);
  dup2(err_fd, 2);
  ChildFailure f{0, 0};
  if (as != nullptr &&
      (setgroups(0, nullptr) != 0 || setgid(as->gid) != 0 || setuid(as->uid) != 0)) {
    f = {3, errno};
  } else if (cwd != nullptr && chdir(cwd) != 0) {
    f = {1, errno};
  } else {
    execve(path, argv, envp);
    f = {2, errno};
  }
  ssize_t n = write(report_fd, &f, sizeof f);
  (void)n;
  _exit(127);
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  out.reserve(v.size() + 1);
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

int64_t ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
}

}  // namespace

AgentResult<OpReply> run_exec(const Request& req, const EventSink& emit) {
  auto spec = parse_exec(req.args);
  if (!spec) return tl::unexpected(spec.error());
  const auto start = Clock::now();

  std::vector<std::string> base_env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) base_env.emplace_back(*e);
  // FORKD_SANDBOX_ID / FORKD_EPOCH (after `resumed`) unless the request sets them itself.
  std::vector<std::string> env = merge_env(base_env, identity_env());
  std::optional<RunAs> run_as;
  if (!spec->user.empty()) {
    run_as = lookup_user(spec->user, read_passwd());
    if (!run_as) return bad_request("no user '" + spec->user + "' in the guest's /etc/passwd");
    env =
        merge_env(env, {{"HOME", run_as->home}, {"USER", run_as->name}, {"LOGNAME", run_as->name}});
  }
  env = merge_env(env, spec->env);
  HandleGuard handle;
  if (!spec->handle.empty() && !handle.claim(spec->handle)) {
    return bad_request("handle '" + spec->handle + "' belongs to a running command");
  }
  std::string path_var = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (const auto& entry : env) {
    if (entry.rfind("PATH=", 0) == 0) path_var = entry.substr(5);
  }
  auto resolved = resolve_command(spec->argv[0], path_var);
  if (!resolved) return agent_error("not_found", "command not found: " + spec->argv[0]);

  Pipe out, err, report, in;
  if (!make_pipe(&out) || !make_pipe(&err) || !make_pipe(&report)) {
    return errno_agent_error(errno, "exec: pipe");
  }
  UniqueFd null_in;
  if (spec->use_stdin) {
    if (!make_pipe(&in)) return errno_agent_error(errno, "exec: pipe");
  } else {
    null_in.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!null_in) return errno_agent_error(errno, "exec: open /dev/null");
  }
  std::vector<char*> argv = c_strings(spec->argv);
  std::vector<char*> envp = c_strings(env);
  const char* cwd = spec->cwd.empty() ? nullptr : spec->cwd.c_str();
  const int child_in = spec->use_stdin ? in.read.get() : null_in.get();

  pid_t pid = ::fork();
  if (pid < 0) return errno_agent_error(errno, "exec: fork");
  if (pid == 0) {
    child_exec(child_in, out.write.get(), err.write.get(), report.write.get(),
               run_as ? &*run_as : nullptr, cwd, resolved->c_str(), argv.data(), envp.data());
  }
  handle.set_pid(pid);
  out.write.reset();
  err.write.reset();
  report.write.reset();
  in.read.reset();
  null_in.reset();

  // The report pipe closes on a successful execve (CLOEXEC) or carries the child's failure.
  ChildFailure failure{0, 0};
  ssize_t got;
  do {
    got = ::read(report.read.get(), &failure, sizeof failure);
  } while (got < 0 && errno == EINTR);
  if (got == static_cast<ssize_t>(sizeof failure)) {
    int status;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (failure.stage == 1) return errno_agent_error(failure.err, "exec: chdir " + spec->cwd);
    if (failure.stage == 3)
      return errno_agent_error(failure.err, "exec: switch to user " + spec->user);
    if (failure.err == ENOENT)
      return agent_error("not_found", "command not found: " + spec->argv[0]);
    return agent_error("not_found",
                       "cannot execute " + spec->argv[0] + ": " + std::strerror(failure.err));
  }

  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (in.write) (void)::fcntl(in.write.get(), F_SETFL, O_NONBLOCK);
  size_t stdin_off = 0;
  if (in.write && req.body.empty()) in.write.reset();

  bool exited = false, timed_out = false;
  int status = 0;
  std::optional<Clock::time_point> drain_until;
  const auto deadline = start + std::chrono::milliseconds(spec->timeout_ms);
  std::string buf(kReadChunk, '\0');
  for (;;) {
    if (!exited) {
      pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid) exited = true;
    }
    auto now = Clock::now();
    if (exited && !drain_until) drain_until = now + kExitDrain;
    if (!out.read && !err.read && exited) break;
    if (drain_until && now >= *drain_until) break;
    if (spec->timeout_ms != 0 && !timed_out && now >= deadline) {
      ::kill(-pid, SIGKILL);
      timed_out = true;
      drain_until = now + kKillDrain;
    }
    int64_t wait_ms = pidfd ? 1000 : 10;
    if (spec->timeout_ms != 0 && !timed_out)
      wait_ms = std::min(wait_ms, ms_between(now, deadline) + 1);
    if (drain_until) wait_ms = std::min(wait_ms, ms_between(now, *drain_until) + 1);
    wait_ms = std::max<int64_t>(wait_ms, 0);

    pollfd fds[4];
    int n = 0, i_out = -1, i_err = -1, i_in = -1;
    if (out.read) {
      i_out = n;
      fds[n++] = {out.read.get(), POLLIN, 0};
    }
    if (err.read) {
      i_err = n;
      fds[n++] = {err.read.get(), POLLIN, 0};
    }
    if (in.write) {
      i_in = n;
      fds[n++] = {in.write.get(), POLLOUT, 0};
    }
    if (pidfd && !exited) fds[n++] = {pidfd.get(), POLLIN, 0};
    int pr = ::poll(fds, static_cast<nfds_t>(n), static_cast<int>(wait_ms));
    if (pr <= 0) continue;
    auto pump = [&](int idx, UniqueFd& fd, const char* kind) {
      if (idx < 0 || fds[idx].revents == 0) return;
      ssize_t r = ::read(fd.get(), buf.data(), buf.size());
      if (r > 0) {
        emit(kind, std::string_view(buf.data(), static_cast<size_t>(r)));
      } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
        fd.reset();
      }
    };
    pump(i_out, out.read, "stdout");
    pump(i_err, err.read, "stderr");
    if (i_in >= 0 && fds[i_in].revents != 0) {
      ssize_t w = ::write(in.write.get(), req.body.data() + stdin_off, req.body.size() - stdin_off);
      if (w > 0) stdin_off += static_cast<size_t>(w);
      if ((w < 0 && errno != EAGAIN && errno != EINTR) || stdin_off >= req.body.size()) {
        in.write.reset();  // done, or the child closed its stdin (EPIPE)
      }
    }
  }
  if (!exited) {
    // Only reachable after a timeout: the group got SIGKILL, so this wait is short.
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  int exit_code = 0;
  if (timed_out) {
    exit_code = 137;
  } else if (WIFEXITED(status)) {
    exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    exit_code = 128 + WTERMSIG(status);
  }
  OpReply reply;
  reply.result = Json{{"exit_code", exit_code},
                      {"timed_out", timed_out},
                      {"duration_ms", ms_between(start, Clock::now())}};
  return reply;
}

AgentResult<OpReply> signal_op(const Request& req) {
  auto handle = get_string(req.args, "handle");
  if (!handle) return tl::unexpected(handle.error());
  auto sig = get_u64(req.args, "signal", SIGKILL, 64);
  if (!sig) return tl::unexpected(sig.error());
  if (*sig == 0) return bad_request("\"signal\" must be 1..64");
  pid_t pid = 0;
  {
    std::lock_guard lock(g_handles_mu);
    auto it = g_handles.find(*handle);
    if (it != g_handles.end()) pid = it->second;
  }
  if (pid <= 0)
    return agent_error("not_found", "no running command with handle " + handle->substr(0, 64));
  // The group exists once the child called setsid(); before that, signal the child itself (it
  // has not run the command yet, so it has no children of its own).
  bool delivered = ::kill(-pid, static_cast<int>(*sig)) == 0 ||
                   (errno == ESRCH && ::kill(pid, static_cast<int>(*sig)) == 0);
  OpReply reply;
  reply.result = Json{{"delivered", delivered}};
  return reply;
}

}  // namespace forkd::agent

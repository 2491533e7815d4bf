#include "vmm/vm_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <mutex>
#include <thread>

#include "base/files.h"
#include "base/subprocess.h"
#include "vmm/lean_qemu.h"
#include "vmm/qmp_client.h"
#include "vmm/static_qemu.h"

namespace forkd::vmm {

namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kPidFileWait = std::chrono::seconds(2);
constexpr auto kKillWait = std::chrono::seconds(5);

// Held around each QEMU spawn; stop_launches() takes it once and closes the gate for good.
std::mutex g_launch_mu;
bool g_launches_stopped = false;

UniqueFd pidfd_open(pid_t pid) {
  return UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
}

// Sends sig through the pidfd when we have one (immune to pid reuse), else by pid.
void send_signal(pid_t pid, const UniqueFd& pidfd, int sig) {
  if (pidfd) {
    if (::syscall(SYS_pidfd_send_signal, pidfd.get(), sig, nullptr, 0) == 0 || errno == ESRCH) {
      return;
    }
  }
  if (pid > 0) ::kill(pid, sig);
}

// launch() leaves QEMU a child of this process; once it exited, collect it so it does not linger
// as a zombie. For an adopted process (not our child) this fails with ECHILD, which is fine.
void reap_if_child(const UniqueFd& pidfd) {
  siginfo_t info{};
  ::waitid(P_PIDFD, static_cast<id_t>(pidfd.get()), &info, WEXITED | WNOHANG);
}

Result<pid_t> parse_pid(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ' || text.back() == '\r')) {
    text.remove_suffix(1);
  }
  pid_t pid = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), pid);
  if (ec != std::errc() || end != text.data() + text.size() || pid <= 1) {
    return make_error(ErrorCode::kProtocol, "pid file does not hold a pid");
  }
  return pid;
}

// QEMU writes the pid file before its launcher exits, but retry briefly in case the file is
// still empty (it is created, locked, then written).
Result<pid_t> read_pid_file(const std::string& path) {
  const auto deadline = Clock::now() + kPidFileWait;
  for (;;) {
    auto text = read_file(path, 64);
    if (text) {
      auto pid = parse_pid(*text);
      if (pid) return pid;
      if (Clock::now() >= deadline) return tl::unexpected(pid.error().wrap(path));
    } else if (Clock::now() >= deadline) {
      return tl::unexpected(text.error().wrap("read pid file"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// A listening unix socket at path (mode 0600), for QEMU to accept on: QEMU never needs to create
// a file, so a jailed QEMU needs no write access to its run dir.
Result<UniqueFd> listen_unix(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return make_error(ErrorCode::kInvalidArgument, "socket path too long: " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return errno_error(errno, "socket");
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return errno_error(errno, "bind " + path);
  }
  if (::chmod(path.c_str(), 0600) != 0 || ::listen(fd.get(), 8) != 0) {
    int err = errno;
    ::unlink(path.c_str());
    return errno_error(err, "listen " + path);
  }
  return fd;
}

// Opens the cgroup files the child joins (write end only, before it drops privileges).
Result<std::vector<UniqueFd>> open_cgroup_procs(const std::vector<std::string>& paths) {
  std::vector<UniqueFd> fds;
  for (const auto& p : paths) {
    UniqueFd fd(::open(p.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) return errno_error(errno, "open " + p);
    fds.push_back(std::move(fd));
  }
  return fds;
}

std::string with_log(std::string message, const std::string& stderr_log) {
  std::string tail = log_tail(stderr_log, 1024);
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == ' ')) tail.pop_back();
  if (!tail.empty()) message += "; qemu said: " + tail;
  return message;
}

}  // namespace

Result<VmProcess> VmProcess::launch(const VmConfig& cfg, const std::string& stderr_log,
                                    std::chrono::milliseconds timeout) {
  auto both = launch_with_qmp(cfg, stderr_log, timeout);
  if (!both) return tl::unexpected(both.error());
  return std::move(both->first);
}

void VmProcess::stop_launches() {
  std::lock_guard gate(g_launch_mu);
  g_launches_stopped = true;
}

Result<std::pair<VmProcess, QmpClient>> VmProcess::launch_with_qmp(
    const VmConfig& cfg, const std::string& stderr_log, std::chrono::milliseconds timeout) {
  if (cfg.pid_file.empty() || cfg.qmp_socket.empty()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "launch qemu: config needs a pid file and a QMP socket");
  }
  const std::string bin = qemu_binary_for(cfg);
  bool found = bin.find('/') != std::string::npos ? ::access(bin.c_str(), X_OK) == 0
                                                  : !find_in_path(bin).empty();
  if (!found) {
    return make_error(ErrorCode::kQemuMissing,
                      bin +
                          " not found; install it with: apt-get install qemu-system-x86 "
                          "(or run scripts/install-deps.sh)");
  }
  const auto deadline = Clock::now() + timeout;

  // Stale files from an earlier run would make us adopt or talk to the wrong process.
  for (const std::string* path : {&cfg.pid_file, &cfg.qmp_socket, &cfg.agent_socket}) {
    if (path->empty()) continue;
    if (::unlink(path->c_str()) != 0 && errno != ENOENT) {
      return errno_error(errno, "launch qemu: remove stale " + *path);
    }
  }
  auto log = open_file(stderr_log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
  if (!log) return tl::unexpected(log.error().wrap("launch qemu: open log"));

  VmConfig run_cfg = cfg;
  run_cfg.daemonize = false;  // see the header: we detach QEMU ourselves
  SpawnOptions opts;
  opts.stdout_fd = log->get();
  opts.stderr_fd = log->get();
  opts.new_session = true;  // no controlling terminal; a Ctrl-C aimed at the CLI misses QEMU
  opts.die_with_parent = cfg.die_with_parent;
  opts.no_new_privs = true;
  opts.memory_merge = cfg.memory_merge;
  opts.no_huge_pages = !cfg.huge_pages;
  opts.no_real_time = true;
  opts.env = lean_qemu_env(cfg.library_dir, cfg.library_unused);
  // The stub's pmem_persist returns at once in this process only (see VmConfig::skip_ram_sync).
  if (skips_ram_sync(cfg)) opts.env["FORKD_PMEM_PERSIST"] = "skip";
  // The shim leaves the code buffer's huge pages to forkd (vmm/code_pages.h).
  if (collapses_code_pages(cfg)) opts.env[kCodePagesEnv] = kCodePagesCollapse;
  if (windows_code_pages(cfg)) {
    opts.env[kCodePagesEnv] = kCodePagesWindow + std::to_string(cfg.code_window);
  }
  // QEMU's sockets, bound here and passed in (descriptors 3 and 4).
  auto qmp_listen = listen_unix(cfg.qmp_socket);
  if (!qmp_listen) return tl::unexpected(qmp_listen.error().wrap("launch qemu"));
  UniqueFd agent_listen;
  if (!cfg.agent_socket.empty()) {
    auto a = listen_unix(cfg.agent_socket);
    if (!a) return tl::unexpected(a.error().wrap("launch qemu"));
    agent_listen = std::move(*a);
  }
  opts.pass_fds.push_back(qmp_listen->get());
  run_cfg.qmp_fd = 3;
  if (agent_listen) {
    opts.pass_fds.push_back(agent_listen.get());
    run_cfg.agent_fd = 4;
  }
  if (cfg.nic_tap_fd >= 0) {
    opts.pass_fds.push_back(cfg.nic_tap_fd);
    run_cfg.nic_tap_fd = static_cast<int>(2 + opts.pass_fds.size());
  }
  auto cgroup_fds = open_cgroup_procs(cfg.cgroup_procs);
  if (!cgroup_fds) return tl::unexpected(cgroup_fds.error().wrap("launch qemu: join cgroup"));
  for (const auto& fd : *cgroup_fds) opts.cgroup_procs_fds.push_back(fd.get());
  UniqueFd netns;
  if (!cfg.netns_path.empty()) {
    netns = UniqueFd(::open(cfg.netns_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!netns) return errno_error(errno, "launch qemu: open " + cfg.netns_path);
    opts.netns_fd = netns.get();
  }
  if (cfg.jail) {
    // The few files QEMU writes by path are its own; everything else it is given.
    if (auto st = give_file(cfg.pid_file, *cfg.jail); !st) return tl::unexpected(st.error());
    if (cfg.console_ring_bytes == 0 && !cfg.console_log.empty()) {
      if (auto st = give_file(cfg.console_log, *cfg.jail); !st) return tl::unexpected(st.error());
    }
    opts.drop_to = SpawnOptions::Credentials{cfg.jail->uid, cfg.jail->gid};
  }
  auto child = [&]() -> Result<Child> {
    std::lock_guard gate(g_launch_mu);
    if (g_launches_stopped) {
      return make_error(ErrorCode::kCancelled, "this process is shutting down");
    }
    return Child::spawn(build_qemu_argv(run_cfg), opts);
  }();
  // QEMU holds the listening sockets now: if it dies, a connection to them fails at once.
  qmp_listen->reset();
  agent_listen.reset();
  cgroup_fds->clear();
  if (!child) return tl::unexpected(child.error().wrap("launch qemu"));
  // From here on, returning early destroys child, which kills and reaps QEMU.

  auto exited = [&](int status) {
    return make_error(ErrorCode::kQemuFailed,
                      with_log("qemu exited with status " + std::to_string(status), stderr_log));
  };
  // QMP commands (qmp_capabilities included) run in QEMU's main loop, which starts only after
  // machine init, so a finished handshake means QEMU is up. The socket exists already (bound
  // above); an early death of QEMU closes its listener and fails the connection.
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  auto qmp = QmpClient::connect(cfg.qmp_socket, std::max(left, std::chrono::milliseconds(1)));
  if (!qmp) {
    auto status = child->wait(std::chrono::milliseconds(500));
    if (status) return exited(*status);
    return tl::unexpected(
        Error(qmp.error().code(), with_log("launch qemu: " + qmp.error().message(), stderr_log)));
  }

  auto pid = read_pid_file(cfg.pid_file);
  if (!pid) return tl::unexpected(pid.error().wrap("launch qemu"));
  if (*pid != child->pid()) {
    return make_error(ErrorCode::kQemuFailed, "launch qemu: pid file " + cfg.pid_file + " names " +
                                                  std::to_string(*pid) + ", not " +
                                                  std::to_string(child->pid()));
  }
  UniqueFd pidfd = pidfd_open(*pid);
  if (!pidfd) return errno_error(errno, "launch qemu: pidfd_open");
  child->detach();
  return std::make_pair(VmProcess(*pid, std::move(pidfd)), std::move(*qmp));
}

Result<VmProcess> VmProcess::adopt(pid_t pid) {
  if (pid <= 1) return make_error(ErrorCode::kInvalidArgument, "adopt: invalid pid");
  UniqueFd pidfd = pidfd_open(pid);
  if (!pidfd) {
    int err = errno;
    if (err == ESRCH) {
      return make_error(ErrorCode::kNotFound, "adopt: process " + std::to_string(pid) + " is gone");
    }
    return errno_error(err, "adopt: pidfd_open " + std::to_string(pid));
  }
  VmProcess proc(pid, std::move(pidfd));
  if (!proc.alive()) {
    return make_error(ErrorCode::kNotFound, "adopt: process " + std::to_string(pid) + " is gone");
  }
  return proc;
}

bool VmProcess::alive() const {
  if (pid_ <= 0) return false;
  if (pidfd_) {
    pollfd p{pidfd_.get(), POLLIN, 0};
    int rc;
    do {
      rc = ::poll(&p, 1, 0);
    } while (rc < 0 && errno == EINTR);
    if (rc > 0) {  // readable means exited
      reap_if_child(pidfd_);
      return false;
    }
    if (rc == 0) return true;
  }
  return process_alive(pid_);
}

bool VmProcess::wait_exit(std::chrono::milliseconds timeout) const {
  if (pid_ <= 0) return true;
  const auto deadline = Clock::now() + timeout;
  if (pidfd_) {
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      pollfd p{pidfd_.get(), POLLIN, 0};
      int rc = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(0, left.count())));
      if (rc > 0) {
        reap_if_child(pidfd_);
        return true;
      }
      if (rc == 0) return false;
      if (errno != EINTR) break;  // fall back to polling the pid
    }
  }
  // Without a pidfd (only possible after a failed poll): check every 10 ms.
  for (;;) {
    if (!process_alive(pid_)) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void VmProcess::terminate(std::chrono::milliseconds grace) {
  if (!alive()) return;
  send_signal(pid_, pidfd_, SIGTERM);
  if (wait_exit(grace)) return;
  send_signal(pid_, pidfd_, SIGKILL);
  (void)wait_exit(kKillWait);
}

void VmProcess::signal(int sig) {
  if (alive()) send_signal(pid_, pidfd_, sig);
}

std::string log_tail(const std::string& path, size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return {};
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || st.st_size <= 0 || max_bytes == 0) return {};
  const auto size = static_cast<size_t>(st.st_size);
  const size_t len = std::min(size, max_bytes);
  std::string out(len, '\0');
  size_t got = 0;
  while (got < len) {
    ssize_t n =
        ::pread(fd.get(), out.data() + got, len - got, static_cast<off_t>(size - len + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  // Start at a line boundary when we cut the file, so the first line is not a fragment.
  if (len < size) {
    size_t nl = out.find('\n');
    if (nl != std::string::npos && nl + 1 < out.size()) out.erase(0, nl + 1);
  }
  return out;
}

}  // namespace forkd::vmm

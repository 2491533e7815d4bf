#include "init.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <net/if.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "base/unique_fd.h"
#include "identity.h"
#include "log.h"
#include "net.h"

namespace forkd::agent {

namespace {

void mount_fs(const char* source, const char* target, const char* type, unsigned long flags,
              const char* data) {
  ::mkdir(target, 0755);
  if (::mount(source, target, type, flags, data) != 0 && errno != EBUSY) {
    log_line(std::string("mount ") + target + ": " + std::strerror(errno));
  }
}

void bring_up_loopback() {
  forkd::UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s) return;
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) return;
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
  if (::ioctl(s.get(), SIOCSIFFLAGS, &ifr) != 0) log_line("lo up failed");
}

// A root on a disk keeps file times in memory (lazytime) and writes them with the inode's next
// real change, a sync, or after 12 h. Without it, reading a file or following a link for the
// first time since its last change (relatime) is an inode write that the journal commits a few
// seconds later: every child of a tag did that for the files its first calls touched, each time
// a disk write into its own overlay and guest pages copied. What a program in the guest sees is
// the same.
void remount_root_lazytime() {
  struct statfs fs {};
  if (::statfs("/", &fs) != 0) return;
  if (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC) return;  // the minimal initramfs
  if ((fs.f_flags & ST_RDONLY) != 0) return;
  if (::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_LAZYTIME, nullptr) != 0) {
    log_line(std::string("remount / lazytime: ") + std::strerror(errno));
  }
}

// The kernel's periodic writeback off (vm.dirty_writeback_centisecs = 0): its timer, armed by
// whatever the boot and the warm-up dirtied, fired in every child of a tag seconds after the
// restore, and with it the flusher's code (and, when two such works met, a new kernel worker
// thread) was translated afresh in each. The guest's page cache is part of every snapshot and
// branch, so nothing depends on it reaching the disk on a timer; writeback still runs over the
// kernel's dirty thresholds, on sync and fsync, and under memory pressure.
void stop_periodic_writeback() {
  UniqueFd fd(::open("/proc/sys/vm/dirty_writeback_centisecs", O_WRONLY | O_CLOEXEC));
  if (!fd || ::write(fd.get(), "0\n", 2) != 2) {
    log_line(std::string("vm.dirty_writeback_centisecs: ") + std::strerror(errno));
  }
}

}  // namespace

void ensure_std_fds() {
  for (int fd = 0; fd < 3; ++fd) {
    if (::fcntl(fd, F_GETFD) >= 0) continue;
    int n = ::open("/dev/null", O_RDWR);  // lands on the lowest free fd, i.e. fd
    if (n >= 0 && n != fd) ::close(n);
  }
}

void init_system() {
  const unsigned long nosuid_nodev = MS_NOSUID | MS_NODEV;
  remount_root_lazytime();
  mount_fs("proc", "/proc", "proc", nosuid_nodev | MS_NOEXEC, nullptr);
  stop_periodic_writeback();
  mount_fs("sysfs", "/sys", "sysfs", nosuid_nodev | MS_NOEXEC, nullptr);
  mount_fs("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
  mount_fs("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666");
  mount_fs("tmpfs", "/dev/shm", "tmpfs", nosuid_nodev, "mode=1777");
  mount_fs("tmpfs", "/tmp", "tmpfs", nosuid_nodev, "mode=1777");
  mount_fs("tmpfs", "/run", "tmpfs", nosuid_nodev, "mode=0755");
  ensure_std_fds();
  ::setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
  ::setenv("HOME", "/root", 1);
  bring_up_loopback();
  // A VM started with a NIC gets the user-mode network's addresses at boot (a warm-up may need
  // the network); every restored child is told again by `resumed`.
  if (has_nic()) {
    if (auto r = apply_net_spec(default_outbound()); !r.ok || !r.error.empty()) {
      log_line("network at boot: " + r.error);
    }
  }
  static constexpr char kHostname[] = "forkd";
  if (::sethostname(kHostname, sizeof kHostname - 1) != 0) log_line("sethostname failed");
  if (auto r = link_hostname_file(); !r.ok) log_line("/etc/hostname stays a file: " + r.error);
  if (::chdir("/") != 0) log_line("chdir / failed");
}

void split_reaper() {
  pid_t child = ::fork();
  if (child < 0) {
    // Cannot split: serve from PID 1 itself; orphans then stay zombies, which beats no agent.
    log_line(std::string("fork failed: ") + std::strerror(errno));
    return;
  }
  if (child == 0) return;
  // PID 1: the kernel ignores signals init has no handler for, so SIGTERM/SIGINT are harmless.
  // Block everything to be explicit, and reap forever.
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, nullptr);
  for (;;) {
    int status;
    pid_t pid = ::wait(&status);
    if (pid < 0 && errno == ECHILD) ::sleep(1);
    if (pid != child && !(pid < 0 && child < 0)) continue;
    // The server died (or an earlier restart failed to fork): start another one.
    log_line("agent server exited; restarting");
    ::sleep(1);
    child = ::fork();
    if (child == 0) {
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      return;
    }
  }
}

}  // namespace forkd::agent

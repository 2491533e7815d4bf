#include "port.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "base/unique_fd.h"
#include "log.h"

namespace forkd::agent {

namespace {

constexpr int kWriteStallMs = 30'000;
// An idle agent must not wake the guest (every wake-up costs the host CPU under TCG): its waits
// end on the event itself (data, the host closing or opening the port, signalled by POLLIN,
// POLLHUP and SIGIO) and the timeouts below are only a safety net against a lost notification.
constexpr int kIdleWaitMs = 10'000;       // no host: a lost port-open SIGIO delays a connect
constexpr int kConnectedPollMs = 60'000;  // host there: a lost POLLHUP delays noticing it left

// Waits up to timeout_ms for SIGIO (which must be blocked so it stays pending).
void wait_sigio(int timeout_ms) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGIO);
  timespec ts{timeout_ms / 1000, static_cast<long>(timeout_ms % 1000) * 1'000'000L};
  (void)sigtimedwait(&set, nullptr, &ts);
}

// A character device or other path: the virtio-serial semantics are that read() returns 0
// (and poll reports POLLHUP) while the host side is not connected.
//
// The guest kernel learns that the host connected from a control message handled later, in a
// workqueue, while the host's first bytes are queued at once by the interrupt. So right after a
// connect, read() can return the request and then 0, and a write can see POLLHUP, although the
// host is there. Until the kernel has confirmed the host (read() gives EAGAIN, which it does only
// when the host is connected), a 0 after fresh data is taken as that lag: the reader waits for
// the port-open SIGIO (at most kOpenLagMs) instead of declaring a disconnect, and writers wait
// for the reader's verdict before writing.
class FdPort : public Port {
 public:
  explicit FdPort(UniqueFd fd) : fd_(std::move(fd)) {
    // Ask for SIGIO on state changes (host connect, data) so the reader can sleep without spinning.
    if (::fcntl(fd_.get(), F_SETOWN, ::getpid()) != 0) log_line("F_SETOWN failed");
    int fl = ::fcntl(fd_.get(), F_GETFL);
    if (fl >= 0) (void)::fcntl(fd_.get(), F_SETFL, fl | O_ASYNC | O_NONBLOCK);
  }

  ReadEvent read_some(std::string* out, size_t max) override {
    char buf[65536];
    size_t want = max < sizeof buf ? max : sizeof buf;
    for (;;) {
      ssize_t n = ::read(fd_.get(), buf, want);
      if (n > 0) {
        // Connections come and go with every host command: not logged, since every line is
        // written through the guest's serial console, code each child would translate afresh.
        was_disconnected_ = false;
        if (!confirmed()) unconfirmed_data_ = true;
        out->append(buf, static_cast<size_t>(n));
        return ReadEvent::kData;
      }
      int err = errno;
      if (n < 0 && err == EINTR) continue;
      if (n < 0 && err == EAGAIN) {
        set_confirmed();
        pollfd p{fd_.get(), POLLIN, 0};
        int r = ::poll(&p, 1, kConnectedPollMs);
        if (r > 0 && (p.revents & POLLIN) == 0 && (p.revents & (POLLHUP | POLLERR)) != 0) {
          return host_absent();
        }
        continue;
      }
      // n == 0: host not connected. Other errors: treat alike, but never spin.
      return host_absent();
    }
  }

  void write_locked(std::string_view bytes) override {
    wait_for_open_lag();
    if (!write_all_fd(fd_.get(), bytes, kWriteStallMs)) log_limited("reply dropped: host gone");
  }

 private:
  static constexpr int kOpenLagMs = 1000;

  bool confirmed() {
    std::lock_guard lock(state_mu_);
    return confirmed_;
  }
  void set_confirmed() {
    unconfirmed_data_ = false;
    lag_since_.reset();
    {
      std::lock_guard lock(state_mu_);
      if (confirmed_) return;
      confirmed_ = true;
    }
    state_cv_.notify_all();
  }

  ReadEvent host_absent() {
    if (unconfirmed_data_) {
      auto now = std::chrono::steady_clock::now();
      if (!lag_since_) lag_since_ = now;
      auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(now - *lag_since_);
      if (waited.count() < kOpenLagMs) {
        wait_sigio(kOpenLagMs - static_cast<int>(waited.count()));
        return ReadEvent::kData;  // nothing appended; the caller reads again
      }
    }
    return disconnected();
  }

  ReadEvent disconnected() {
    unconfirmed_data_ = false;
    lag_since_.reset();
    if (!was_disconnected_) {
      {
        // Release writers waiting out an open lag before taking the write lock.
        std::lock_guard lock(state_mu_);
        confirmed_ = false;
        ++disconnects_;
      }
      state_cv_.notify_all();
      std::lock_guard lock(write_mu_);
      bump_generation_locked();
    }
    was_disconnected_ = true;
    // Wakes on the port-open SIGIO the moment a host connects (the reader then reads at once).
    wait_sigio(kIdleWaitMs);
    return ReadEvent::kReset;
  }

  // A reply to a request that raced ahead of the port-open message: wait until the reader has
  // seen the kernel confirm the host, or declared it gone.
  void wait_for_open_lag() {
    std::unique_lock lock(state_mu_);
    if (confirmed_) return;
    pollfd p{fd_.get(), POLLOUT, 0};
    if (::poll(&p, 1, 0) == 1 && (p.revents & POLLOUT) != 0) return;
    const uint64_t seen = disconnects_;
    state_cv_.wait_for(lock, std::chrono::milliseconds(kOpenLagMs),
                       [&] { return confirmed_ || disconnects_ != seen; });
  }

  UniqueFd fd_;
  // Reader thread only.
  bool was_disconnected_ = false;
  bool unconfirmed_data_ = false;  // data read since the last disconnect, host not yet confirmed
  std::optional<std::chrono::steady_clock::time_point> lag_since_;
  // Shared with writers.
  std::mutex state_mu_;
  std::condition_variable state_cv_;
  bool confirmed_ = false;  // the kernel has reported the host connected since the last disconnect
  uint64_t disconnects_ = 0;
};

class UnixListenPort : public Port {
 public:
  explicit UnixListenPort(UniqueFd listener) : listener_(std::move(listener)) {}

  ReadEvent read_some(std::string* out, size_t max) override {
    if (conn_fd_ < 0) {
      int c = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) {
        if (errno != EINTR) std::this_thread::sleep_for(std::chrono::milliseconds(100));
        return ReadEvent::kReset;
      }
      std::lock_guard lock(write_mu_);
      conn_.reset(c);
      conn_fd_ = c;
      bump_generation_locked();
    }
    char buf[65536];
    size_t want = max < sizeof buf ? max : sizeof buf;
    ssize_t n = ::recv(conn_fd_, buf, want, 0);
    if (n > 0) {
      out->append(buf, static_cast<size_t>(n));
      return ReadEvent::kData;
    }
    if (n < 0 && errno == EINTR) return ReadEvent::kData;  // nothing appended; caller loops
    std::lock_guard lock(write_mu_);
    conn_.reset();
    conn_fd_ = -1;
    bump_generation_locked();
    return ReadEvent::kReset;
  }

  void write_locked(std::string_view bytes) override {
    if (!conn_.valid()) return;  // no host: drop
    if (!write_all_fd(conn_.get(), bytes, kWriteStallMs)) log_limited("reply dropped: host gone");
  }

 private:
  UniqueFd listener_;
  UniqueFd conn_;     // guarded by write_mu_
  int conn_fd_ = -1;  // reader's copy of conn_.get(); only the reader thread changes conn_
};

Result<std::string> find_virtio_port(std::string_view name) {
  const char* base = "/sys/class/virtio-ports";
  DIR* d = ::opendir(base);
  if (d == nullptr) return errno_error(errno, "opendir /sys/class/virtio-ports");
  std::string found;
  int budget = 1024;
  while (dirent* e = ::readdir(d)) {
    if (--budget < 0) break;
    if (std::strncmp(e->d_name, "vport", 5) != 0) continue;
    std::string name_path = std::string(base) + "/" + e->d_name + "/name";
    UniqueFd fd(::open(name_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) continue;
    char buf[256];
    ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
    if (n <= 0) continue;
    std::string_view content(buf, static_cast<size_t>(n));
    while (!content.empty() && (content.back() == '\n' || content.back() == '\0')) {
      content.remove_suffix(1);
    }
    if (content == name) {
      found = std::string("/dev/") + e->d_name;
      break;
    }
  }
  ::closedir(d);
  if (found.empty()) {
    return make_error(ErrorCode::kNotFound, "no virtio port named " + std::string(name));
  }
  return found;
}

}  // namespace

void Port::new_generation() {
  std::lock_guard lock(write_mu_);
  bump_generation_locked();
}

void Port::write(std::string_view bytes, uint64_t gen) {
  std::lock_guard lock(write_mu_);
  if (gen != generation_.load()) {
    log_limited("reply dropped: its request came from an earlier host connection");
    return;
  }
  write_locked(bytes);
}

bool write_all_fd(int fd, std::string_view data, int stall_ms) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == ENOTSOCK) n = ::write(fd, data.data() + off, data.size() - off);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      int r = ::poll(&p, 1, stall_ms);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;                      // stalled
      if ((p.revents & POLLOUT) == 0) return false;  // POLLHUP/POLLERR: host gone
      continue;
    }
    return false;  // EPIPE, ECONNRESET, ENODEV, ...
  }
  return true;
}

Result<std::unique_ptr<Port>> open_virtio_port(std::string_view name, int wait_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  for (;;) {
    auto dev = find_virtio_port(name);
    if (dev) {
      UniqueFd fd(::open(dev->c_str(), O_RDWR | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
      if (fd) {
        log_line("using port " + *dev);
        return std::unique_ptr<Port>(new FdPort(std::move(fd)));
      }
      if (std::chrono::steady_clock::now() >= deadline) return errno_error(errno, "open " + *dev);
    } else if (std::chrono::steady_clock::now() >= deadline) {
      return tl::unexpected(dev.error());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

Result<std::unique_ptr<Port>> open_path_port(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd) return errno_error(errno, "open " + path);
  return std::unique_ptr<Port>(new FdPort(std::move(fd)));
}

Result<std::unique_ptr<Port>> open_unix_listener(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return make_error(ErrorCode::kInvalidArgument, "unix socket path too long: " + path);
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return errno_error(errno, "socket");
  ::unlink(path.c_str());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return errno_error(errno, "bind " + path);
  }
  if (::listen(fd.get(), 4) != 0) return errno_error(errno, "listen " + path);
  return std::unique_ptr<Port>(new UnixListenPort(std::move(fd)));
}

}  // namespace forkd::agent

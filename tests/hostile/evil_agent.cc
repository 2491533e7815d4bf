// forkd-evil-agent: a TEST-ONLY hostile guest agent (issue 11, item 3). It never ships in an
// image: the hostile-guest suite (tests/integration/hostile_guest_test.cc) copies it into a
// running sandbox and starts it as root with exec.
//
//   forkd-evil-agent MODE [--fd N] [--no-detach] [--delay-ms MS]
//
// Takeover (default): detaches (fork, setsid, stdio on /dev/null) so that the exec that started
// it returns; finds the virtio port org.forkd.agent and the agent server process that holds it
// open (not PID 1: PID 1 is the reaper that restarts a server that exits); duplicates the
// server's port fd with pidfd_open + pidfd_getfd; waits --delay-ms (default 1500) so the exec's
// own reply reaches the host; SIGSTOPs the server (a stopped server never exits, so the reaper
// never starts another) and speaks the protocol on the duplicate. It reports the result as one
// line on /dev/console ("forkd-evil-agent: MODE active ..." or "... takeover failed: ..."), which
// the host sees in the sandbox's console log. --fd N skips the takeover and uses an inherited fd
// (host-side tests with a socketpair); --no-detach stays in the foreground.
//
// Modes (each answers every request on every host connection, forever):
//   wrong-types    ok:true replies whose every field has the wrong type
//   unknown-ids    events and replies for ids the host never sent (and ids of the wrong type)
//   absurd-length  frame headers claiming json_len/bin_len 0xFFFFFFFF, and garbage
//   never-ends     a header promising a 4 MiB binary body, 1 MiB of it, then nothing ever again
//                  (the port stays open and is still drained)
//   stop-reading   holds the port and never reads or writes again
//   flood-frames   valid 1 MiB stdout events for unknown ids, as fast as the port takes them
//   deep-nesting   replies with the right id whose "x" is an array nested ~400k levels deep (a
//                  frame just under the JSON limit): copied naively, it overflows a stack
//   forge-resumed  a correct hello/ping/exec (exec is not run: exit 0, no output), but `resumed`
//                  answered with "reseeded":"x"
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "proto/frame.h"

namespace {

using Json = nlohmann::json;

constexpr char kPortName[] = "org.forkd.agent";
#ifndef SYS_pidfd_open
constexpr long kSysPidfdOpen = 434;  // x86_64
#else
constexpr long kSysPidfdOpen = SYS_pidfd_open;
#endif
#ifndef SYS_pidfd_getfd
constexpr long kSysPidfdGetfd = 438;  // x86_64
#else
constexpr long kSysPidfdGetfd = SYS_pidfd_getfd;
#endif

const char* const kModes[] = {"wrong-types",  "unknown-ids",  "absurd-length", "never-ends",
                              "stop-reading", "flood-frames", "deep-nesting",  "forge-resumed"};

int usage(FILE* out) {
  std::fprintf(out,
               "usage: forkd-evil-agent MODE [--fd N] [--no-detach] [--delay-ms MS]\n"
               "TEST ONLY: a hostile forkd guest agent. Run as root inside a sandbox, it takes\n"
               "over the agent's virtio port (org.forkd.agent) and SIGSTOPs the real agent.\n"
               "modes:");
  for (const char* m : kModes) std::fprintf(out, " %s", m);
  std::fprintf(out, "\n");
  return out == stdout ? 0 : 2;
}

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// One line to the guest console (the host's console log), best effort.
void console(const std::string& line) {
  int fd = ::open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return;
  std::string l = "\nforkd-evil-agent: " + line + "\n";
  (void)!::write(fd, l.data(), l.size());
  ::close(fd);
}

std::string read_small(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  char buf[512];
  ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  if (n <= 0) return "";
  std::string s(buf, static_cast<size_t>(n));
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  return s;
}

// /dev/vportNpM of the named port, or "".
std::string find_port_dev() {
  DIR* d = ::opendir("/sys/class/virtio-ports");
  if (d == nullptr) return "";
  std::string found;
  while (dirent* e = ::readdir(d)) {
    if (std::strncmp(e->d_name, "vport", 5) != 0) continue;
    if (read_small(std::string("/sys/class/virtio-ports/") + e->d_name + "/name") == kPortName) {
      found = std::string("/dev/") + e->d_name;
      break;
    }
  }
  ::closedir(d);
  return found;
}

int ppid_of(int pid) {
  std::string stat = read_small("/proc/" + std::to_string(pid) + "/stat");
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  // ") S PPID ..."
  int ppid = -1;
  if (std::sscanf(stat.c_str() + close + 1, " %*c %d", &ppid) != 1) return -1;
  return ppid;
}

struct Holder {
  int pid = -1;
  int fd = -1;
};

// The process (not PID 1, not us) holding the port device open, and that fd number. When
// several do, the one whose parent is PID 1 (the server the reaper started) wins.
std::optional<Holder> find_port_holder(dev_t rdev) {
  std::optional<Holder> best;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return best;
  const int self = ::getpid();
  while (dirent* e = ::readdir(proc)) {
    int pid = std::atoi(e->d_name);
    if (pid <= 1 || pid == self) continue;
    std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
    DIR* fds = ::opendir(fd_dir.c_str());
    if (fds == nullptr) continue;
    while (dirent* f = ::readdir(fds)) {
      if (f->d_name[0] == '.') continue;
      struct stat st;
      if (::stat((fd_dir + "/" + f->d_name).c_str(), &st) != 0) continue;
      if (!S_ISCHR(st.st_mode) || st.st_rdev != rdev) continue;
      Holder h{pid, std::atoi(f->d_name)};
      if (!best || (ppid_of(pid) == 1 && ppid_of(best->pid) != 1)) best = h;
      break;
    }
    ::closedir(fds);
  }
  ::closedir(proc);
  return best;
}

// Takes the port away from the real agent. Returns our fd, or -1 with *why set.
int take_over(const std::string& mode, int delay_ms, std::string* why) {
  std::string dev = find_port_dev();
  if (dev.empty()) {
    *why = "no virtio port named " + std::string(kPortName);
    return -1;
  }
  struct stat st;
  if (::stat(dev.c_str(), &st) != 0) {
    *why = "stat " + dev + ": " + std::strerror(errno);
    return -1;
  }
  auto holder = find_port_holder(st.st_rdev);
  if (!holder) {
    *why = "no process holds " + dev;
    return -1;
  }
  long pidfd = ::syscall(kSysPidfdOpen, holder->pid, 0);
  if (pidfd < 0) {
    *why = "pidfd_open " + std::to_string(holder->pid) + ": " + std::strerror(errno);
    return -1;
  }
  long fd = ::syscall(kSysPidfdGetfd, static_cast<int>(pidfd), holder->fd, 0);
  int err = errno;
  ::close(static_cast<int>(pidfd));
  if (fd < 0) {
    *why = "pidfd_getfd " + std::to_string(holder->pid) + "/" + std::to_string(holder->fd) + ": " +
           std::strerror(err);
    return -1;
  }
  // Let the reply to the exec that started us leave the real agent first.
  sleep_ms(delay_ms);
  if (::kill(holder->pid, SIGSTOP) != 0) {
    *why = "SIGSTOP " + std::to_string(holder->pid) + ": " + std::strerror(errno);
    ::close(static_cast<int>(fd));
    return -1;
  }
  int ifd = static_cast<int>(fd);
  int fl = ::fcntl(ifd, F_GETFL);
  if (fl >= 0) (void)::fcntl(ifd, F_SETFL, (fl | O_NONBLOCK) & ~O_ASYNC);
  console(mode + " active: " + dev + " taken from agent pid " + std::to_string(holder->pid) +
          " (stopped), evil pid " + std::to_string(::getpid()));
  return ifd;
}

// Writes all of data, waiting for POLLOUT; gives up (returns false) after stall_ms without
// progress or when the host is gone. A frame cut short is the host's problem: we are hostile.
bool write_all(int fd, std::string_view data, int stall_ms = 2000) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return false;
    pollfd p{fd, POLLOUT, 0};
    int r = ::poll(&p, 1, stall_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0 || (p.revents & POLLOUT) == 0) return false;
  }
  return true;
}

std::string header(uint32_t json_len, uint32_t bin_len, uint8_t version = 1) {
  std::string h(forkd::proto::kMagic, sizeof forkd::proto::kMagic);
  h.push_back(static_cast<char>(version));
  h.append(3, '\0');
  for (uint32_t v : {json_len, bin_len}) {
    for (int i = 0; i < 4; ++i) h.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  return h;
}

std::string frame(const Json& j, std::string_view bin = {}) {
  std::string json = j.dump(-1, ' ', false, Json::error_handler_t::replace);
  std::string out = header(static_cast<uint32_t>(json.size()), static_cast<uint32_t>(bin.size()));
  out += json;
  out += bin;
  return out;
}

// Deterministic garbage that never contains the frame magic.
std::string garbage(size_t n) {
  std::string g(n, '\0');
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    char c = static_cast<char>(x & 0xff);
    g[i] = c == 'F' ? 'f' : c;
  }
  return g;
}

class Evil {
 public:
  Evil(std::string mode, int fd) : mode_(std::move(mode)), fd_(fd) {}

  [[noreturn]] void run() {
    if (mode_ == "stop-reading") {
      for (;;) ::pause();  // holds the port; never reads it again
    }
    std::string flood_bin(forkd::proto::kChunkLen, 'F');
    uint64_t flood_id = 1ull << 62;
    bool host_away = false;
    char buf[65536];
    for (;;) {
      pollfd p{fd_, POLLIN, 0};
      int r = ::poll(&p, 1, mode_ == "flood-frames" && !host_away ? 0 : 200);
      if (r > 0 && (p.revents & POLLIN) != 0) {
        ssize_t n = ::read(fd_, buf, sizeof buf);
        if (n > 0) {
          host_away = false;
          decoder_.feed(std::string_view(buf, static_cast<size_t>(n)));
          for (int guard = 0; guard < 10'000; ++guard) {
            auto f = decoder_.next();
            if (!f) break;
            if (*f) handle((*f)->json);
          }
        } else if (n == 0) {
          reset(&host_away);  // virtio: 0 means the host is not connected
        }
      } else if (r > 0 && (p.revents & (POLLHUP | POLLERR)) != 0) {
        reset(&host_away);
      }
      if (mode_ == "flood-frames" && !host_away) {
        // Ids the host never sent (host ids stay far below 2^62).
        (void)write_all(fd_, frame(Json{{"id", flood_id++}, {"event", "stdout"}}, flood_bin));
      }
    }
  }

 private:
  void reset(bool* host_away) {
    if (!*host_away) decoder_ = forkd::proto::FrameDecoder();
    *host_away = true;
    stalled_ = false;
    sleep_ms(100);  // no SIGIO here: poll the port's state at 10 Hz while the host is away
  }

  void send(const Json& j, std::string_view bin = {}) { (void)write_all(fd_, frame(j, bin)); }

  void handle(const std::string& text) {
    Json req = Json::parse(text, nullptr, false);
    uint64_t id = 0;
    std::string op;
    if (req.is_object()) {
      if (auto it = req.find("id"); it != req.end() && it->is_number_unsigned()) {
        id = it->get<uint64_t>();
      }
      if (auto it = req.find("op"); it != req.end() && it->is_string()) op = it->get<std::string>();
    }
    if (mode_ == "wrong-types") return wrong_types(id, op);
    if (mode_ == "unknown-ids") return unknown_ids(id);
    if (mode_ == "absurd-length") return absurd_length();
    if (mode_ == "never-ends") return never_ends(id);
    if (mode_ == "deep-nesting") return deep_nesting(id);
    if (mode_ == "forge-resumed") return forge_resumed(id, op, req);
    // flood-frames: requests are drained and never answered.
  }

  void wrong_types(uint64_t id, const std::string& op) {
    if (op == "exec") {
      send(Json{{"id", id}, {"event", 5}}, "wrong event type\n");
      send(Json{{"id", id}, {"event", "stdout"}}, "evil stdout\n");
    }
    Json j = {{"id", id},
              {"ok", true},
              // hello / ping
              {"version", 7},
              {"protocol", "one"},
              {"pid", "x"},
              {"hostname", Json::object()},
              {"numpy", 3},
              {"python", "yes"},
              {"uptime_ms", "x"},
              {"sandbox_id", 5},
              {"epoch", Json::array()},
              // exec
              {"exit_code", "x"},
              {"timed_out", "no"},
              {"duration_ms", Json::array()},
              // eval
              {"value", 5},
              {"stdout", 7},
              {"error", Json::array({1})},
              // files
              {"eof", "maybe"},
              {"entries", 7},
              {"truncated", "x"},
              {"size", -1},
              {"type", Json::object()},
              {"mode", "rwx"},
              {"mtime", "yesterday"},
              // resumed
              {"reseeded", "x"},
              {"reseed_error", 1},
              {"clock_set", 1},
              {"clock_error", Json::object()},
              {"hostname_set", "x"},
              {"hostname_error", 2},
              {"python_reseed_pending", "x"}};
    send(j, op == "file_read" ? std::string_view("body of a read that lies") : std::string_view());
  }

  void unknown_ids(uint64_t id) {
    // Host ids are (40 random bits << 8) + n: none has bit 63 or 62 set.
    const uint64_t never = id | (1ull << 63);
    send(Json{{"id", never}, {"event", "stdout"}}, std::string(4096, 'u'));
    send(Json{{"id", id ^ (1ull << 62)}, {"event", "stderr"}}, std::string(4096, 'u'));
    send(Json{{"id", never}, {"ok", true}, {"exit_code", 0}, {"timed_out", false}});
    send(Json{{"id", 0}, {"ok", true}});
    send(Json{{"id", -static_cast<int64_t>(id % 1000) - 1}, {"ok", true}});
    send(Json{{"id", std::to_string(id)}, {"ok", true}});
    send(Json{{"id", static_cast<double>(id) + 0.5}, {"ok", true}});
    send(Json{{"id", nullptr}, {"ok", true}});
    send(Json{{"ok", true}, {"exit_code", 0}});
  }

  void absurd_length() {
    std::string out = header(0xFFFFFFFFu, 0xFFFFFFFFu) + garbage(64 * 1024);
    out += header(16, 0xFFFFFFFFu) + "{\"id\":1,\"ok\":1}" + garbage(64 * 1024);
    out += header(0xFFFFFFFFu, 0) + garbage(4096);
    out += header(0, 0) + header(20, 0, 99) + garbage(4096);
    // Lengths at the very limits the protocol allows, with a body that is not JSON.
    out += header(forkd::proto::kMaxJsonLen, forkd::proto::kMaxBinLen) +
           garbage(forkd::proto::kMaxJsonLen + forkd::proto::kMaxBinLen);
    (void)write_all(fd_, out, 5000);
  }

  void deep_nesting(uint64_t id) {
    // Written as text: building it as a Json here would recurse just the same.
    std::string head = "{\"id\":" + std::to_string(id) + ",\"ok\":true,\"pid\":1,\"x\":";
    size_t depth = (forkd::proto::kMaxJsonLen - head.size() - 1) / 2;
    std::string json = head + std::string(depth, '[') + std::string(depth, ']') + "}";
    (void)write_all(fd_, header(static_cast<uint32_t>(json.size()), 0) + json, 5000);
  }

  void never_ends(uint64_t id) {
    if (stalled_) return;  // the host's decoder waits inside our frame: never finish it
    stalled_ = true;
    std::string json = Json{{"id", id}, {"ok", true}, {"pid", 1}}.dump();
    std::string out = header(static_cast<uint32_t>(json.size()), 4u << 20) + json;
    out += std::string(1u << 20, 'n');
    (void)write_all(fd_, out, 5000);
  }

  void forge_resumed(uint64_t id, const std::string& op, const Json& req) {
    auto str = [&](const char* k) {
      auto it = req.find(k);
      return it != req.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    if (op == "hello" || op == "ping") {
      Json j = {{"id", id},
                {"ok", true},
                {"version", "0.1.0"},
                {"protocol", 1},
                {"pid", ::getpid()},
                {"sandbox_id", sandbox_id_.empty() ? Json() : Json(sandbox_id_)},
                {"epoch", epoch_.empty() ? Json() : Json(epoch_)}};
      if (op == "ping") {
        j["hostname"] = "forkd";
        j["numpy"] = nullptr;
        j["python"] = false;
        j["uptime_ms"] = 1000;
      }
      return send(j);
    }
    if (op == "exec") {
      return send(Json{
          {"id", id}, {"ok", true}, {"exit_code", 0}, {"timed_out", false}, {"duration_ms", 1}});
    }
    if (op == "resumed") {
      sandbox_id_ = str("sandbox_id");
      epoch_ = str("epoch");
      return send(Json{{"id", id},
                       {"ok", true},
                       {"reseeded", "x"},
                       {"clock_set", true},
                       {"hostname_set", true},
                       {"hostname", str("hostname")},
                       {"sandbox_id", sandbox_id_},
                       {"epoch", epoch_},
                       {"python_reseed_pending", false}});
    }
    send(Json{{"id", id},
              {"ok", false},
              {"error", {{"code", "internal"}, {"message", "forkd-evil-agent: not implemented"}}}});
  }

  const std::string mode_;
  const int fd_;
  forkd::proto::FrameDecoder decoder_;
  bool stalled_ = false;
  std::string sandbox_id_, epoch_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage(stderr);
  std::string mode = argv[1];
  if (mode == "--help" || mode == "-h") return usage(stdout);
  bool known = false;
  for (const char* m : kModes) known = known || mode == m;
  if (!known) {
    std::fprintf(stderr, "forkd-evil-agent: unknown mode '%s'\n", mode.c_str());
    return usage(stderr);
  }
  int fd = -1;
  bool detach = true;
  int delay_ms = 1500;
  for (int i = 2; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--fd" && i + 1 < argc) {
      fd = std::atoi(argv[++i]);
    } else if (a == "--no-detach") {
      detach = false;
    } else if (a == "--delay-ms" && i + 1 < argc) {
      delay_ms = std::atoi(argv[++i]);
    } else {
      return usage(stderr);
    }
  }
  ::signal(SIGPIPE, SIG_IGN);
  if (detach) {
    pid_t child = ::fork();
    if (child < 0) return 1;
    if (child > 0) return 0;  // the exec that started us returns now
    ::setsid();
    int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
      for (int s = 0; s < 3; ++s) ::dup2(null, s);
      if (null > 2) ::close(null);
    }
  }
  if (fd < 0) {
    std::string why;
    fd = take_over(mode, delay_ms, &why);
    if (fd < 0) {
      console(mode + " takeover failed: " + why);
      return 1;
    }
  }
  Evil(mode, fd).run();
}

#include "identity.h"

#include <fcntl.h>
#include <linux/random.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>

#include "base/unique_fd.h"
#include "log.h"
#include "net.h"

namespace forkd::agent {

namespace {

std::mutex g_identity_mu;
std::optional<Identity> g_identity;  // guarded by g_identity_mu

bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

StepResult step_error(int err, std::string_view what) {
  return StepResult{false, std::string(what) + ": " + std::strerror(err)};
}

struct FreeDeleter {
  size_t size;
  void operator()(void* p) const {
    explicit_bzero(p, size);  // the seed was in here
    std::free(p);
  }
};

}  // namespace

bool valid_epoch(std::string_view s) {
  if (s.size() != kEpochLen) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool valid_sandbox_id(std::string_view s) {
  if (s.empty() || s.size() > kMaxSandboxIdLen) return false;
  for (char c : s) {
    if (!is_alnum(c) && c != '-' && c != '_') return false;
  }
  return true;
}

bool valid_hostname(std::string_view s) {
  // One DNS label as Linux takes it (HOST_NAME_MAX = 64): letters, digits, inner hyphens.
  if (s.empty() || s.size() > kMaxHostnameLen || s.front() == '-' || s.back() == '-') return false;
  for (char c : s) {
    if (!is_alnum(c) && c != '-') return false;
  }
  return true;
}

AgentResult<ResumedSpec> parse_resumed(const Request& req) {
  ResumedSpec spec;
  auto epoch = get_string(req.args, "epoch");
  if (!epoch) return tl::unexpected(epoch.error());
  if (!valid_epoch(*epoch)) return bad_request("\"epoch\" must be 32 lowercase hex characters");
  spec.epoch = std::move(*epoch);
  auto sandbox_id = get_string(req.args, "sandbox_id");
  if (!sandbox_id) return tl::unexpected(sandbox_id.error());
  if (!valid_sandbox_id(*sandbox_id)) {
    return bad_request("\"sandbox_id\" must be 1..64 characters of [A-Za-z0-9_-]");
  }
  spec.sandbox_id = std::move(*sandbox_id);
  auto hostname = get_string(req.args, "hostname");
  if (!hostname) return tl::unexpected(hostname.error());
  if (!valid_hostname(*hostname)) {
    return bad_request("\"hostname\" must be 1..64 characters of [A-Za-z0-9-], no outer '-'");
  }
  spec.hostname = std::move(*hostname);
  auto t = req.args.find("time_ns");
  if (t == req.args.end() || t->is_null()) return bad_request("missing field \"time_ns\"");
  const bool fits =
      t->is_number_integer() &&
      (!t->is_number_unsigned() || t->get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX));
  if (!fits || t->get<int64_t>() <= 0) {
    return bad_request("\"time_ns\" must be a positive int64 (ns since the epoch)");
  }
  spec.time_ns = t->get<int64_t>();
  if (req.body.size() < kMinSeedLen || req.body.size() > kMaxSeedLen) {
    return bad_request("the seed (binary body) must be 32..512 bytes");
  }
  spec.seed = req.body;
  if (auto n = req.args.find("network"); n != req.args.end() && !n->is_null()) {
    auto net = parse_net_spec(*n);  // validated here, applied by resumed_op
    if (!net) return tl::unexpected(net.error());
    spec.has_network = true;
    spec.network = *n;
  }
  return spec;
}

std::optional<Identity> current_identity() {
  std::lock_guard lock(g_identity_mu);
  return g_identity;
}

void set_identity(Identity id) {
  std::lock_guard lock(g_identity_mu);
  g_identity = std::move(id);
}

std::vector<std::pair<std::string, std::string>> identity_env() {
  auto id = current_identity();
  if (!id) return {};
  return {{"FORKD_SANDBOX_ID", id->sandbox_id}, {"FORKD_EPOCH", id->epoch}};
}

namespace {
// /dev/urandom, opened once at start (keep_rng_device_open). A child's `resumed` then makes no
// open and close: their path walk, file set-up and the RCU grace period that frees the file were
// guest kernel code every restored child translated afresh.
std::atomic<int> g_rng_fd{-1};
}  // namespace

void keep_rng_device_open() {
  int fd = ::open("/dev/urandom", O_RDWR | O_CLOEXEC);
  if (fd < 0) return;  // reseed_kernel_rng opens it each time instead
  int none = -1;
  if (!g_rng_fd.compare_exchange_strong(none, fd)) ::close(fd);
}

bool rng_device_kept_open() { return g_rng_fd.load() >= 0; }

StepResult reseed_kernel_rng(std::string_view seed) {
  if (seed.empty() || seed.size() > kMaxSeedLen) return StepResult{false, "bad seed length"};
  UniqueFd opened;
  int fd = g_rng_fd.load();
  if (fd < 0) {
    opened = UniqueFd(::open("/dev/urandom", O_RDWR | O_CLOEXEC));
    if (!opened) return step_error(errno, "open /dev/urandom");
    fd = opened.get();
  }
  // rand_pool_info ends in a flexible array: allocate header + bytes (zeroed, so the padding of a
  // length that is not a multiple of 4 is defined).
  const size_t size = sizeof(rand_pool_info) + seed.size();
  std::unique_ptr<rand_pool_info, FreeDeleter> info(
      static_cast<rand_pool_info*>(std::calloc(1, size)), FreeDeleter{size});
  if (!info) return StepResult{false, "out of memory"};
  info->entropy_count = static_cast<int>(seed.size() * 8);
  info->buf_size = static_cast<int>(seed.size());
  std::memcpy(info->buf, seed.data(), seed.size());
  if (::ioctl(fd, RNDADDENTROPY, info.get()) != 0) return step_error(errno, "RNDADDENTROPY");
  if (::ioctl(fd, RNDRESEEDCRNG) != 0) return step_error(errno, "RNDRESEEDCRNG");
  return StepResult{true, {}};
}

StepResult set_wall_clock(int64_t time_ns) {
  timespec ts{static_cast<time_t>(time_ns / 1'000'000'000),
              static_cast<long>(time_ns % 1'000'000'000)};
  if (::clock_settime(CLOCK_REALTIME, &ts) != 0) return step_error(errno, "clock_settime");
  return StepResult{true, {}};
}

namespace {

// The link last found to point at the kernel's hostname, by its inode and change time: a child's
// `resumed` then checks it with lstat, which leaves its access time alone. readlink writes that
// time (relatime: the first read since the link was made), and with it every child marked the
// inode dirty and woke the guest's writeback 5 s later.
struct KnownLink {
  std::string path;
  dev_t dev = 0;
  ino_t ino = 0;
  timespec ctime{};
};
std::mutex g_known_link_mu;
KnownLink g_known_link;
std::atomic<uint64_t> g_link_reads{0};

bool same_link(const KnownLink& k, const std::string& path, const struct stat& st) {
  return k.path == path && k.dev == st.st_dev && k.ino == st.st_ino &&
         k.ctime.tv_sec == st.st_ctim.tv_sec && k.ctime.tv_nsec == st.st_ctim.tv_nsec;
}

}  // namespace

bool hostname_file_is_linked(const std::string& file) {
  struct stat st {};
  if (::lstat(file.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return false;
  {
    std::lock_guard lock(g_known_link_mu);
    if (same_link(g_known_link, file, st)) return true;
  }
  char target[sizeof kKernelHostnamePath] = {};
  g_link_reads.fetch_add(1, std::memory_order_relaxed);
  ssize_t n = ::readlink(file.c_str(), target, sizeof target);
  bool linked = n == static_cast<ssize_t>(sizeof kKernelHostnamePath - 1) &&
                std::memcmp(target, kKernelHostnamePath, sizeof kKernelHostnamePath - 1) == 0;
  if (linked) {
    std::lock_guard lock(g_known_link_mu);
    g_known_link = KnownLink{file, st.st_dev, st.st_ino, st.st_ctim};
  }
  return linked;
}

uint64_t hostname_link_reads() { return g_link_reads.load(std::memory_order_relaxed); }

StepResult link_hostname_file(const std::string& file) {
  if (hostname_file_is_linked(file)) return StepResult{true, {}};
  const std::string staged = file + ".forkd-link";
  (void)::unlink(staged.c_str());
  if (::symlink(kKernelHostnamePath, staged.c_str()) != 0) return step_error(errno, "symlink");
  if (::rename(staged.c_str(), file.c_str()) != 0) {
    StepResult r = step_error(errno, "rename");
    (void)::unlink(staged.c_str());
    return r;
  }
  (void)hostname_file_is_linked(file);  // known from now on (its one readlink is here, at boot)
  return StepResult{true, {}};
}

StepResult set_host_name(const std::string& name) {
  if (::sethostname(name.data(), name.size()) != 0) return step_error(errno, "sethostname");
  if (hostname_file_is_linked()) return StepResult{true, {}};
  UniqueFd fd(::open(kHostnameFile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd) {
    std::string line = name + "\n";
    ssize_t n = ::write(fd.get(), line.data(), line.size());
    (void)n;  // best effort: the kernel hostname is what counts
  }
  return StepResult{true, {}};
}

std::string python_salt_hex(std::string_view seed) {
  std::array<unsigned char, 32> salt{};
  size_t got = 0;
  while (got < salt.size()) {
    ssize_t n = ::getrandom(salt.data() + got, salt.size() - got, GRND_NONBLOCK);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the folded seed alone still separates clones
    got += static_cast<size_t>(n);
  }
  for (size_t i = 0; i < seed.size(); ++i) salt[i % salt.size()] ^= static_cast<uint8_t>(seed[i]);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char b : salt) {
    hex.push_back(kHex[b >> 4]);
    hex.push_back(kHex[b & 15]);
  }
  explicit_bzero(salt.data(), salt.size());
  return hex;
}

ResumedOutcome run_resumed(ResumedSpec& spec, PythonWorker* python, const ResumedOptions& opts) {
  ResumedOutcome out;
  // a. The kernel CRNG first: everything after (Python's os.urandom included) draws from it.
  out.rng = reseed_kernel_rng(spec.seed);
  // b. Wall clock, exactly the host's value (the request is a few ms old at most).
  out.clock = StepResult{false, "disabled (--no-system-identity)"};
  if (opts.system_identity) out.clock = set_wall_clock(spec.time_ns);
  // c. Hostname; the reply reports what the kernel now says.
  out.host = StepResult{false, "disabled (--no-system-identity)"};
  if (opts.system_identity) out.host = set_host_name(spec.hostname);
  char actual[256] = {};
  if (::gethostname(actual, sizeof actual - 1) != 0) actual[0] = '\0';
  out.hostname = actual;
  // d. The NIC: address, route, neighbour and resolver as the host asks (a child of a networked
  // tag). Failing it fails nothing else; the host decides what a child without network means.
  if (spec.has_network) {
    out.has_network = true;
    out.network = StepResult{false, "disabled (--no-system-identity)"};
    if (!has_nic()) {
      out.network = StepResult{false, "the VM has no NIC"};
    } else if (opts.system_identity) {
      bool changed = false;
      out.network = apply_net_spec(*parse_net_spec(spec.network), &changed);
      out.network_changed = changed;
    }
  }
  // e. Identity for ping and every later exec.
  set_identity(Identity{spec.sandbox_id, spec.epoch});
  // f. The warm Python worker's PRNGs (and its os.environ): applied by the next eval, before
  // its code (PythonWorker::defer_reseed).
  if (python != nullptr) {
    std::string salt = python_salt_hex(spec.seed);
    python->defer_reseed(salt, identity_env());
    explicit_bzero(salt.data(), salt.size());
  }
  explicit_bzero(spec.seed.data(), spec.seed.size());
  out.python_reseed_pending = python != nullptr;
  out.epoch = spec.epoch;
  out.sandbox_id = spec.sandbox_id;
  // The reply tells the host all of it; the guest's console gets a line only when a step
  // failed. Every line goes through the serial console, whose driver code each child would
  // otherwise translate afresh right after its restore.
  if (!out.rng.ok || !out.clock.ok || !out.host.ok) {
    log_line("resumed: sandbox_id=" + spec.sandbox_id + " epoch=" + spec.epoch +
             " reseeded=" + (out.rng.ok ? "1" : "0") + " clock_set=" + (out.clock.ok ? "1" : "0") +
             " hostname_set=" + (out.host.ok ? "1" : "0"));
  }
  return out;
}

Json resumed_result(const ResumedOutcome& o) {
  Json out = Json::object();
  out["reseeded"] = o.rng.ok;
  if (!o.rng.ok) out["reseed_error"] = o.rng.error;
  out["clock_set"] = o.clock.ok;
  if (!o.clock.ok) out["clock_error"] = o.clock.error;
  out["hostname_set"] = o.host.ok;
  if (!o.host.ok) out["hostname_error"] = o.host.error;
  out["hostname"] = o.hostname;
  if (o.has_network) {
    if (o.network_changed) out["network_changed"] = *o.network_changed;
    out["network_set"] = o.network.ok;
    if (!o.network.error.empty()) out["network_error"] = o.network.error;
  }
  out["python_reseed_pending"] = o.python_reseed_pending;
  out["epoch"] = o.epoch;
  out["sandbox_id"] = o.sandbox_id;
  return out;
}

AgentResult<OpReply> resumed_op(const Request& req, PythonWorker* python,
                                const ResumedOptions& opts) {
  auto spec = parse_resumed(req);
  if (!spec) return tl::unexpected(spec.error());
  OpReply reply;
  reply.result = resumed_result(run_resumed(*spec, python, opts));
  return reply;
}

}  // namespace forkd::agent

#include "python_worker.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "exec_op.h"
#include "log.h"
#include "worker_script.h"

extern char** environ;

namespace forkd::agent {

namespace {

using Clock = std::chrono::steady_clock;
// numpy's import under TCG emulation takes seconds; be generous.
constexpr int64_t kHelloTimeoutMs = 120'000;

std::string python_path() {
  const char* path = std::getenv("PATH");
  auto found = resolve_command("python3", path != nullptr ? path : "/usr/bin:/bin");
  return found.value_or("");
}

}  // namespace

std::string encode_worker_message(const Json& msg) {
  std::string body = to_wire(msg);
  std::string out;
  uint32_t n = static_cast<uint32_t>(body.size());
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += body;
  return out;
}

uint32_t decode_worker_length(std::string_view buf) {
  uint32_t n = 0;
  for (int i = 3; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(buf[static_cast<size_t>(i)]);
  return n;
}

AgentResult<WorkerHello> parse_worker_hello(std::string_view json) {
  Json j = Json::parse(json.begin(), json.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("hello")) {
    return agent_error("internal", "python worker sent a bad hello");
  }
  WorkerHello hello;
  if (j.contains("numpy") && j["numpy"].is_string()) hello.numpy = j["numpy"];
  if (j.contains("python") && j["python"].is_string())
    hello.python = j["python"].get<std::string>();
  return hello;
}

AgentResult<Json> parse_eval_reply(std::string_view json) {
  Json j = Json::parse(json.begin(), json.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return agent_error("internal", "python worker sent a bad reply");
  }
  Json out = Json::object();
  for (const char* key : {"value", "error"}) {
    if (j.contains(key) && j[key].is_string()) {
      out[key] = j[key];
    } else if (!j.contains(key) || j[key].is_null()) {
      out[key] = nullptr;
    } else {
      return agent_error("internal", std::string("python worker reply: bad \"") + key + "\"");
    }
  }
  out["stdout"] = j.contains("stdout") && j["stdout"].is_string() ? j["stdout"] : Json("");
  return out;
}

AgentStatus parse_reseed_reply(std::string_view json) {
  Json j = Json::parse(json.begin(), json.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return agent_error("internal", "python worker sent a bad reseed reply");
  }
  if (j.contains("reseeded") && j["reseeded"] == true) return {};
  std::string why = j.contains("error") && j["error"].is_string() ? j["error"].get<std::string>()
                                                                  : "no reason given";
  return agent_error("internal", "python reseed failed: " + why.substr(0, 512));
}

PythonWorker::~PythonWorker() {
  std::lock_guard lock(eval_mu_);
  stop_locked();
}

void PythonWorker::set_info(bool python, Json numpy, bool starting) {
  {
    std::lock_guard lock(info_mu_);
    python_ = python;
    numpy_ = std::move(numpy);
    starting_ = starting;
  }
  info_cv_.notify_all();
}

void PythonWorker::start_async() {
  if (python_path().empty()) {
    log_line("python3 not found; eval disabled");
    return;
  }
  set_info(true, nullptr, true);
  // Detached: the worker object lives for the whole agent process.
  std::thread([this] {
    std::lock_guard lock(eval_mu_);
    auto st = start_locked();
    if (!st) {
      log_line("python worker: " + st.error().message);
      set_info(true, nullptr, false);
    }
  }).detach();
}

PythonWorker::Info PythonWorker::info(int wait_ms) {
  std::unique_lock lock(info_mu_);
  info_cv_.wait_for(lock, std::chrono::milliseconds(wait_ms), [this] { return !starting_; });
  return Info{python_, numpy_};
}

AgentStatus PythonWorker::start_locked() {
  stop_locked();
  std::string python = python_path();
  if (python.empty()) {
    set_info(false, nullptr, false);
    return agent_error("no_python", "python3 not found in PATH");
  }
  int req[2], rep[2];
  if (::pipe2(req, O_CLOEXEC) != 0) return errno_agent_error(errno, "worker pipe");
  UniqueFd req_r(req[0]), req_w(req[1]);
  if (::pipe2(rep, O_CLOEXEC) != 0) return errno_agent_error(errno, "worker pipe");
  UniqueFd rep_r(rep[0]), rep_w(rep[1]);
  UniqueFd null_fd(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!null_fd) return errno_agent_error(errno, "open /dev/null");
  std::string arg0 = "python3", arg1 = "-u", arg2 = "-c", arg3 = kWorkerScript;
  char* argv[] = {arg0.data(), arg1.data(), arg2.data(), arg3.data(), nullptr};
  pid_t pid = ::fork();
  if (pid < 0) return errno_agent_error(errno, "worker fork");
  if (pid == 0) {
    // Async-signal-safe calls only. Move the pipe ends above 4 before placing them at 3 and 4.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    setsid();
    int in = fcntl(req_r.get(), F_DUPFD_CLOEXEC, 10);
    int out = fcntl(rep_w.get(), F_DUPFD_CLOEXEC, 10);
    dup2(null_fd.get(), 0);
    dup2(null_fd.get(), 1);
    dup2(null_fd.get(), 2);
    dup2(in, 3);
    dup2(out, 4);
    execve(python.c_str(), argv, environ);
    _exit(127);
  }
  pid_ = pid;
  applied_reseed_ = 0;
  to_worker_ = std::move(req_w);
  from_worker_ = std::move(rep_r);
  auto hello_msg = read_message_locked(kHelloTimeoutMs);
  if (!hello_msg) {
    stop_locked();
    return agent_error("internal", "python worker did not start: " + hello_msg.error().message);
  }
  auto hello = parse_worker_hello(*hello_msg);
  if (!hello) {
    stop_locked();
    return tl::unexpected(hello.error());
  }
  log_line("python worker ready: python=" + hello->python +
           " numpy=" + (hello->numpy.is_string() ? hello->numpy.get<std::string>() : "none"));
  set_info(true, hello->numpy, false);
  return {};
}

void PythonWorker::stop_locked() {
  to_worker_.reset();
  from_worker_.reset();
  if (pid_ > 0) {
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  pid_ = -1;
}

AgentResult<std::string> PythonWorker::read_message_locked(int64_t timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  std::string buf;
  size_t need = 4;
  bool have_len = false;
  while (buf.size() < need) {
    int wait = -1;
    if (timeout_ms > 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return agent_error("timeout", "eval timed out");
      wait = static_cast<int>(std::min<int64_t>(left.count(), 60'000));
    }
    pollfd p{from_worker_.get(), POLLIN, 0};
    int r = ::poll(&p, 1, wait);
    if (r < 0 && errno != EINTR) return errno_agent_error(errno, "poll worker");
    if (r <= 0) continue;
    char chunk[65536];
    size_t want = std::min(sizeof chunk, need - buf.size());
    ssize_t n = ::read(from_worker_.get(), chunk, want);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return agent_error("internal", "python worker exited");
    buf.append(chunk, static_cast<size_t>(n));
    if (!have_len && buf.size() == 4) {
      uint32_t len = decode_worker_length(buf);
      if (len == 0 || len > kMaxWorkerMessage) return agent_error("internal", "bad worker message");
      need = 4 + len;
      have_len = true;
    }
  }
  return buf.substr(4);
}

AgentResult<OpReply> PythonWorker::eval(const Request& req) {
  auto code = get_string(req.args, "code");
  if (!code) return tl::unexpected(code.error());
  auto timeout = get_u64(req.args, "timeout_ms", 0, kMaxTimeoutMs);
  if (!timeout) return tl::unexpected(timeout.error());
  std::lock_guard lock(eval_mu_);
  // A reseed that could not be applied when `resumed` came goes first; one restart at most.
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (pid_ < 0) {
      auto st = start_locked();
      if (!st) return tl::unexpected(st.error());
    }
    if (apply_reseed_locked(kWorkerReseedMs) || pid_ > 0) break;
  }
  if (pid_ < 0) return agent_error("internal", "python worker exited");
  if (!send_locked(encode_worker_message(Json{{"code", *code}}))) {
    return agent_error("internal", "python worker exited");
  }
  auto reply = read_message_locked(static_cast<int64_t>(*timeout));
  if (!reply) {
    // Timed out or died: either way the worker's state is unknown; start afresh next time.
    stop_locked();
    return tl::unexpected(reply.error());
  }
  auto result = parse_eval_reply(*reply);
  if (!result) {
    stop_locked();
    return tl::unexpected(result.error());
  }
  OpReply out;
  out.result = std::move(*result);
  return out;
}

bool PythonWorker::send_locked(const std::string& msg) {
  size_t off = 0;
  while (off < msg.size()) {
    ssize_t n = ::write(to_worker_.get(), msg.data() + off, msg.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      stop_locked();
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return true;
}

bool PythonWorker::apply_reseed_locked(int64_t timeout_ms) {
  Json msg;
  uint64_t gen;
  {
    std::lock_guard lock(info_mu_);
    if (reseed_gen_ == 0 || applied_reseed_ == reseed_gen_) return true;
    Json env = Json::object();
    for (const auto& [k, v] : reseed_env_) env[k] = v;
    msg = Json{{"reseed", reseed_salt_}, {"env", std::move(env)}};
    gen = reseed_gen_;
  }
  if (pid_ < 0) return false;
  if (!send_locked(encode_worker_message(msg))) return false;
  auto reply = read_message_locked(std::max<int64_t>(timeout_ms, 1));
  if (!reply) {
    // A late reply would be taken for the next eval's: the worker must go.
    log_line("python worker: reseed: " + reply.error().message + "; restarting it");
    stop_locked();
    return false;
  }
  auto st = parse_reseed_reply(*reply);
  if (!st) {
    log_line("python worker: " + st.error().message);
    return false;
  }
  applied_reseed_ = gen;
  return true;
}

bool PythonWorker::reseed(const std::string& salt_hex, const WorkerEnv& env, int timeout_ms) {
  const auto start = Clock::now();
  defer_reseed(salt_hex, env);
  std::unique_lock lock(eval_mu_, std::defer_lock);
  if (!lock.try_lock_for(std::chrono::milliseconds(timeout_ms))) {
    log_line("python worker busy; reseeding it before the next eval");
    return false;
  }
  if (pid_ < 0) return false;  // no worker: the next one gets it at its first eval
  auto left = timeout_ms -
              std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
  return apply_reseed_locked(std::max<int64_t>(left, 1));
}

void PythonWorker::defer_reseed(const std::string& salt_hex, const WorkerEnv& env) {
  std::lock_guard lock(info_mu_);
  explicit_bzero(reseed_salt_.data(), reseed_salt_.size());
  reseed_salt_ = salt_hex;
  reseed_env_ = env;
  ++reseed_gen_;
}

}  // namespace forkd::agent

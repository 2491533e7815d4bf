#include "cli/output.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>
#include <mutex>

#include "base/files.h"
#include "engine/sandbox_jail.h"

namespace forkd::cli {

int report_error(const Error& err) {
  std::fprintf(stderr, "forkd: %s\n", err.describe().c_str());
  switch (err.code()) {
    case ErrorCode::kGuestCommandNotFound:
      return kExitNotFound;
    case ErrorCode::kInvalidArgument:
      return kExitUsage;
    case ErrorCode::kCancelled:
      return kExitInterrupted;
    default:
      return kExitError;
  }
}

std::string age_text(int64_t created_unix) {
  int64_t s = static_cast<int64_t>(std::time(nullptr)) - created_unix;
  if (s < 120) return std::to_string(s) + "s";
  if (s < 7200) return std::to_string(s / 60) + "m";
  return std::to_string(s / 3600) + "h";
}

std::string ports_text(const nlohmann::json& ports) {
  std::string out;
  if (!ports.is_array()) return out;
  for (const auto& p : ports) {
    if (!p.is_object()) continue;
    auto num = [&](const char* k) {
      auto it = p.find(k);
      return it != p.end() && it->is_number_integer() ? std::to_string(it->get<int64_t>()) : "?";
    };
    auto a = p.find("address");
    std::string addr = a != p.end() && a->is_string() ? a->get<std::string>() : "127.0.0.1";
    out += "  " + num("guest") + "->" + addr + ":" + num("host");
  }
  return out;
}

vmm::Limits LimitArgs::limits() const { return engine::limits_of(memory_limit_mib, cpus, pids); }

void add_limit_options(CLI::App* sub, LimitArgs* a, const std::string& whose) {
  sub->add_option("--memory-limit", a->memory_limit_mib,
                  "Memory limit of " + whose +
                      ", guest RAM included, in MiB (over it the "
                      "kernel kills it: state failed, reason oom)")
      ->check(CLI::Range(32, 1 << 20));
  sub->add_option("--cpus", a->cpus, "CPU quota of " + whose + ", in cores (e.g. 0.5)")
      ->check(CLI::Range(0.01, 1024.0));
  sub->add_option("--pids", a->pids, "Most tasks (threads) " + whose + " may have")
      ->check(CLI::Range(8, 1 << 22));
}

Result<engine::EngineConfig> make_config(const GlobalOptions& g) {
  auto cfg = engine::EngineConfig::from_env();
  if (!g.accel.empty() && g.accel != "auto") cfg.accel = g.accel;
  if (g.machine == "pc") {
    cfg.machine = vmm::MachineType::kPc;
  } else if (g.machine == "microvm") {
    cfg.machine = vmm::MachineType::kMicrovm;
  } else if (!g.machine.empty()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "unknown machine type '" + g.machine + "' (use microvm or pc)");
  }
  if (auto st = engine::prepare_home(cfg); !st) return tl::unexpected(st.error());
  return cfg;
}

engine::EventFn exec_stream(bool json) {
  if (json) return {};
  return [](const std::string& which, std::string_view data) {
    (void)write_all(which == "stderr" ? STDERR_FILENO : STDOUT_FILENO, data);
  };
}

int finish_exec(const engine::ExecResult& res, bool json, double timeout_s, nlohmann::json extra) {
  if (json) {
    extra["exit_code"] = res.exit_code;
    extra["timed_out"] = res.timed_out;
    extra["duration_ms"] = res.duration_ms;
    extra["stdout"] = res.stdout_data;
    extra["stderr"] = res.stderr_data;
    extra["truncated"] = res.stdout_truncated || res.stderr_truncated;
    extra["stdout_bytes"] = res.stdout_bytes;
    extra["stderr_bytes"] = res.stderr_bytes;
    print_json(extra);
  }
  if (res.stdout_truncated || res.stderr_truncated) {
    std::fprintf(stderr,
                 "forkd: output truncated: kept %zu of %llu stdout and %zu of %llu stderr bytes "
                 "(raise it with --max-output-mib)\n",
                 res.stdout_data.size(), static_cast<unsigned long long>(res.stdout_bytes),
                 res.stderr_data.size(), static_cast<unsigned long long>(res.stderr_bytes));
  }
  if (res.timed_out) {
    std::fprintf(stderr, "forkd: command timed out after %.3g s and was killed [timeout]\n",
                 timeout_s);
    return kExitTimeout;
  }
  return res.exit_code;
}

void print_json(const nlohmann::json& j) {
  std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
}

Status parse_env(const std::vector<std::string>& kvs, std::map<std::string, std::string>* env) {
  for (const auto& kv : kvs) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      return make_error(ErrorCode::kInvalidArgument, "--env wants KEY=VALUE, got " + kv);
    }
    (*env)[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return {};
}

engine::ProgressFn stderr_progress() {
  return [](std::string_view line) {
    std::fprintf(stderr, "forkd: %.*s\n", static_cast<int>(line.size()), line.data());
    std::fflush(stderr);
  };
}

std::function<void(uint64_t, uint64_t)> byte_progress(std::string label) {
  if (!::isatty(STDERR_FILENO)) return {};
  struct State {
    std::mutex mu;
    std::chrono::steady_clock::time_point last{};
    bool ended = false;
  };
  auto st = std::make_shared<State>();  // co-owned by the copies of the returned function
  return [st, label = std::move(label)](uint64_t done, uint64_t total) {
    std::lock_guard lock(st->mu);
    auto now = std::chrono::steady_clock::now();
    bool end = done >= total;
    if (st->ended || (!end && now - st->last < std::chrono::milliseconds(200))) return;
    st->last = now;
    st->ended = end;
    double pct = total ? 100.0 * static_cast<double>(done) / static_cast<double>(total) : 100;
    std::fprintf(stderr, "\rforkd: %s: %3.0f%% of %.1f MB%s", label.c_str(), pct,
                 static_cast<double>(total) / 1e6, end ? "\n" : "");
    std::fflush(stderr);
  };
}

}  // namespace forkd::cli

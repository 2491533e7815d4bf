#include "base/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <mutex>

namespace forkd {

namespace {
std::mutex g_mu;
spdlog::level::level_enum g_level = spdlog::level::warn;
}  // namespace

void init_logging(spdlog::level::level_enum default_level) {
  std::lock_guard lock(g_mu);
  g_level = default_level;
  if (const char* env = std::getenv("FORKD_LOG"); env && *env) {
    g_level = spdlog::level::from_str(env);
  }
  spdlog::set_level(g_level);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %n %v");
}

std::shared_ptr<spdlog::logger> logger(const std::string& name) {
  std::lock_guard lock(g_mu);
  if (auto existing = spdlog::get(name)) return existing;
  auto created = spdlog::stderr_color_mt(name);
  created->set_level(g_level);
  return created;
}

bool RateLimit::allow() {
  std::lock_guard lock(mu_);
  auto now = std::chrono::steady_clock::now();
  if (now - window_start_ >= period_) {
    window_start_ = now;
    used_ = 0;
    last_suppressed_ = dropped_;
    dropped_ = 0;
  }
  if (used_ < burst_) {
    ++used_;
    return true;
  }
  ++dropped_;
  return false;
}

}  // namespace forkd

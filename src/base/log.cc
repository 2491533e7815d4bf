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

}  // namespace forkd

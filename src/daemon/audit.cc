#include "daemon/audit.h"

#include <fcntl.h>
#include <sys/time.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <nlohmann/json.hpp>

#include "base/files.h"
#include "base/log.h"

namespace forkd::daemon {

namespace {

// RFC 3339 UTC with milliseconds.
std::string now_rfc3339() {
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms % 1000));
  return buf;
}

}  // namespace

Result<AuditLog> AuditLog::open(const std::string& path) {
  auto fd = open_file(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (!fd) return tl::unexpected(fd.error().wrap("audit log"));
  return AuditLog(std::move(*fd));
}

void AuditLog::append(const AuditRecord& r) {
  nlohmann::json j = {
      {"ts", now_rfc3339()}, {"method", r.method},         {"path", r.path},
      {"status", r.status},  {"latency_us", r.latency_us}, {"user_agent", r.user_agent},
      {"remote", r.remote}};
  std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  if (auto st = write_all(fd_.get(), line); !st) {
    static std::atomic<int64_t> last_warn{0};
    int64_t now = std::time(nullptr);
    if (last_warn.exchange(now) != now) {
      logger("daemon")->warn("audit_write_failed error=\"{}\"", st.error().describe());
    }
  }
}

}  // namespace forkd::daemon

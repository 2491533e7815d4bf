#pragma once
// The audit log: one JSON line per request {ts, method, path, status, latency_us, user_agent,
// remote}, appended with O_APPEND (one write(2) per line, so lines from concurrent requests do
// not interleave). Bodies, query strings and headers other than User-Agent are never logged.
#include <cstdint>
#include <string>

#include "base/error.h"
#include "base/unique_fd.h"

namespace forkd::daemon {

struct AuditRecord {
  std::string method;
  std::string path;
  int status = 0;
  int64_t latency_us = 0;
  std::string user_agent;
  std::string remote;
};

class AuditLog {
 public:
  // Opens (creating with mode 0600) path for appending.
  static Result<AuditLog> open(const std::string& path);
  // Best effort: a failed write is logged (rate-limited) and never fails the request.
  void append(const AuditRecord& r);

 private:
  explicit AuditLog(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace forkd::daemon

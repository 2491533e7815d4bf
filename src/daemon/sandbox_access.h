#pragma once
// Helpers of the routes under /v1/sandboxes/:id: the id from the path, and running an operation
// on the sandbox's cached agent connection.
#include <httplib.h>

#include <optional>
#include <string>

#include "base/paths.h"
#include "daemon/errors.h"
#include "daemon/routes.h"

namespace forkd::daemon {

// The id from the path (the first capture), validated, or a 400 already written to res.
inline std::optional<std::string> path_id(const httplib::Request& req, httplib::Response& res) {
  std::string id = req.matches.size() > 1 ? req.matches[1].str() : "";
  if (!is_safe_name(id)) {
    send_error(res, Error(ErrorCode::kInvalidArgument, "invalid sandbox id '" + id.substr(0, 80) +
                                                           "' (must match ^[A-Za-z0-9_-]{1,64}$)"));
    return std::nullopt;
  }
  return id;
}

// Runs op on the sandbox's cached connection; on an error that may have broken the connection,
// the connection is dropped (the next request re-attaches). Returns false after writing the error.
template <typename Op>
bool with_sandbox(DaemonContext& ctx, const std::string& id, httplib::Response& res, Op op) {
  auto sb = ctx.agents.get(id);
  if (!sb) {
    send_error(res, sb.error());
    return false;
  }
  std::optional<Error> err = op(**sb);
  if (err) {
    if (breaks_connection(*err)) ctx.agents.drop(id, *sb);
    send_error(res, *err);
    return false;
  }
  return true;
}

// One of the sandbox's exec slots, or a 429 (with Retry-After) written to res. Checked before
// attaching: a sandbox already at its cap costs nothing more.
inline std::unique_ptr<ExecSlots::Guard> acquire_exec_slot(DaemonContext& ctx,
                                                           const std::string& id,
                                                           httplib::Response& res) {
  auto slot = ctx.exec_slots.acquire(id);
  if (!slot) {
    res.set_header("Retry-After", "1");
    send_error(res, 429,
               "too many execs on " + id + " (cap " + std::to_string(ctx.exec_slots.cap()) +
                   " at once), retry later",
               "too_many_requests");
  }
  return slot;
}

}  // namespace forkd::daemon

#pragma once
// The one table from engine error codes to HTTP statuses, and the `{"error": ...}` body every
// 4xx/5xx response carries (contract: shared/reference/forkd-rest-v1.md). The body also names
// the stable code (`"code": "not_found"`), an extension clients may act on.
#include <httplib.h>

#include <nlohmann/json.hpp>
#include <string>

#include "base/error.h"

namespace forkd::daemon {

// HTTP status for an engine error code.
int http_status(ErrorCode code);

// Writes JSON with the given status. Invalid UTF-8 (guest output) is replaced, never thrown on.
void send_json(httplib::Response& res, int status, const nlohmann::json& body);

// Writes err with the status from the table.
void send_error(httplib::Response& res, const Error& err);

// Writes an error with an explicit status, for conditions that are not engine errors (401, 413,
// 404 for unknown routes, 501).
void send_error(httplib::Response& res, int status, const std::string& message,
                std::string_view code);

}  // namespace forkd::daemon

#include "daemon/errors.h"

namespace forkd::daemon {

int http_status(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return 400;
    case ErrorCode::kNotFound:
      return 404;
    case ErrorCode::kAlreadyExists:
    case ErrorCode::kNoPython:            // the sandbox's image cannot eval
    case ErrorCode::kFailedPrecondition:  // e.g. a link whose parent is gone: not restorable
    case ErrorCode::kChecksumMismatch:    // tag not restorable: the contract's 409
      return 409;
    case ErrorCode::kGuestCommandNotFound:
      return 422;
    case ErrorCode::kAgentError:     // the guest agent answered with an error
    case ErrorCode::kAgentProtocol:  // ... or with a reply of the wrong shape
    case ErrorCode::kProtocol:
      return 502;
    case ErrorCode::kUnavailable:
    case ErrorCode::kCancelled:
      return 503;
    case ErrorCode::kTimeout:
    case ErrorCode::kAgentTimeout:
      return 504;
    case ErrorCode::kNoSpace:
      return 507;
    case ErrorCode::kInternal:
    case ErrorCode::kIo:
    case ErrorCode::kQemuMissing:
    case ErrorCode::kQemuFailed:
      return 500;
  }
  return 500;
}

void send_json(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                  "application/json");
}

void send_error(httplib::Response& res, const Error& err) {
  send_error(res, http_status(err.code()), err.message(), error_code_name(err.code()));
}

void send_error(httplib::Response& res, int status, const std::string& message,
                std::string_view code) {
  send_json(res, status, {{"error", message}, {"code", code}});
}

}  // namespace forkd::daemon

#include "base/error.h"

#include <cerrno>
#include <cstring>

namespace forkd {

std::string_view error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInternal:
      return "internal";
    case ErrorCode::kInvalidArgument:
      return "invalid_argument";
    case ErrorCode::kNotFound:
      return "not_found";
    case ErrorCode::kAlreadyExists:
      return "already_exists";
    case ErrorCode::kChecksumMismatch:
      return "checksum_mismatch";
    case ErrorCode::kNoSpace:
      return "no_space";
    case ErrorCode::kIo:
      return "io_error";
    case ErrorCode::kTimeout:
      return "timeout";
    case ErrorCode::kAgentTimeout:
      return "agent_timeout";
    case ErrorCode::kAgentError:
      return "agent_error";
    case ErrorCode::kQemuMissing:
      return "qemu_missing";
    case ErrorCode::kQemuFailed:
      return "qemu_failed";
    case ErrorCode::kGuestCommandNotFound:
      return "command_not_found";
    case ErrorCode::kCancelled:
      return "cancelled";
    case ErrorCode::kUnavailable:
      return "unavailable";
    case ErrorCode::kProtocol:
      return "protocol_error";
    case ErrorCode::kNoPython:
      return "no_python";
    case ErrorCode::kFailedPrecondition:
      return "failed_precondition";
    case ErrorCode::kAgentProtocol:
      return "agent_protocol";
  }
  return "internal";
}

Error Error::wrap(std::string_view context) const {
  std::string msg(context);
  msg += ": ";
  msg += message_;
  return Error(code_, std::move(msg), errno_);
}

std::string Error::describe() const {
  return message_ + " [" + std::string(error_code_name(code_)) + "]";
}

tl::unexpected<Error> errno_error(int err, std::string_view what) {
  ErrorCode code = ErrorCode::kIo;
  if (err == ENOSPC || err == EDQUOT) code = ErrorCode::kNoSpace;
  if (err == ENOENT) code = ErrorCode::kNotFound;
  if (err == EEXIST) code = ErrorCode::kAlreadyExists;
  std::string msg(what);
  msg += ": ";
  msg += std::strerror(err);
  return tl::unexpected<Error>(Error(code, std::move(msg), err));
}

}  // namespace forkd

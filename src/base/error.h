#pragma once
// Error values for all of forkd. Project code does not throw: fallible functions return
// Result<T>, and callers add context with Error::wrap ("fork sb-1: load vmstate: ...").
#include <string>
#include <string_view>
#include <tl/expected.hpp>

namespace forkd {

// Stable codes: they appear in CLI messages and REST error bodies, so never rename one.
enum class ErrorCode {
  kInternal,
  kInvalidArgument,
  kNotFound,
  kAlreadyExists,
  kChecksumMismatch,
  kNoSpace,
  kIo,
  kTimeout,
  kAgentTimeout,
  kAgentError,
  kQemuMissing,
  kQemuFailed,
  kGuestCommandNotFound,
  kCancelled,
  kUnavailable,
  kProtocol,
  kNoPython,            // eval in a sandbox whose image has no Python
  kFailedPrecondition,  // the object is in the wrong state (a chain link whose parent is gone)
  kAgentProtocol,       // the guest agent's reply has the wrong shape (a broken or hostile guest)
};

// The stable snake_case name of a code ("not_found").
std::string_view error_code_name(ErrorCode code);

class Error {
 public:
  Error(ErrorCode code, std::string message, int sys_errno = 0)
      : code_(code), errno_(sys_errno), message_(std::move(message)) {}

  ErrorCode code() const { return code_; }
  int sys_errno() const { return errno_; }
  const std::string& message() const { return message_; }

  // Returns a copy whose message is "context: <message>".
  Error wrap(std::string_view context) const;

  // "<message> [code]" for humans.
  std::string describe() const;

 private:
  ErrorCode code_;
  int errno_;
  std::string message_;
};

template <typename T>
using Result = tl::expected<T, Error>;
using Status = Result<void>;

inline tl::unexpected<Error> make_error(ErrorCode code, std::string message) {
  return tl::unexpected<Error>(Error(code, std::move(message)));
}

// Builds an error from errno (captured by the caller right after the failing call): the message is
// "what: strerror(err)", and ENOSPC/EDQUOT map to kNoSpace, ENOENT to kNotFound.
tl::unexpected<Error> errno_error(int err, std::string_view what);

}  // namespace forkd

// Propagates an error from a Result-returning expression; evaluates to nothing on success.
#define FORKD_TRY(expr)                                            \
  do {                                                             \
    auto forkd_try_result_ = (expr);                               \
    if (!forkd_try_result_) {                                      \
      return tl::unexpected(std::move(forkd_try_result_).error()); \
    }                                                              \
  } while (0)

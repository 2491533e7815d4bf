#pragma once
// Errors as the agent reports them on the wire: a stable protocol code (see proto/PROTOCOL.md:
// bad_request, unknown_op, not_found, io_error, timeout, busy, no_python, internal) and a message.
#include <string>
#include <string_view>
#include <tl/expected.hpp>

namespace forkd::agent {

struct AgentError {
  std::string code;
  std::string message;
};

template <typename T>
using AgentResult = tl::expected<T, AgentError>;
using AgentStatus = AgentResult<void>;

inline tl::unexpected<AgentError> agent_error(std::string_view code, std::string message) {
  return tl::unexpected<AgentError>(AgentError{std::string(code), std::move(message)});
}

inline tl::unexpected<AgentError> bad_request(std::string message) {
  return agent_error("bad_request", std::move(message));
}

// Maps errno (captured right after the failing call) to not_found (ENOENT) or io_error, with the
// message "what: strerror(err)".
tl::unexpected<AgentError> errno_agent_error(int err, std::string_view what);

}  // namespace forkd::agent

#pragma once
// Request parsing and argument validation for the agent protocol (proto/PROTOCOL.md). Pure
// functions: no I/O, safe on hostile input (nothing here throws or aborts).
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "agent_error.h"

namespace forkd::agent {

using Json = nlohmann::json;

inline constexpr size_t kMaxPathLen = 4096;

struct Request {
  uint64_t id = 0;
  std::string op;
  Json args;         // the whole request object
  std::string body;  // binary body (stdin, file data)
};

// What an op handler returns on success: result fields and an optional binary body.
struct OpReply {
  Json result = Json::object();
  std::string body;
};

// Sends one stream event ({"id", "event": kind} + bytes) for the request being handled.
using EventSink = std::function<void(std::string_view kind, std::string_view bytes)>;

// A request that could not be parsed. id is the request's id when it could be read, else 0.
struct RequestError {
  uint64_t id = 0;
  AgentError error;
};

// Parses a frame's JSON body. Checks: valid JSON object, nonzero unsigned "id", string "op".
// Does not check that the op is known.
tl::expected<Request, RequestError> parse_request(std::string_view json, std::string body);

// True for the ops this agent implements.
bool is_known_op(std::string_view op);

// Field readers. A missing optional field yields the default; a present field of the wrong type
// is a bad_request naming the field.
AgentResult<std::string> get_string(const Json& obj, const char* key);  // required
AgentResult<bool> get_bool(const Json& obj, const char* key, bool def);
AgentResult<uint64_t> get_u64(const Json& obj, const char* key, uint64_t def, uint64_t max);
// A required path: non-empty string, no NUL bytes, at most kMaxPathLen bytes.
AgentResult<std::string> get_path(const Json& obj, const char* key);
// Same checks as get_path, for a value already extracted.
AgentStatus check_path(std::string_view path, std::string_view what);

// Serializes j compactly; invalid UTF-8 in strings is replaced, never thrown on.
std::string to_wire(const Json& j);

// {"id": id, "ok": true, ...result}; result must be an object (or null).
Json ok_reply(uint64_t id, const Json& result);
// {"id": id, "ok": false, "error": {"code", "message"}}
Json error_reply(uint64_t id, const AgentError& err);

}  // namespace forkd::agent

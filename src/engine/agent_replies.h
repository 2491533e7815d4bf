#pragma once
// Typed decoders of the guest agent's replies (src/proto/PROTOCOL.md). The guest is hostile: root
// in it can replace the agent and forge any reply, so every value is checked for type and range
// here, and a reply of the wrong shape is kAgentProtocol (HTTP 502), never an exception and never
// a default that hides the forgery. Pure functions, no I/O.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "base/error.h"

namespace forkd::engine {

using Json = nlohmann::json;

struct ExecReply {
  int exit_code = 0;
  bool timed_out = false;
  int64_t duration_ms = 0;
};
Result<ExecReply> decode_exec_reply(const Json& j);

struct EvalReply {
  std::optional<std::string> value;  // repr, or nullopt for statements
  std::string stdout_text;
  std::optional<std::string> error;  // Python traceback
};
Result<EvalReply> decode_eval_reply(const Json& j);

// What the host needs of a `resumed` reply to call a child ready.
struct ResumedReply {
  bool reseeded = false;
  std::string reseed_error;
  bool clock_set = false;
  std::string clock_error;
  // Present when the request had a `network` (see proto/PROTOCOL.md).
  std::optional<bool> network_set;
  std::string network_error;
  Json info;  // the checked fields only, for the sandbox's agent info
};
Result<ResumedReply> decode_resumed_reply(const Json& j);

// `hello` and `ping`: the checked fields only (unknown ones are dropped), as a JSON object with
// pid (int), and where present version, hostname, numpy (string or null), python (bool),
// uptime_ms, sandbox_id, epoch.
Result<Json> decode_hello_reply(const Json& j);

struct StatReply {
  std::string type;  // file | dir | symlink | other
  uint64_t size = 0;
  uint32_t mode = 0;
  int64_t mtime = 0;
};
Result<StatReply> decode_stat_reply(const Json& j);

// `file_list`: at most kMaxListEntries entries, each {name, type, size, mode, mtime} checked.
inline constexpr size_t kMaxListEntries = 8192;
Result<Json> decode_list_reply(const Json& j);

// `file_read` of `requested` bytes that came with bin_len bytes: eof, and a body never longer
// than asked for.
struct ReadReply {
  bool eof = false;
};
Result<ReadReply> decode_read_reply(const Json& j, size_t bin_len, size_t requested);

}  // namespace forkd::engine

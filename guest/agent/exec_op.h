#pragma once
// The exec op: runs a command in its own session with piped stdout/stderr, streams the output as
// events, enforces timeout_ms by killing the whole process group.
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "request.h"

namespace forkd::agent {

inline constexpr size_t kMaxArgs = 4096;
inline constexpr size_t kMaxEnv = 1024;
inline constexpr uint64_t kMaxTimeoutMs = 7ull * 24 * 3600 * 1000;

struct ExecSpec {
  std::vector<std::string> argv;                         // for "shell": {"/bin/sh", "-c", command}
  std::vector<std::pair<std::string, std::string>> env;  // added to the agent's environment
  std::string cwd;                                       // empty: the agent's cwd
  uint64_t timeout_ms = 0;                               // 0: none
  bool use_stdin = false;                                // the request body is the child's stdin
  std::string user;    // empty: the agent's user; else a name of /etc/passwd or a numeric uid
  std::string handle;  // empty: none; else the name `signal` reaches the command by
};

// A user to run a command as, from the guest's /etc/passwd.
struct RunAs {
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string name;  // the passwd name, or the number for an unknown numeric uid
  std::string home;  // "/" when unknown
};

// Looks user up in passwd_text (the contents of /etc/passwd): a name, or a numeric uid (which
// need not be listed). nullopt for an unknown name.
std::optional<RunAs> lookup_user(const std::string& user, std::string_view passwd_text);

// Validates exec arguments (exactly one of argv/shell, types, NUL bytes, counts).
AgentResult<ExecSpec> parse_exec(const Json& args);

// base (NAME=VALUE strings) with spec env applied: same-name entries replaced, new ones appended.
std::vector<std::string> merge_env(const std::vector<std::string>& base,
                                   const std::vector<std::pair<std::string, std::string>>& add);

// Resolves a command like execvp would: names containing '/' are taken as is; others are looked
// up in the ':'-separated path_var. nullopt when no executable regular file matches.
std::optional<std::string> resolve_command(const std::string& cmd, const std::string& path_var);

// Runs the request; streams "stdout"/"stderr" events through emit. Result: exit_code, timed_out,
// duration_ms. Thread-safe: each call owns its child.
AgentResult<OpReply> run_exec(const Request& req, const EventSink& emit);

// The signal op: `handle` (of a running exec), `signal` (a number 1..64, default 9). Sends it to
// the command's process group. not_found when no running exec has that handle.
AgentResult<OpReply> signal_op(const Request& req);

}  // namespace forkd::agent

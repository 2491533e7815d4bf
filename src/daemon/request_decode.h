#pragma once
// Decoders for request bodies: untrusted bytes in, a typed request or kInvalidArgument out.
// Pure functions (no I/O), so they can be fuzzed. Unknown fields are ignored.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "engine/sandbox.h"

namespace forkd::daemon {

// POST /v1/snapshots. `image`, `memory_mib`, `exec`, `eval` and `force` are our extensions; forkd's
// `kernel`/`rootfs` are refused with a message naming `image`.
struct SnapshotCreateRequest {
  std::string tag;
  std::string image = "minimal";
  int memory_mib = 256;
  std::vector<std::string> exec;
  std::vector<std::string> eval;
  bool force = false;
  bool cascade = false;          // with force: remove the old tag's links first
  std::string network = "none";  // none | outbound: whether the tag's VM has a NIC
};
Result<SnapshotCreateRequest> decode_snapshot_create(std::string_view body);

// POST /v1/sandboxes. Host-side limits of each child's QEMU: `memory_limit_mib` (forkd's name),
// `cpu_limit` (cores) and `pids_limit`; unset ones take the daemon's defaults. `network` is
// "none" or "outbound" (absent: the tag's), `expose` guest TCP ports forwarded from the host
// (outbound only). forkd's `live_fork` is accepted (every sandbox can be branched live);
// `per_child_netns`, `hugepages` and `prewarm` are accepted only when they ask for nothing
// (false, 0), else 400 naming the field. Any other field is 400.
struct ForkRequest {
  std::string snapshot_tag;
  int n = 1;
  std::optional<int> memory_limit_mib;
  std::optional<double> cpu_limit;
  std::optional<int> pids_limit;
  std::string network;  // empty: the tag's
  std::vector<int> expose;
  bool per_child_netns = false;         // forkd's: a network namespace and tap per child
  std::vector<std::string> allow_list;  // ours: where such children may go
};
inline constexpr int kMinMemoryLimitMib = 32;
inline constexpr int kMinPidsLimit = 8;  // QEMU itself runs several threads
inline constexpr double kMaxCpuLimit = 1024;
Result<ForkRequest> decode_fork(std::string_view body);

// POST /v1/sandboxes/:id/exec: `args`, or our extension `shell` (a /bin/sh -c string).
// `max_output_bytes` (our extension): bytes of stdout and of stderr kept, each (1..256 MiB;
// absent: the daemon's --max-exec-output).
inline constexpr uint64_t kMaxRequestOutputBytes = 256ull << 20;
struct ExecRequest {
  std::vector<std::string> args;
  std::optional<std::string> shell;
  double timeout_secs = 0;        // 0: the default (300 s; none for background); at most 3600
  uint64_t max_output_bytes = 0;  // 0: the daemon's default
  std::map<std::string, std::string> env;
  std::string cwd;                        // empty: the agent's
  std::string user;                       // empty: the agent's (root)
  std::optional<std::string> stdin_data;  // `stdin` (text) or `stdin_b64`
  bool stream = false;                    // answer NDJSON as the output comes
  bool background = false;                // answer 202 with a command handle at once
};
// The engine's options for r's command, its stdin, env, cwd and user (the caller sets the
// timeout, output caps and handle, which differ between plain, streaming and background execs).
engine::ExecOptions exec_options_of(const ExecRequest& r);
// Exec without timeout_secs gets this bound (plain and streaming; background: none).
inline constexpr double kDefaultExecTimeoutSecs = 300;
// Stdin of an exec is one agent frame's body.
inline constexpr size_t kMaxExecStdinBytes = 4u << 20;
// A background command may run this long (seconds) at most.
inline constexpr double kMaxBackgroundTimeoutSecs = 7 * 24 * 3600;
Result<ExecRequest> decode_exec(std::string_view body);

// A guest path of the file routes and exec's cwd: absolute, at most 4096 bytes, no NUL, no ".."
// component. The message names `what`.
Status check_guest_path(std::string_view path, std::string_view what = "path");

// Strict base64 (standard alphabet, padding optional); nullopt on any other character.
std::optional<std::string> decode_base64(std::string_view in);

// POST /v1/sandboxes/:id/eval.
struct EvalRequest {
  std::string code;
};
Result<EvalRequest> decode_eval(std::string_view body);

// POST /v1/sandboxes/:id/branch: `mode` (full|diff|live) or the legacy boolean `diff` (true:
// diff, false: full), not both; `wait` defaults to true.
struct BranchRequest {
  std::string tag;  // empty: generated
  std::string mode = "diff";
  bool wait = true;
};
Result<BranchRequest> decode_branch(std::string_view body);

// POST /v1/hub/push (`tag` and `ref` required) and POST /v1/hub/pull (`ref` required, `tag` the
// name the pulled tag gets here): `plain_http` (false) and `wait` (true). Credentials and CA files
// are the daemon's own (its environment), never taken from a request.
struct TransferRequest {
  std::string tag;
  std::string ref;
  bool plain_http = false;
  bool wait = true;
};
Result<TransferRequest> decode_transfer(std::string_view body, bool push);

// POST /v1/snapshots/:tag/compact: `to`, the new flat tag.
Result<std::string> decode_compact(std::string_view body);

// POST /v1/workspaces. memory_limit_mib (>= 32, or absent/0: the daemon's default) limits the
// workspace's QEMU, across suspends and resumes; so does per_child_netns (see spawn).
struct WorkspaceCreateRequest {
  std::string name;
  std::string snapshot_tag;
  int memory_limit_mib = 0;
  bool per_child_netns = false;  // its sandbox in a network namespace of its own, every resume
};
Result<WorkspaceCreateRequest> decode_workspace_create(std::string_view body);

// POST /v1/workspaces/:name/suspend: `diff` true or absent is a live snapshot, false a full one.
struct WorkspaceSuspendRequest {
  bool live = true;
};
Result<WorkspaceSuspendRequest> decode_workspace_suspend(std::string_view body);

}  // namespace forkd::daemon

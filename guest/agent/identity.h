#pragma once
// The `resumed` op: after a restore each clone becomes itself. It credits host randomness to the
// kernel CRNG and forces a reseed, sets the wall clock and the hostname, remembers the sandbox id
// and restore epoch (exported to every later exec, reported by ping), and reseeds the warm Python
// worker's pseudo-random generators. See proto/PROTOCOL.md.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "python_worker.h"
#include "request.h"

namespace forkd::agent {

inline constexpr size_t kEpochLen = 32;  // 128 bits, lowercase hex
inline constexpr size_t kMaxSandboxIdLen = 64;
inline constexpr size_t kMaxHostnameLen = 64;
inline constexpr size_t kMinSeedLen = 32;
inline constexpr size_t kMaxSeedLen = 512;
inline constexpr int kPythonReseedMs = 2000;

struct ResumedSpec {
  std::string epoch;
  std::string sandbox_id;
  std::string hostname;
  int64_t time_ns = 0;
  std::string seed;  // secret: never log it
  // The `network` object, when given (see net.h): applied after the hostname.
  bool has_network = false;
  Json network;
};

// Validates a resumed request strictly (field types, formats, seed length). Pure.
AgentResult<ResumedSpec> parse_resumed(const Request& req);

bool valid_epoch(std::string_view s);
bool valid_sandbox_id(std::string_view s);
bool valid_hostname(std::string_view s);

// What `resumed` last recorded (process-global, thread-safe).
struct Identity {
  std::string sandbox_id;
  std::string epoch;
};
std::optional<Identity> current_identity();
void set_identity(Identity id);
// FORKD_SANDBOX_ID and FORKD_EPOCH, empty before any resumed.
std::vector<std::pair<std::string, std::string>> identity_env();

// One system step: ok, or the reason it failed.
struct StepResult {
  bool ok = false;
  std::string error;
};
// Opens /dev/urandom for the rest of the process (close-on-exec), for reseed_kernel_rng. Call it
// at start, before any snapshot: a restored child then reseeds without opening a file.
void keep_rng_device_open();
bool rng_device_kept_open();
// RNDADDENTROPY (crediting 8 bits per byte) then RNDRESEEDCRNG on /dev/urandom (the kept
// descriptor, or one opened for the call).
StepResult reseed_kernel_rng(std::string_view seed);
StepResult set_wall_clock(int64_t time_ns);
// sethostname, then /etc/hostname when writable (its failure is ignored), unless that file is
// already a link to the kernel's hostname (see link_hostname_file).
StepResult set_host_name(const std::string& name);

inline constexpr char kHostnameFile[] = "/etc/hostname";
inline constexpr char kKernelHostnamePath[] = "/proc/sys/kernel/hostname";
// Replaces `file` (/etc/hostname) with a symlink to the kernel's hostname, atomically (a link
// staged beside it, then renamed over it); nothing when it is one already. Done once at boot, so
// that a restored child's `resumed` need not write the file: under TCG that ext4 write was ~55
// ms of the child's first wake-up. A failure (read-only /etc) is reported; `resumed` then writes
// the file as before.
StepResult link_hostname_file(const std::string& file = kHostnameFile);
// True when `file` is such a link. A link found so before is known by its inode and change time
// (lstat), so a restored child's check does not read it: a read writes its access time.
bool hostname_file_is_linked(const std::string& file = kHostnameFile);
// How many times hostname_file_is_linked has read a link (for tests).
uint64_t hostname_link_reads();

// 32 bytes for the Python worker's reseed, as hex: getrandom() output XOR the seed folded to 32
// bytes, so clones differ even when the kernel reseed failed, without handing out the seed.
std::string python_salt_hex(std::string_view seed);

struct ResumedOptions {
  // false (--no-system-identity, tests): the clock and hostname steps are skipped and reported as
  // not done. The RNG steps always run.
  bool system_identity = true;
};

// What the steps of a resumed request did, for its reply.
struct ResumedOutcome {
  StepResult rng, clock, host;
  std::string hostname;  // what the kernel says after the steps
  bool has_network = false;
  StepResult network;  // when has_network
  std::optional<bool> network_changed;
  bool python_reseed_pending = false;
  std::string epoch;
  std::string sandbox_id;
};

// Runs the steps of a valid request (spec from parse_resumed or parse_flat_resumed); wipes the
// seed in spec.
ResumedOutcome run_resumed(ResumedSpec& spec, PythonWorker* python, const ResumedOptions& opts);
// The reply's result fields.
Json resumed_result(const ResumedOutcome& outcome);

// The resumed op. Fails only on a malformed request; failed steps are reported in the result.
AgentResult<OpReply> resumed_op(const Request& req, PythonWorker* python,
                                const ResumedOptions& opts);

}  // namespace forkd::agent

#pragma once
// One sandbox: a QEMU process running a guest whose agent answers over agent.sock.
// Run dir: $FORKD_HOME/sandboxes/<id>/ holds sandbox.json, qmp.sock, agent.sock, console.log,
// qemu.log, qemu.pid and (for disk images) overlay.qcow2, the sandbox's only writable disk.
// A Sandbox object owns its VM: destroy() (also run by the destructor) stops QEMU and removes
// the run dir. Methods are thread-safe (the agent connection multiplexes requests).
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/agent_client.h"
#include "engine/config.h"
#include "engine/image_store.h"
#include "vmm/cgroup.h"
#include "vmm/vm_process.h"

namespace forkd::engine {

struct BootOptions {
  std::string image = "minimal";
  int memory_mib = 256;
  uint64_t ram_bytes = 0;  // exact RAM size; 0: vmm::guest_ram_bytes for the accelerator
  int cpus = 1;
  std::chrono::milliseconds boot_timeout = std::chrono::seconds(90);
  ProgressFn progress;       // image build progress and boot steps
  std::string extra_append;  // appended to the kernel command line (tests, debugging)
  // Guest RAM in this file, shared (MAP_SHARED): a snapshot template writes its memory straight
  // into the tag's memory file. Empty: anonymous RAM.
  std::string memory_file;
  // QEMU dies with this process (snapshot templates must never outlive `forkd snapshot`).
  bool die_with_parent = false;
  vmm::Limits limits;  // host-side limits of its QEMU (engine/sandbox_jail.h)
  bool nic = false;    // a NIC on a user-mode network (vmm::VmConfig::nic): network outbound
  // Tests: keep the PIT where idle_quiet_tcg (engine/vm_setup.h) drops it, as VMs and tags made
  // before it have one.
  bool with_pit = false;
  // Tests: keep microvm's second IO-APIC (vmm::VmConfig::ioapic2), as VMs and tags made before
  // forkd dropped it have.
  bool with_ioapic2 = false;
};

// Timings of one restore: launch_ms and claim_ms from the start of the child's own work,
// incoming_ms and ready_ms from the start of the device-state load (after the launch).
struct RestoreTimings {
  double launch_ms = 0;    // QEMU started and QMP ready, or a pool member claimed (incl. claim_ms)
  double claim_ms = 0;     // pool claim: QMP connect + handshake, found or not (0: pool not used)
  double incoming_ms = 0;  // device state loaded, vCPUs running
  double ready_ms = 0;     // identity set (`resumed` answered)
};

struct BootTimings {
  double image_ms = 0;   // image lookup (and build, on a cold cache)
  double launch_ms = 0;  // QEMU spawn until daemonized
  double agent_ms = 0;   // from launch until the agent answered ping
  double total_ms = 0;
};

// Default cap of collected exec output, per stream.
inline constexpr size_t kDefaultMaxOutputBytes = 16u << 20;
// Reads of a guest file into host memory or a host file are never larger than this.
inline constexpr uint64_t kMaxFileReadBytes = 4ull << 30;

// Bytes of collected exec output held at once across many execs (the daemon shares one), so
// that many floods at once stay bounded too, not just each one. Thread-safe.
class OutputBudget {
 public:
  explicit OutputBudget(uint64_t cap) : cap_(cap) {}
  void set_cap(uint64_t cap) { cap_ = cap; }
  // Takes up to n bytes; returns how many were granted (0 when the budget is spent).
  size_t take(size_t n);
  void give_back(size_t n);
  uint64_t in_use() const { return used_.load(); }
  uint64_t cap() const { return cap_.load(); }

 private:
  std::atomic<uint64_t> cap_;
  std::atomic<uint64_t> used_{0};
};

// Budget taken by one ExecResult's collected output, given back when the result goes.
class OutputLease {
 public:
  explicit OutputLease(OutputBudget* b) : budget_(b) {}
  ~OutputLease() {
    if (budget_) budget_->give_back(held_);
  }
  OutputLease(const OutputLease&) = delete;
  OutputLease& operator=(const OutputLease&) = delete;
  // Grants up to n more bytes (all of them without a budget).
  size_t take(size_t n);

 private:
  OutputBudget* budget_;
  size_t held_ = 0;
};

struct ExecOptions {
  std::vector<std::string> argv;     // argv, or
  std::optional<std::string> shell;  // a /bin/sh -c string
  std::map<std::string, std::string> env;
  std::string cwd;
  std::chrono::milliseconds timeout{0};  // 0: none
  std::optional<std::string> stdin_data;
  std::string user;    // empty: the agent's (root); else a guest user name or numeric uid
  std::string handle;  // empty: none; else the name signal() reaches the running command by
  // Collected output only (no callback): at most this many bytes per stream are kept; the rest
  // is read and dropped, and the result says truncated. Streaming callers get every byte.
  size_t max_output_bytes = kDefaultMaxOutputBytes;
  OutputBudget* budget = nullptr;  // optional shared cap over concurrent execs
};

struct ExecResult {
  int exit_code = 0;
  bool timed_out = false;
  int64_t duration_ms = 0;
  std::string stdout_data;  // filled only when no output callback was given
  std::string stderr_data;
  bool stdout_truncated = false;  // output beyond max_output_bytes (or the budget) was dropped
  bool stderr_truncated = false;
  uint64_t stdout_bytes = 0;  // bytes the command wrote, kept or not
  uint64_t stderr_bytes = 0;
  // Holds the budget for the collected output; co-owned by copies of this result.
  std::shared_ptr<OutputLease> lease;
};

struct EvalResult {
  std::optional<std::string> value;  // repr, or nullopt for statements
  std::string stdout_text;
  std::optional<std::string> error;  // Python traceback
};

// One chunk of a guest file (read_chunk).
struct FileChunk {
  std::string data;  // at most proto::kChunkLen bytes; short at the end of the file
  bool eof = false;
};

struct FileStat {
  std::string type;
  uint64_t size = 0;
  uint32_t mode = 0;
  int64_t mtime = 0;
};

class Sandbox {
 public:
  static Result<std::unique_ptr<Sandbox>> boot(const EngineConfig& cfg, const BootOptions& opts);
  // Reconnects to a running sandbox from its record. The returned object does not own the VM
  // (its destructor leaves it running); kNotFound when the id is unknown or its QEMU is gone.
  static Result<std::unique_ptr<Sandbox>> attach(const EngineConfig& cfg, const std::string& id);

  // After release(), destroying this object leaves the VM running (children outlive the CLI).
  void release() { owned_ = false; }
  ~Sandbox();
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  const std::string& id() const { return id_; }
  const std::string& dir() const { return dir_; }
  pid_t qemu_pid() const { return vm_.pid(); }
  const BootTimings& timings() const { return timings_; }
  const Json& agent_info() const { return agent_info_; }
  const RestoreTimings& restore_timings() const { return restore_timings_; }
  const Json& record() const { return record_; }

  Result<Json> ping(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Runs a command. With on_output, stdout/stderr chunks go there as they arrive; without it they
  // are collected into the result. A command that cannot be started is kGuestCommandNotFound.
  Result<ExecResult> exec(const ExecOptions& opts, EventFn on_output = {});
  Result<EvalResult> eval(std::string_view code,
                          std::chrono::milliseconds timeout = std::chrono::seconds(60));

  Status write_file(const std::string& guest_path, std::string_view data, uint32_t mode = 0644);
  // Fails (kInvalidArgument) rather than read more than max_bytes.
  Result<std::string> read_file(const std::string& guest_path, size_t max_bytes = 256u << 20);
  Status put_file(const std::string& host_path, const std::string& guest_path);
  // Copies a guest file to host_path (staged, then renamed), refusing more than max_bytes
  // (capped at kMaxFileReadBytes) whatever the guest claims.
  Status get_file(const std::string& guest_path, const std::string& host_path,
                  uint64_t max_bytes = kMaxFileReadBytes);
  Result<FileStat> stat(const std::string& guest_path);
  // One step of a streamed transfer: at most proto::kChunkLen bytes at offset.
  Result<FileChunk> read_chunk(const std::string& guest_path, uint64_t offset);
  Status write_chunk(const std::string& guest_path, uint64_t offset, std::string_view data,
                     bool truncate, uint32_t mode);
  Status rename(const std::string& from, const std::string& to);
  // sync(2) in the guest: its filesystems' data and journals on its disk.
  Status sync_filesystems();
  // Sends sig to the process group of the running command started with ExecOptions::handle.
  // kNotFound when none runs with that handle.
  Status signal(const std::string& handle, int sig);
  // Closes the agent connection: calls waiting on it fail at once (the VM keeps running).
  void disconnect();
  Result<Json> list_dir(const std::string& guest_path);
  Status mkdir(const std::string& guest_path, bool parents);
  Status remove(const std::string& guest_path, bool recursive);

  // Stops QEMU (QMP quit, then SIGTERM/SIGKILL) but keeps the run dir. Idempotent.
  void stop_vm();
  // stop_vm() and removes the run dir. Idempotent.
  void destroy();

  // Kills every sandbox this process booted and still owns (Ctrl-C path). Async-signal-unsafe:
  // call it from a normal thread, e.g. the CLI's signal-waiting thread.
  static void destroy_all_owned();

 private:
  friend class Restorer;
  Sandbox(std::string id, std::string dir, vmm::VmProcess vm);
  Status write_record();
  Result<AgentReply> call(Json request, std::string_view bin, std::chrono::milliseconds timeout,
                          EventFn on_event = {});

  std::string id_;
  std::string dir_;
  vmm::VmProcess vm_;
  std::unique_ptr<AgentClient> agent_;
  Json agent_info_;
  BootTimings timings_;
  RestoreTimings restore_timings_;
  Json record_;  // sandbox.json
  // Read by another thread's destroy_all_owned (the Ctrl-C path).
  std::atomic<bool> destroyed_{false};
  std::atomic<bool> owned_{true};
};

}  // namespace forkd::engine

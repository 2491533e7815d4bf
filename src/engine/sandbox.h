#pragma once
// One sandbox: a QEMU process running a guest whose agent answers over agent.sock.
// Run dir: $FORKD_HOME/sandboxes/<id>/ holds sandbox.json, qmp.sock, agent.sock, console.log,
// qemu.log, qemu.pid and (for disk images) overlay.qcow2, the sandbox's only writable disk.
// A Sandbox object owns its VM: destroy() (also run by the destructor) stops QEMU and removes
// the run dir. Methods are thread-safe (the agent connection multiplexes requests).
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
};

// Timings of one restore, in ms from the start of Sandbox::restore.
struct RestoreTimings {
  double launch_ms = 0;    // QEMU started, QMP ready (0 when taken from a pool)
  double incoming_ms = 0;  // device state loaded, vCPUs running
  double ready_ms = 0;     // identity set (`resumed` answered)
};

struct BootTimings {
  double image_ms = 0;   // image lookup (and build, on a cold cache)
  double launch_ms = 0;  // QEMU spawn until daemonized
  double agent_ms = 0;   // from launch until the agent answered ping
  double total_ms = 0;
};

struct ExecOptions {
  std::vector<std::string> argv;     // argv, or
  std::optional<std::string> shell;  // a /bin/sh -c string
  std::map<std::string, std::string> env;
  std::string cwd;
  std::chrono::milliseconds timeout{0};  // 0: none
  std::optional<std::string> stdin_data;
};

struct ExecResult {
  int exit_code = 0;
  bool timed_out = false;
  int64_t duration_ms = 0;
  std::string stdout_data;  // filled only when no output callback was given
  std::string stderr_data;
};

struct EvalResult {
  std::optional<std::string> value;  // repr, or nullopt for statements
  std::string stdout_text;
  std::optional<std::string> error;  // Python traceback
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
  Result<std::string> read_file(const std::string& guest_path, size_t max_bytes = 256u << 20);
  Status put_file(const std::string& host_path, const std::string& guest_path);
  Status get_file(const std::string& guest_path, const std::string& host_path);
  Result<FileStat> stat(const std::string& guest_path);
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
  bool destroyed_ = false;
  bool owned_ = true;
};

}  // namespace forkd::engine

#pragma once
// One QEMU process. It runs detached in its own session (so a sandbox outlives the forkd process
// that started it) and writes its pid file; VmProcess tracks it with a pidfd. forkd detaches QEMU
// itself rather than using -daemonize, which QEMU 7.2 cannot combine with -sandbox spawn=deny.
#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>

#include "base/error.h"
#include "base/unique_fd.h"
#include "vmm/code_pages.h"
#include "vmm/qemu_cmdline.h"
#include "vmm/qmp_client.h"

namespace forkd::vmm {

class VmProcess {
 public:
  // Starts QEMU with cfg (which must set pid_file and qmp_socket; cfg.daemonize is ignored) in a
  // new session and waits until it finished initialising: a QMP handshake succeeds (QMP commands
  // run only once QEMU's main loop does). QEMU's stdout/stderr go to stderr_log; on failure the
  // error message carries its last lines. A missing QEMU binary is kQemuMissing with the apt-get
  // command to fix it. The QMP connection used for the check is closed again. If the launching
  // process outlives QEMU, alive()/wait_exit() reap it.
  static Result<VmProcess> launch(const VmConfig& cfg, const std::string& stderr_log,
                                  std::chrono::milliseconds timeout);

  // Like launch, but keeps the QMP connection of the readiness check open and hands it over.
  static Result<std::pair<VmProcess, QmpClient>> launch_with_qmp(const VmConfig& cfg,
                                                                 const std::string& stderr_log,
                                                                 std::chrono::milliseconds timeout);

  // For a process tearing down (a CLI's Ctrl-C): every later launch fails with kCancelled, and
  // a launch in progress has its QEMU running (findable under /proc) before this returns.
  static void stop_launches();

  // Tracks an already running QEMU (re-adoption from a pid file). kNotFound if it is gone.
  static Result<VmProcess> adopt(pid_t pid);

  VmProcess(VmProcess&&) noexcept = default;
  VmProcess& operator=(VmProcess&&) noexcept = default;
  VmProcess(const VmProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool alive() const;
  // Waits up to timeout for the process to exit; true when it did.
  bool wait_exit(std::chrono::milliseconds timeout) const;
  // SIGTERM, wait up to grace, then SIGKILL and wait. Idempotent; safe on a dead process.
  void terminate(std::chrono::milliseconds grace);
  // Sends sig (through the pidfd: immune to pid reuse). No wait.
  void signal(int sig);
  // Collapses the TCG code buffer's filled 2 MiB steps into huge pages (vmm/code_pages.h); call
  // it after the guest ran new code. Cheap when there is nothing to do. Returns the steps done.
  int collapse_code_pages() { return code_pages_ ? code_pages_->collapse(pid_, pidfd_.get()) : 0; }
  // The last step of the code buffer TCG has written to (CodePages::last_written_step).
  std::optional<int> code_fill_step() {
    return code_pages_ ? code_pages_->last_written_step(pid_) : std::nullopt;
  }
  // Before an agent call to a QEMU started with a code buffer window from step k on
  // (vmm/code_pages.h): huge pages for the rest of the buffer from now, and what TCG wrote there
  // in small pages collapsed.
  void ready_code_for_call(int k) {
    if (!code_pages_ || k < 0) return;
    signal(kCodePagesSignal);
    code_pages_->collapse_written_from(pid_, pidfd_.get(), k);
  }

 private:
  VmProcess(pid_t pid, UniqueFd pidfd)
      : pid_(pid), pidfd_(std::move(pidfd)), code_pages_(std::make_unique<CodePages>()) {}
  pid_t pid_ = -1;
  UniqueFd pidfd_;
  std::unique_ptr<CodePages> code_pages_;
};

// Last max_bytes of a log file (for error messages); empty if unreadable.
std::string log_tail(const std::string& path, size_t max_bytes = 2048);

}  // namespace forkd::vmm

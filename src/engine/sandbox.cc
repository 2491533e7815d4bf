#include "engine/sandbox.h"

#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include "base/clock.h"
#include "base/dir_lock.h"
#include "base/files.h"
#include "base/json_get.h"
#include "base/log.h"
#include "base/paths.h"
#include "engine/agent_replies.h"
#include "engine/registry.h"
#include "engine/sandbox_jail.h"
#include "engine/vm_setup.h"
#include "vmm/jail.h"
#include "vmm/qmp_client.h"

namespace forkd::engine {

namespace {

using Clock = std::chrono::steady_clock;

// Sandboxes this process owns, for the Ctrl-C path.
std::mutex g_owned_mu;
std::set<Sandbox*> g_owned;

// Stops a booting guest that floods its console file: checks the file's size every 100 ms and
// calls kill (SIGKILL of QEMU, through its pidfd) past kMaxBootConsoleBytes.
class ConsoleWatch {
 public:
  ConsoleWatch(std::string path, std::function<void()> kill)
      : thread_([this, path = std::move(path), kill = std::move(kill)](std::stop_token st) {
          while (!st.stop_requested()) {
            struct stat sb {};
            if (::stat(path.c_str(), &sb) == 0 &&
                static_cast<uint64_t>(sb.st_size) > vmm::kMaxBootConsoleBytes) {
              tripped_ = true;
              kill();
              return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
          }
        }) {}
  void stop() {
    thread_.request_stop();
    if (thread_.joinable()) thread_.join();
  }
  bool tripped() const { return tripped_.load(); }

 private:
  std::atomic<bool> tripped_{false};
  std::jthread thread_;
};

// Moves a booted VM's serial console from its file into a ring buffer inside QEMU, which the
// guest cannot grow (QMP chardev-change; the serial device supports the swap).
Status console_to_ring(const std::string& qmp_socket) {
  auto qmp = vmm::QmpClient::connect(qmp_socket, std::chrono::seconds(5));
  if (!qmp) return tl::unexpected(qmp.error().wrap("console to ring"));
  auto r = qmp->execute(
      "chardev-change",
      vmm::Json{{"id", vmm::kConsoleChardev},
                {"backend", {{"type", "ringbuf"}, {"data", {{"size", vmm::kConsoleRingBytes}}}}}});
  if (!r) return tl::unexpected(r.error().wrap("console to ring"));
  return {};
}

}  // namespace

Sandbox::Sandbox(std::string id, std::string dir, vmm::VmProcess vm)
    : id_(std::move(id)), dir_(std::move(dir)), vm_(std::move(vm)) {
  std::lock_guard lock(g_owned_mu);
  g_owned.insert(this);
}

Sandbox::~Sandbox() {
  if (owned_) destroy();
  std::lock_guard lock(g_owned_mu);
  g_owned.erase(this);
}

void Sandbox::destroy_all_owned() {
  std::lock_guard lock(g_owned_mu);
  // Kill all, then wait for all, through each VM's pidfd (immune to pid reuse, even for one its
  // owner has reaped meanwhile): when this returns no owned QEMU runs, and its dir is gone.
  std::vector<Sandbox*> dying;
  for (Sandbox* sb : g_owned) {
    if (!sb->owned_.load()) continue;
    sb->vm_.signal(SIGKILL);
    dying.push_back(sb);
  }
  auto deadline = Clock::now() + std::chrono::seconds(5);
  for (Sandbox* sb : dying) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    (void)sb->vm_.wait_exit(std::max(left, std::chrono::milliseconds(0)));
    (void)remove_run_dir(sb->dir_);
  }
}

Status Sandbox::write_record() {
  record_["id"] = id_;
  record_["pid"] = vm_.pid();
  record_["schema"] = 1;
  return write_file_atomic(dir_ + "/sandbox.json", record_.dump(2) + "\n");
}

Result<std::unique_ptr<Sandbox>> Sandbox::boot(const EngineConfig& cfg, const BootOptions& opts) {
  auto t0 = Clock::now();
  if (opts.memory_mib < 64 || opts.memory_mib > 65536) {
    return make_error(ErrorCode::kInvalidArgument, "memory must be 64..65536 MiB");
  }
  if (opts.cpus < 1 || opts.cpus > 64) {
    return make_error(ErrorCode::kInvalidArgument, "cpus must be 1..64");
  }
  ImageStore store(cfg.home, cfg.assets, cfg.agent);
  auto image = store.get(opts.image, opts.progress);
  if (!image) return tl::unexpected(image.error());
  BootTimings timings;
  timings.image_ms = ms_since(t0);

  std::string id = new_sandbox_id();
  std::string dir = cfg.sandboxes_dir() + "/" + id;
  auto vc = base_vm_config(cfg, id, dir);
  if (!vc) return tl::unexpected(vc.error());
  // Locked until the record exists: if this process dies before, gc reaps the QEMU.
  auto dir_lock = LockedDir::create(cfg.sandboxes_dir(), id);
  if (!dir_lock) return tl::unexpected(dir_lock.error().wrap("boot " + opts.image));
  dir_lock->keep();
  auto fail = [&](Error e) -> Result<std::unique_ptr<Sandbox>> {
    (void)remove_run_dir(dir);
    return tl::unexpected(e.wrap("boot " + opts.image));
  };
  vc->cpus = opts.cpus;
  vc->memory_mib = opts.memory_mib;
  vc->ram_bytes = opts.ram_bytes ? opts.ram_bytes
                                 : vmm::guest_ram_bytes(opts.memory_mib, vc->accel,
                                                        vmm::host_jail().tcg_ram_pad);
  vc->kernel = image->kernel;
  vc->initrd = image->initrd;
  vc->kernel_append = image->append + host_kernel_args(*vc);
  if (!opts.extra_append.empty()) vc->kernel_append += " " + opts.extra_append;
  vc->memory_file = opts.memory_file;
  vc->memory_share = !opts.memory_file.empty();
  vc->die_with_parent = opts.die_with_parent;
  vc->nic = opts.nic;
  vc->pit = opts.with_pit || !idle_quiet_tcg(*vc);
  vc->ioapic2 = opts.with_ioapic2;
  vc->console_ring_bytes = 0;  // a file while booting (ConsoleWatch), then the ring
  if (!image->disk.empty()) {
    std::string overlay = dir + "/overlay.qcow2";
    if (auto st = create_overlay(image->disk, "raw", overlay); !st) return fail(st.error());
    vc->disk = overlay;
  }
  auto jail = jail_vm(cfg, dir, opts.limits, &*vc);
  if (!jail) return fail(jail.error());

  logger("engine")->info("event=boot_start id={} image={}", id, opts.image);
  auto t_launch = Clock::now();
  auto vm = vmm::VmProcess::launch(*vc, dir + "/qemu.log", std::chrono::seconds(30));
  if (!vm) return fail(vm.error());
  timings.launch_ms = ms_since(t_launch);
  std::unique_ptr<Sandbox> sb(new Sandbox(id, dir, std::move(*vm)));
  sb->record_ = {{"image", opts.image},
                 {"memory_mib", opts.memory_mib},
                 {"ram_bytes", vc->ram_bytes},
                 {"cpus", opts.cpus},
                 {"accel", vmm::accel_name(vc->accel)},
                 {"machine", vmm::machine_name(vc->machine)},
                 {"kernel_append", vc->kernel_append},
                 {"created_at", static_cast<int64_t>(std::time(nullptr))}};
  sb->record_.update(*jail);
  sb->record_["nic"] = opts.nic;
  sb->record_["pit"] = vc->pit;
  sb->record_["ioapic2"] = vc->ioapic2;
  sb->record_["network"] = opts.nic ? "outbound" : "none";
  if (auto st = sb->write_record(); !st) return tl::unexpected(st.error().wrap("boot"));
  dir_lock->unlock();

  // Until the agent answers, the console goes to a file (so a kernel panic's last words survive
  // QEMU), watched: past kMaxBootConsoleBytes the boot is given up. Then the console moves into
  // QEMU's bounded ring.
  ConsoleWatch watch(vc->console_log, [vm = &sb->vm_] { vm->signal(SIGKILL); });
  auto agent = AgentClient::connect(vc->agent_socket, std::chrono::seconds(10));
  if (!agent) return tl::unexpected(agent.error().wrap("boot " + opts.image));
  sb->agent_ = std::move(*agent);
  auto left = opts.boot_timeout -
              std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t_launch);
  auto info = sb->agent_->wait_ready(std::max(left, std::chrono::milliseconds(1000)));
  watch.stop();
  if (watch.tripped()) {
    return make_error(ErrorCode::kQemuFailed, "boot " + opts.image +
                                                  ": the guest wrote more than " +
                                                  std::to_string(vmm::kMaxBootConsoleBytes >> 20) +
                                                  " MiB to its console while booting; stopped it");
  }
  if (!info) {
    std::string tail = sb->vm_.alive() ? "" : " (QEMU exited)";
    tail += "; console tail:\n" + vmm::log_tail(vc->console_log, 1500);
    return tl::unexpected(info.error().wrap("boot " + opts.image + tail));
  }
  if (auto st = console_to_ring(dir + "/qmp.sock"); !st) {
    return tl::unexpected(st.error().wrap("boot " + opts.image));
  }
  sb->agent_info_ = *info;
  timings.agent_ms = ms_since(t_launch);
  timings.total_ms = ms_since(t0);
  sb->timings_ = timings;
  logger("engine")->info("event=booted id={} image={} total_ms={:.0f}", id, opts.image,
                         timings.total_ms);
  return sb;
}

Result<std::unique_ptr<Sandbox>> Sandbox::attach(const EngineConfig& cfg, const std::string& id) {
  if (!is_safe_name(id)) {
    return make_error(ErrorCode::kInvalidArgument, "invalid sandbox id '" + id + "'");
  }
  std::string dir = cfg.sandboxes_dir() + "/" + id;
  auto text = forkd::read_file(dir + "/sandbox.json", 1 << 20);
  if (!text) return make_error(ErrorCode::kNotFound, "no sandbox " + id + " (see forkd ps)");
  Json rec = json::parse_untrusted(*text);
  if (rec.is_discarded() || !rec.is_object() || !rec["pid"].is_number_integer()) {
    return make_error(ErrorCode::kInvalidArgument, "sandbox " + id + ": unreadable record");
  }
  pid_t pid = rec["pid"].get<pid_t>();
  // The pid must still be our QEMU (pids are reused): its command line names the run dir.
  if (!qemu_owns_dir(pid, dir)) {
    return make_error(ErrorCode::kNotFound, "sandbox " + id + " is not running (its QEMU exited)");
  }
  auto vm = vmm::VmProcess::adopt(pid);
  if (!vm) return tl::unexpected(vm.error().wrap("sandbox " + id));
  std::unique_ptr<Sandbox> sb(new Sandbox(id, dir, std::move(*vm)));
  sb->owned_ = false;
  sb->record_ = rec;
  auto agent = AgentClient::connect(dir + "/agent.sock", std::chrono::seconds(2));
  if (!agent) return tl::unexpected(agent.error().wrap("sandbox " + id));
  // QEMU serves one host connection at a time: a second client waits until the first leaves.
  // An agent already found unresponsive gets less patience: every request to it pays this wait.
  bool known_unresponsive = marked_unresponsive(dir);
  auto hello = (*agent)->open_session(known_unresponsive ? std::chrono::seconds(2)
                                                         : std::chrono::seconds(10));
  if (!hello) {
    if ((*agent)->stalled()) mark_unresponsive(dir, hello.error().message());
    std::string hint = hello.error().code() == ErrorCode::kAgentTimeout
                           ? " (is another client connected to it?)"
                           : "";
    return tl::unexpected(hello.error().wrap("sandbox " + id + hint));
  }
  clear_unresponsive(dir);
  sb->agent_ = std::move(*agent);
  return sb;
}

void Sandbox::destroy() {
  if (destroyed_.exchange(true)) return;
  stop_vm();
  (void)remove_run_dir(dir_);
}

void Sandbox::stop_vm() {
  agent_.reset();
  if (vm_.alive()) {
    // A clean stop first; QEMU then exits on its own.
    auto qmp = vmm::QmpClient::connect(dir_ + "/qmp.sock", std::chrono::milliseconds(500));
    if (qmp) (void)qmp->execute("quit", vmm::Json::object(), std::chrono::milliseconds(1000));
    if (!vm_.wait_exit(std::chrono::milliseconds(2000))) {
      vm_.terminate(std::chrono::milliseconds(2000));
    }
  }
}

Result<AgentReply> Sandbox::call(Json request, std::string_view bin,
                                 std::chrono::milliseconds timeout, EventFn on_event) {
  if (!agent_ || !agent_->connected()) {
    std::string why = !vm_.alive()                  ? "the VM has exited"
                      : agent_ && agent_->stalled() ? "the guest agent stopped reading"
                                                    : "agent connection lost";
    return make_error(ErrorCode::kAgentError, "sandbox " + id_ + ": " + why);
  }
  // An idle child's code buffer past its window gets huge pages before the call translates into
  // it (vmm/code_pages.h); cheap from the second call on.
  vm_.ready_code_for_call(json::int_or(record_, "code_window", -1));
  auto r = agent_->call(std::move(request), bin, timeout, std::move(on_event));
  // The call ran guest code that TCG translated (vmm/code_pages.h).
  if (r && json::bool_or(record_, "collapse_code_pages", false)) vm_.collapse_code_pages();
  // A connection closed under the call is usually QEMU dying (killed by the kernel over its
  // memory limit, say): its sockets close while the process is still being torn down, so give
  // it a moment to be gone before deciding which it was.
  const bool closed = !r && r.error().message().find("connection closed") != std::string::npos;
  if (!r && (!vm_.alive() || (closed && vm_.wait_exit(std::chrono::milliseconds(1000))))) {
    if (oom_kills(dir_) > 0) {
      return make_error(ErrorCode::kAgentError,
                        "sandbox " + id_ +
                            ": its QEMU went over the sandbox's memory limit and "
                            "the kernel killed it (state failed, reason oom)");
    }
    return tl::unexpected(r.error().wrap("sandbox " + id_ + " (VM exited)"));
  }
  if (!r && agent_->stalled()) mark_unresponsive(dir_, r.error().message());
  return r;
}

Result<Json> Sandbox::ping(std::chrono::milliseconds timeout) {
  auto r = call(Json{{"op", "ping"}}, {}, timeout);
  if (!r) return tl::unexpected(r.error());
  auto info = decode_hello_reply(r->json);
  if (!info) return tl::unexpected(info.error().wrap("sandbox " + id_));
  return info;
}

}  // namespace forkd::engine

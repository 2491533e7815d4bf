#include "engine/sandbox.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <mutex>
#include <set>

#include "base/files.h"
#include "base/log.h"
#include "base/subprocess.h"
#include "vmm/accel.h"
#include "vmm/host_tsc.h"
#include "vmm/qmp_client.h"

namespace forkd::engine {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// Sandboxes owned by this process, for the Ctrl-C path.
std::mutex g_owned_mu;
std::set<Sandbox*> g_owned;

Status create_overlay(const std::string& base, const std::string& overlay) {
  if (find_in_path("qemu-img").empty()) {
    return make_error(ErrorCode::kQemuMissing,
                      "qemu-img not found; install it with: apt-get install qemu-utils");
  }
  auto r = run_capture({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base,
                        overlay},
                       std::chrono::seconds(30));
  if (!r) return tl::unexpected(r.error().wrap("qemu-img create"));
  if (r->exit_code != 0) {
    return make_error(ErrorCode::kQemuFailed, "qemu-img create " + overlay + ": " + r->output);
  }
  return {};
}

}  // namespace

Sandbox::Sandbox(std::string id, std::string dir, vmm::VmProcess vm)
    : id_(std::move(id)), dir_(std::move(dir)), vm_(std::move(vm)) {
  std::lock_guard lock(g_owned_mu);
  g_owned.insert(this);
}

Sandbox::~Sandbox() {
  destroy();
  std::lock_guard lock(g_owned_mu);
  g_owned.erase(this);
}

void Sandbox::destroy_all_owned() {
  std::lock_guard lock(g_owned_mu);
  for (Sandbox* sb : g_owned) {
    ::kill(sb->qemu_pid(), SIGKILL);
    (void)remove_tree(sb->dir_);
  }
}

Result<std::unique_ptr<Sandbox>> Sandbox::boot(const EngineConfig& cfg, const BootOptions& opts) {
  auto t0 = Clock::now();
  auto say = [](std::string_view s) { logger("engine")->info("event=boot_step step=\"{}\"", s); };
  if (opts.memory_mib < 64 || opts.memory_mib > 65536) {
    return make_error(ErrorCode::kInvalidArgument, "memory must be 64..65536 MiB");
  }
  if (opts.cpus < 1 || opts.cpus > 64) {
    return make_error(ErrorCode::kInvalidArgument, "cpus must be 1..64");
  }
  ImageStore store(cfg.home, cfg.assets, cfg.agent);
  auto image = store.get(opts.image, opts.progress);
  if (!image) return tl::unexpected(image.error());
  auto accel = vmm::choose_accel(cfg.accel);
  if (!accel) return tl::unexpected(accel.error());
  BootTimings timings;
  timings.image_ms = ms_since(t0);

  std::string id = "sb-" + random_hex(6);
  std::string dir = cfg.sandboxes_dir() + "/" + id;
  FORKD_TRY(make_dirs(dir));
  auto fail = [&](Error e) -> Result<std::unique_ptr<Sandbox>> {
    (void)remove_tree(dir);
    return tl::unexpected(e.wrap("boot " + opts.image));
  };

  vmm::VmConfig vc;
  vc.name = "forkd-" + id;
  vc.machine = cfg.machine;
  vc.accel = accel->accel;
  vc.tb_size_mib = cfg.tb_size_mib;
  vc.cpus = opts.cpus;
  vc.memory_mib = opts.memory_mib;
  vc.kernel = image->kernel;
  vc.initrd = image->initrd;
  vc.kernel_append = image->append + " forkd.id=" + id;
  if (vc.machine == vmm::MachineType::kMicrovm) {
    // No PCI bus on microvm: skip probing it.
    vc.kernel_append += " pci=off";
    if (vc.accel == vmm::Accel::kTcg) {
      if (uint64_t khz = vmm::host_tsc_khz(); khz > 0) {
        vc.kernel_append += " tsc_early_khz=" + std::to_string(khz);
      }
    }
  }
  if (!opts.extra_append.empty()) vc.kernel_append += " " + opts.extra_append;
  if (!image->disk.empty()) {
    std::string overlay = dir + "/overlay.qcow2";
    if (auto st = create_overlay(image->disk, overlay); !st) return fail(st.error());
    vc.disk = overlay;
  }
  vc.qmp_socket = dir + "/qmp.sock";
  vc.agent_socket = dir + "/agent.sock";
  vc.console_log = dir + "/console.log";
  vc.pid_file = dir + "/qemu.pid";

  say("starting QEMU (" + std::string(vmm::machine_name(vc.machine)) + ", " +
      std::string(vmm::accel_name(vc.accel)) + ")");
  auto t_launch = Clock::now();
  auto vm = vmm::VmProcess::launch(vc, dir + "/qemu.log", std::chrono::seconds(30));
  if (!vm) return fail(vm.error());
  timings.launch_ms = ms_since(t_launch);
  std::unique_ptr<Sandbox> sb(new Sandbox(id, dir, std::move(*vm)));

  Json record = {{"schema", 1},
                 {"id", id},
                 {"image", opts.image},
                 {"pid", sb->qemu_pid()},
                 {"memory_mib", opts.memory_mib},
                 {"cpus", opts.cpus},
                 {"accel", vmm::accel_name(vc.accel)},
                 {"machine", vmm::machine_name(vc.machine)},
                 {"created_at", static_cast<int64_t>(std::time(nullptr))}};
  if (auto st = write_file_atomic(dir + "/sandbox.json", record.dump(2) + "\n"); !st) {
    return tl::unexpected(st.error().wrap("boot " + opts.image));
  }

  say("waiting for the agent");
  auto agent = AgentClient::connect(vc.agent_socket, std::chrono::seconds(10));
  if (!agent) return tl::unexpected(agent.error().wrap("boot " + opts.image));
  sb->agent_ = std::move(*agent);
  auto left = opts.boot_timeout - std::chrono::duration_cast<std::chrono::milliseconds>(
                                      Clock::now() - t_launch);
  auto info = sb->agent_->wait_ready(std::max(left, std::chrono::milliseconds(1000)));
  if (!info) {
    std::string tail = sb->vm_.alive() ? "" : " (QEMU exited)";
    tail += "; console tail:\n" + vmm::log_tail(vc.console_log, 1500);
    return tl::unexpected(info.error().wrap("boot " + opts.image + tail));
  }
  sb->agent_info_ = *info;
  timings.agent_ms = ms_since(t_launch);
  timings.total_ms = ms_since(t0);
  sb->timings_ = timings;
  logger("engine")->info("event=booted id={} image={} total_ms={:.0f}", id, opts.image,
                         timings.total_ms);
  return sb;
}

void Sandbox::destroy() {
  if (destroyed_) return;
  destroyed_ = true;
  agent_.reset();
  if (vm_.alive()) {
    // A clean stop first; QEMU then exits on its own.
    auto qmp = vmm::QmpClient::connect(dir_ + "/qmp.sock", std::chrono::milliseconds(500));
    if (qmp) (void)qmp->execute("quit", vmm::Json::object(), std::chrono::milliseconds(1000));
    if (!vm_.wait_exit(std::chrono::milliseconds(2000))) {
      vm_.terminate(std::chrono::milliseconds(2000));
    }
  }
  (void)remove_tree(dir_);
}

Result<AgentReply> Sandbox::call(Json request, std::string_view bin,
                                 std::chrono::milliseconds timeout, EventFn on_event) {
  if (!agent_ || !agent_->connected()) {
    std::string why = vm_.alive() ? "agent connection lost" : "the VM has exited";
    return make_error(ErrorCode::kAgentError, "sandbox " + id_ + ": " + why);
  }
  auto r = agent_->call(std::move(request), bin, timeout, std::move(on_event));
  if (!r && !vm_.alive()) return tl::unexpected(r.error().wrap("sandbox " + id_ + " (VM exited)"));
  return r;
}

Result<Json> Sandbox::ping(std::chrono::milliseconds timeout) {
  auto r = call(Json{{"op", "ping"}}, {}, timeout);
  if (!r) return tl::unexpected(r.error());
  return r->json;
}

}  // namespace forkd::engine

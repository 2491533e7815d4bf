#include "engine/migration.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include "base/files.h"
#include "vmm/jail.h"

namespace forkd::engine {

namespace {

using Clock = std::chrono::steady_clock;
using vmm::Json;

constexpr auto kMigrationTimeout = std::chrono::seconds(60);

// The capabilities of a migration to or from a file: x-ignore-shared as asked, and off what a
// branch of this VM may have left on (a file takes one channel, has no return path, and nobody
// answers a pause before the switch-over here).
Status set_file_caps(vmm::QmpClient& qmp, bool ignore_shared) {
  std::vector<std::pair<std::string, bool>> caps = {
      {"x-ignore-shared", ignore_shared}, {"multifd", false}, {"pause-before-switchover", false}};
  auto gate = switchover_gate_caps(false);
  if (!gate) return tl::unexpected(gate.error());
  caps.insert(caps.end(), gate->begin(), gate->end());
  return set_migration_caps(qmp, caps);
}

// Polls query-migrate until the migration completed or failed.
Status wait_migration(vmm::QmpClient& qmp) {
  auto deadline = Clock::now() + kMigrationTimeout;
  for (;;) {
    auto r = qmp.execute("query-migrate");
    if (!r) return tl::unexpected(r.error());
    std::string status = r->is_object() ? r->value("status", "") : "";
    if (status == "completed") return {};
    if (status == "failed" || status == "cancelled") {
      std::string why = r->value("error-desc", "no reason given");
      return make_error(ErrorCode::kQemuFailed, "migration " + status + ": " + why);
    }
    if (Clock::now() > deadline) {
      return make_error(ErrorCode::kTimeout, "migration still '" + status + "' after 60 s");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
}

Status pass_fd(vmm::QmpClient& qmp, int fd, const std::string& name) {
  auto r = qmp.execute_with_fd("getfd", Json{{"fdname", name}}, fd);
  if (!r) return tl::unexpected(r.error().wrap("getfd"));
  return {};
}

}  // namespace

Status set_migration_caps(vmm::QmpClient& qmp,
                          const std::vector<std::pair<std::string, bool>>& caps) {
  Json list = Json::array();
  for (const auto& [name, on] : caps) list.push_back({{"capability", name}, {"state", on}});
  auto r = qmp.execute("migrate-set-capabilities", Json{{"capabilities", list}});
  if (!r) return tl::unexpected(r.error());
  return {};
}

Result<std::vector<std::pair<std::string, bool>>> switchover_gate_caps(bool on) {
  const bool have = vmm::host_jail().switchover_ack;
  if (on && !have) {
    return make_error(ErrorCode::kInternal, "this QEMU (" + vmm::host_jail().qemu_version +
                                                ") has no switchover-ack capability (8.1+)");
  }
  std::vector<std::pair<std::string, bool>> caps = {{"return-path", on}};
  if (have) caps.emplace_back("switchover-ack", on);
  return caps;
}

Result<SaveResult> save_device_state(vmm::QmpClient& qmp, const std::string& path,
                                     bool ignore_shared, bool sync) {
  FORKD_TRY(set_file_caps(qmp, ignore_shared));
  if (!ignore_shared) {
    // A plain save of a stopped VM: let it write as fast as the disk takes it.
    auto p = qmp.execute("migrate-set-parameters", Json{{"max-bandwidth", int64_t{1} << 40}});
    if (!p) return tl::unexpected(p.error());
  }
  auto fd = open_file(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (!fd) return tl::unexpected(fd.error());
  FORKD_TRY(pass_fd(qmp, fd->get(), "vmstate"));
  auto t_stop = Clock::now();
  auto stopped = qmp.execute("stop");
  if (!stopped) return tl::unexpected(stopped.error().wrap("stop"));
  auto started = qmp.execute("migrate", Json{{"uri", "fd:vmstate"}});
  if (!started) return tl::unexpected(started.error().wrap("migrate"));
  FORKD_TRY(wait_migration(qmp));
  SaveResult res;
  res.written_ms = std::chrono::duration<double, std::milli>(Clock::now() - t_stop).count();
  if (sync && ::fsync(fd->get()) != 0) return errno_error(errno, "fsync " + path);
  res.pause_ms = std::chrono::duration<double, std::milli>(Clock::now() - t_stop).count();
  struct stat st;
  if (::fstat(fd->get(), &st) == 0) res.bytes = static_cast<uint64_t>(st.st_size);
  if (res.bytes == 0) return make_error(ErrorCode::kQemuFailed, "device state file is empty");
  return res;
}

Result<SaveResult> save_device_state(const std::string& qmp_socket, const std::string& path,
                                     bool ignore_shared) {
  auto qmp = vmm::QmpClient::connect(qmp_socket, std::chrono::seconds(5));
  if (!qmp) return tl::unexpected(qmp.error());
  return save_device_state(*qmp, path, ignore_shared);
}

Status load_device_state(vmm::QmpClient& qmp, const std::string& path, bool ignore_shared,
                         bool run) {
  // Every capability is off in a QEMU started with -incoming defer: only x-ignore-shared is
  // sent, when asked (QEMU reads QMP a byte at a time, ~10 us each here: vmm::QmpClient::arm).
  if (ignore_shared) FORKD_TRY(set_migration_caps(qmp, {{"x-ignore-shared", true}}));
  auto fd = open_file(path, O_RDONLY);
  if (!fd) return tl::unexpected(fd.error());
  FORKD_TRY(pass_fd(qmp, fd->get(), "vmstate"));
  auto r = qmp.execute("migrate-incoming", Json{{"uri", "fd:vmstate"}});
  if (!r) return tl::unexpected(r.error().wrap("migrate-incoming"));
  FORKD_TRY(wait_migration(qmp));
  if (!run) return {};
  auto status = qmp.execute("query-status");
  if (!status) return tl::unexpected(status.error());
  if (!status->value("running", false)) {
    auto cont = qmp.execute("cont");
    if (!cont) return tl::unexpected(cont.error().wrap("cont"));
  }
  return {};
}

}  // namespace forkd::engine

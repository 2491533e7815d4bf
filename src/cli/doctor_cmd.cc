// forkd doctor: checks the host and says how to fix each problem.
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "base/files.h"
#include "base/subprocess.h"
#include "cli/output.h"
#include "engine/image_store.h"
#include "engine/sandbox_jail.h"
#include "vmm/accel.h"
#include "vmm/jail.h"
#include "vmm/ksm.h"
#include "vmm/lean_qemu.h"

namespace forkd::cli {

namespace {

struct Check {
  std::string name;
  std::string status;  // ok | warn | fail
  std::string detail;
  std::string fix;
};

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

Check check_binary(const std::string& name, const std::string& what, const std::string& pkg,
                   const std::vector<std::string>& version_args) {
  std::string path = find_in_path(name);
  if (path.empty()) return {what, "fail", name + " not found", "apt-get install " + pkg};
  std::string detail = path;
  if (!version_args.empty()) {
    std::vector<std::string> argv = {path};
    argv.insert(argv.end(), version_args.begin(), version_args.end());
    auto r = run_capture(argv, std::chrono::seconds(10));
    if (r && r->exit_code == 0) detail = first_line(r->output);
  }
  return {what, "ok", detail, ""};
}

Check check_ksm(const engine::EngineConfig& cfg) {
  if (!cfg.ksm) {
    return {"ksm", "ok", "off (FORKD_KSM=1 merges equal memory pages across sandboxes)", ""};
  }
  if (std::string why = vmm::ksm_unsupported_reason(); !why.empty()) {
    return {"ksm", "fail", "FORKD_KSM=1, but " + why,
            "unset FORKD_KSM, or run a Linux 6.10+ kernel with KSM"};
  }
  auto k = vmm::read_ksm_state();
  if (!k.running) {
    return {"ksm", "warn", "FORKD_KSM=1: QEMUs are mergeable, but ksmd is not running",
            std::string("echo 1 > ") + vmm::kKsmSysfs + "/run"};
  }
  return {"ksm", "ok",
          fmt::format("on: ksmd scans {} pages every {} ms; {} MiB saved now", k.pages_to_scan,
                      k.sleep_ms, (k.pages_sharing * 4) >> 10),
          ""};
}

Check check_lean_qemu(const engine::EngineConfig& cfg) {
  if (!cfg.lean_qemu) {
    return {"qemu-libs", "ok", "QEMU loads its own libcapstone and libpmem (FORKD_LEAN_QEMU=0)",
            ""};
  }
  const vmm::LeanQemuProbe& lean = vmm::host_jail().lean;
  if (lean.dir.empty()) {
    return {"qemu-libs", "warn",
            "QEMU loads its own libcapstone and libpmem (1-2 MiB more per child): " + lean.reason,
            "make build (it builds the stubs into build/" + std::string(vmm::kLeanQemuDirName) +
                ", which only its owner may write), or FORKD_LEAN_QEMU=0 to silence this"};
  }
  const bool shim = vmm::lean_qemu_env(lean.dir).count("LD_PRELOAD") > 0;
  // The second set only saves start-up time: without it, say why, but nothing is wrong.
  const std::string unused =
      lean.unused_stubs
          ? ", and with stubs of the libraries it links for features forkd never "
            "configures (TLS, VNC, RDMA, FUSE, ...)"
          : "; without stubs of the libraries forkd never uses: " + lean.unused_reason;
  return {"qemu-libs", "ok",
          "QEMU runs with forkd's stubs of libcapstone and libpmem" +
              std::string(shim ? " and preloads its shim (small areas without huge pages, no "
                                 "second clearing of the device tree)"
                               : "") +
              " (" + lean.dir + ")" + unused,
          ""};
}

Check check_static_qemu(const engine::EngineConfig& cfg) {
  if (!cfg.lean_qemu || !cfg.static_qemu) {
    return {"qemu-static", "ok",
            std::string("every VM runs the installed QEMU (") +
                (cfg.lean_qemu ? "FORKD_STATIC_QEMU=0" : "FORKD_LEAN_QEMU=0") + ")",
            ""};
  }
  const vmm::StaticQemu& s = vmm::host_jail().static_qemu;
  if (s.binary.empty()) {
    return {"qemu-static", "warn",
            "every VM runs the installed QEMU, whose start costs 40-75 ms more CPU: " + s.reason,
            "make qemu-static (about 5 minutes), or FORKD_STATIC_QEMU=0 to silence this"};
  }
  if (vmm::host_jail().lean.dir.empty()) {
    return {"qemu-static", "warn",
            "built (" + s.binary +
                "), but not used: it stands in only where QEMU runs with "
                "forkd's stubs (see qemu-libs)",
            ""};
  }
  return {"qemu-static", "ok",
          "sandboxes without a network run forkd's static QEMU build (" + s.binary +
              "); the rest the installed QEMU",
          ""};
}

std::string fs_name(long type) {
  switch (type) {
    case EXT4_SUPER_MAGIC:
      return "ext4";
    case TMPFS_MAGIC:
      return "tmpfs";
    case BTRFS_SUPER_MAGIC:
      return "btrfs";
    case XFS_SUPER_MAGIC:
      return "xfs";
    case OVERLAYFS_SUPER_MAGIC:
      return "overlayfs";
    default:
      return "other (0x" + fmt::format("{:x}", type) + ")";
  }
}

std::vector<Check> run_checks(const engine::EngineConfig& cfg) {
  std::vector<Check> out;
  out.push_back(check_binary("qemu-system-x86_64", "qemu", "qemu-system-x86", {"--version"}));
  out.push_back(check_binary("qemu-img", "qemu-img", "qemu-utils", {}));
  auto accel = vmm::choose_accel(cfg.accel);
  if (accel) {
    out.push_back({"accelerator", "ok",
                   std::string(vmm::accel_name(accel->accel)) + ": " + accel->reason, ""});
    if (accel->accel == vmm::Accel::kTcg) {
      out.push_back({"isolation", "warn",
                     "under TCG QEMU itself is not a security boundary; the jail below is",
                     "run on a host with vmx/svm for KVM isolation"});
    } else {
      out.push_back({"isolation", "ok", "KVM hardware virtualization, plus the jail below", ""});
    }
  } else {
    out.push_back({"accelerator", "fail", accel.error().message(), "use --accel auto or tcg"});
  }
  engine::ImageStore store(cfg.home, cfg.assets, cfg.agent);
  if (path_exists(cfg.agent)) {
    out.push_back({"agent", "ok", cfg.agent, ""});
  } else {
    out.push_back({"agent", "fail", cfg.agent + " missing", "make build"});
  }
  auto kc = store.kernel_cached();
  if (kc && *kc) {
    out.push_back({"kernel cache", "ok", "guest kernel built", ""});
  } else {
    out.push_back(
        {"kernel cache", "warn",
         kc ? "guest kernel not built yet (first boot builds it, ~5 min)" : kc.error().message(),
         "forkd run -- true (builds it once)"});
  }
  for (const auto& name : engine::ImageStore::known_images()) {
    auto ic = store.image_cached(name);
    if (ic && *ic) {
      out.push_back({"image " + name, "ok", "built", ""});
    } else {
      out.push_back({"image " + name, "warn", ic ? "not built yet" : ic.error().message(),
                     "forkd run --image " + name + " -- true"});
    }
  }
  out.push_back(check_binary("busybox", "busybox", "busybox-static", {}));
  out.push_back(check_binary("debootstrap", "debootstrap", "debootstrap", {}));
  out.push_back(path_exists("/usr/src/linux-source-6.1.tar.xz")
                    ? Check{"kernel source", "ok", "/usr/src/linux-source-6.1.tar.xz", ""}
                    : Check{"kernel source", "fail", "linux-source-6.1 missing",
                            "apt-get install linux-source-6.1"});
  (void)make_dirs(cfg.home);
  struct statvfs sv;
  if (::statvfs(cfg.home.c_str(), &sv) == 0) {
    uint64_t free_mib = static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize >> 20;
    std::string detail = std::to_string(free_mib / 1024) + " GiB free in " + cfg.home;
    out.push_back(free_mib >= 4096 ? Check{"disk", "ok", detail, ""}
                                   : Check{"disk", free_mib >= 1024 ? "warn" : "fail", detail,
                                           "free space or set FORKD_HOME to a larger disk"});
  } else {
    out.push_back({"disk", "fail", "cannot stat " + cfg.home, "set FORKD_HOME to a writable dir"});
  }
  struct statfs sf;
  if (::statfs(cfg.home.c_str(), &sf) == 0) {
    std::string fs = fs_name(static_cast<long>(sf.f_type));
    bool reflink = fs == "btrfs" || fs == "xfs";
    out.push_back({"filesystem", "ok",
                   fs + " at " + cfg.home + (reflink ? " (reflink copies)" : " (no reflink)"), ""});
  }
  long uffd = ::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (uffd >= 0) {
    ::close(static_cast<int>(uffd));
    out.push_back({"userfaultfd", "ok", "available", ""});
  } else {
    out.push_back({"userfaultfd", "warn", std::string("unavailable: ") + strerror(errno),
                   "sysctl vm.unprivileged_userfaultfd=1 or run as root"});
  }
  out.push_back(check_ksm(cfg));
  out.push_back(check_lean_qemu(cfg));
  out.push_back(check_static_qemu(cfg));
  auto b = engine::boundary_info(cfg.default_limits, cfg.expose_address);
  if (b["jailed"].get<bool>()) {
    out.push_back({"jail", "ok",
                   "each QEMU as its own uid (" + std::to_string(vmm::kJailUidBase) + "+), group " +
                       vmm::kJailUser + ", no capabilities, no_new_privs, -sandbox " +
                       vmm::kSeccompOptions,
                   ""});
  } else {
    out.push_back({"jail", "warn",
                   b["reason"].get<std::string>() + "; QEMU keeps no_new_privs and -sandbox " +
                       vmm::kSeccompOptions,
                   "run forkd as root with QEMU 8.2+ (scripts/install-deps.sh)"});
  }
  const auto& cg = b["cgroups"];
  std::string controllers;
  for (const auto& c : cg["controllers"])
    controllers += (controllers.empty() ? "" : ",") + c.get<std::string>();
  std::string layout = "cgroup " + cg["version"].get<std::string>() +
                       (controllers.empty() ? "" : " (" + controllers + ")");
  out.push_back(
      cg["usable"].get<bool>()
          ? Check{"cgroups", "ok", layout + ": limits per sandbox (memory, cpu, pids)", ""}
          : Check{"cgroups", "warn", layout + ": no per-sandbox limits",
                  "run forkd as root on a host with cgroups"});
  out.push_back(
      {"network", "ok",
       "modes none, outbound (slirp in each QEMU; exposed ports on " + cfg.expose_address + ")",
       ""});
  const auto& ns = b["network"]["per_child_netns"];
  if (!ns["available"].get<bool>()) {
    out.push_back({"per_child_netns", "warn",
                   "not available: " + ns["reason"].get<std::string>() +
                       " (children use slirp; allow-lists need it)",
                   "run forkd as root with iproute2 and nftables (scripts/install-deps.sh)"});
  } else if (!ns["host_forwarding"].get<bool>()) {
    out.push_back({"per_child_netns", "warn",
                   "available (namespaces in " + ns["pool"].get<std::string>() +
                       ", allow-lists), but this host does not forward: children reach the host "
                       "and nothing beyond it",
                   "sysctl -w net.ipv4.ip_forward=1 and masquerade the pool (docs/NETWORK.md)"});
  } else {
    out.push_back({"per_child_netns", "ok",
                   "available: a namespace and tap per child in " + ns["pool"].get<std::string>() +
                       ", allow-lists",
                   ""});
  }
  return out;
}

int do_doctor(const GlobalOptions& g, bool json) {
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  auto checks = run_checks(*cfg);
  bool failed = false;
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& c : checks) {
    failed |= c.status == "fail";
    arr.push_back({{"check", c.name}, {"status", c.status}, {"detail", c.detail}, {"fix", c.fix}});
  }
  if (json) {
    std::printf("%s\n", nlohmann::json{{"ok", !failed},
                                       {"home", cfg->home},
                                       {"checks", arr},
                                       {"boundary", engine::boundary_info(cfg->default_limits,
                                                                          cfg->expose_address)}}
                            .dump(2)
                            .c_str());
  } else {
    for (const auto& c : checks) {
      std::printf("%-5s %-14s %s\n",
                  c.status == "ok"     ? "ok"
                  : c.status == "warn" ? "WARN"
                                       : "FAIL",
                  c.name.c_str(), c.detail.c_str());
      if (c.status != "ok" && !c.fix.empty())
        std::printf("      %-14s fix: %s\n", "", c.fix.c_str());
    }
    std::printf("%s\n", failed ? "doctor: problems found" : "doctor: ready");
  }
  return failed ? kExitError : 0;
}

}  // namespace

void register_doctor(CLI::App& app, GlobalOptions& g, Action& action) {
  auto json = std::make_shared<bool>(false);
  auto* sub = app.add_subcommand("doctor", "Check this host and print a fix for each problem");
  sub->add_flag("--json", *json, "Machine-readable output");
  sub->callback([&action, &g, json] { action = [&g, json] { return do_doctor(g, *json); }; });
}

}  // namespace forkd::cli

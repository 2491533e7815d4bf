#include "engine/sandbox_jail.h"

#include <sys/stat.h>
#include <unistd.h>

#include <mutex>
#include <set>

#include "base/files.h"
#include "base/json_get.h"
#include "base/log.h"
#include "engine/config.h"
#include "vmm/jail.h"
#include "vmm/netns.h"

namespace forkd::engine {

namespace {

std::string base_name(const std::string& dir) {
  size_t slash = dir.find_last_of('/');
  return slash == std::string::npos ? dir : dir.substr(slash + 1);
}

vmm::SandboxCgroup cgroup_of(const std::string& dir) {
  return vmm::SandboxCgroup::existing(vmm::host_jail().cgroups, kCgroupParent, base_name(dir));
}

}  // namespace

nlohmann::json limits_json(const vmm::Limits& l) {
  nlohmann::json j = {{"memory_mib", nullptr}, {"cpus", nullptr}, {"pids", nullptr}};
  if (l.memory_bytes) j["memory_mib"] = *l.memory_bytes >> 20;
  if (l.cpus) j["cpus"] = *l.cpus;
  if (l.pids) j["pids"] = *l.pids;
  return j;
}

vmm::Limits limits_from_json(const nlohmann::json& j) {
  vmm::Limits l;
  if (!j.is_object()) return l;
  if (auto m = j.find("memory_mib"); m != j.end() && m->is_number_unsigned()) {
    l.memory_bytes = m->get<uint64_t>() << 20;
  }
  if (auto c = j.find("cpus"); c != j.end() && c->is_number()) l.cpus = c->get<double>();
  if (auto p = j.find("pids"); p != j.end() && p->is_number_integer()) l.pids = p->get<int64_t>();
  return l;
}

vmm::Limits limits_of(int64_t memory_mib, double cpus, int64_t pids) {
  vmm::Limits l;
  if (memory_mib > 0) l.memory_bytes = static_cast<uint64_t>(memory_mib) << 20;
  if (cpus > 0) l.cpus = cpus;
  if (pids > 0) l.pids = pids;
  return l;
}

vmm::Limits merge_limits(vmm::Limits base, const vmm::Limits& over) {
  if (over.memory_bytes) base.memory_bytes = over.memory_bytes;
  if (over.cpus) base.cpus = over.cpus;
  if (over.pids) base.pids = over.pids;
  return base;
}

Status share_home_with_jail(const std::string& home) {
  static std::mutex mu;
  static std::set<std::string> done;
  const vmm::HostJail& jail = vmm::host_jail();
  if (!jail.active) return {};
  std::lock_guard lock(mu);
  if (done.count(home)) return {};
  // Jailed QEMUs traverse (never list) these, as the group forkd-qemu; nobody else may.
  for (const char* sub : kHomeDirs) {
    std::string dir = home + sub;
    FORKD_TRY(make_dirs(dir, 0700));
    struct stat st;
    // A symlink to another home's directory (the tests share images so) is that home's.
    if (::lstat(dir.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) continue;
    FORKD_TRY(vmm::open_dir_to_group(dir, jail.gid));
  }
  // Tags, images and caches written before the jail (or by an older forkd) join the group.
  for (const char* sub : {"/snapshots", "/images", "/cache"}) {
    vmm::share_tree_with_group(home + sub, jail.gid);
  }
  done.insert(home);
  return {};
}

Result<nlohmann::json> jail_vm(const EngineConfig& cfg, const std::string& dir,
                               const vmm::Limits& limits, vmm::VmConfig* vc) {
  const vmm::HostJail& host = vmm::host_jail();
  vc->memory_readonly = host.private_readonly_ram;
  const bool jailed = host.active && cfg.jail;
  nlohmann::json rec = {
      {"jailed", jailed}, {"uid", nullptr}, {"cgroup", nullptr}, {"limits", limits_json(limits)}};
  if (!jailed) {
    if (!limits.empty()) {
      return make_error(ErrorCode::kUnavailable,
                        "limits need the jail, which is off here: " +
                            (host.active ? std::string("this caller turned it off") : host.reason));
    }
    rec["uid"] = ::geteuid();
    return rec;
  }
  FORKD_TRY(share_home_with_jail(cfg.home));
  auto id = vmm::allocate_identity(host);
  if (!id) return tl::unexpected(id.error());
  FORKD_TRY(vmm::open_dir_to_group(dir, host.gid));
  // What QEMU writes by path: its disk overlay and a shared (template) memory file.
  if (vc->disk) FORKD_TRY(vmm::give_file(*vc->disk, *id));
  if (!vc->memory_file.empty() && vc->memory_share) {
    FORKD_TRY(vmm::give_file(vc->memory_file, *id));
    // It lives in a tag's staging dir, which QEMU must traverse.
    FORKD_TRY(
        vmm::open_dir_to_group(vc->memory_file.substr(0, vc->memory_file.rfind('/')), host.gid));
  }
  if (host.cgroups.version != vmm::CgroupVersion::kNone) {
    auto cg = vmm::SandboxCgroup::create(host.cgroups, kCgroupParent, base_name(dir), limits);
    if (!cg) return tl::unexpected(cg.error());
    vc->cgroup_procs = cg->join_files();
    rec["cgroup"] = std::string(kCgroupParent) + "/" + base_name(dir);
  } else if (!limits.empty()) {
    return make_error(ErrorCode::kUnavailable, "limits need cgroups: " + host.cgroups.reason);
  }
  vc->jail = *id;
  rec["uid"] = id->uid;
  return rec;
}

namespace {

// A hostile record's netns: a name of ours, addresses that are IPv4 text, allow-list entries
// that parse; anything else is dropped.
nlohmann::json netns_info(const nlohmann::json& ns) {
  std::string name = json::string_or(ns, "name", "");
  if (name.size() > 64 || name.rfind("forkd-", 0) != 0 ||
      name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") !=
          std::string::npos) {
    return nullptr;
  }
  nlohmann::json out = {{"name", name}, {"allow_list", nlohmann::json::array()}};
  for (const char* key : {"address", "host_address"}) {
    std::string a = json::string_or(ns, key, "");
    out[key] = is_ipv4_address(a) ? nlohmann::json(a) : nlohmann::json();
  }
  if (auto a = ns.find("allow"); a != ns.end() && a->is_array()) {
    for (const auto& e : *a) {
      if (!e.is_string() || out["allow_list"].size() >= vmm::kMaxAllowRules) continue;
      if (auto r = vmm::parse_allow_rule(e.get<std::string>()))
        out["allow_list"].push_back(r->text());
    }
  }
  return out;
}

}  // namespace

nlohmann::json isolation_info(const nlohmann::json& rec) {
  nlohmann::json out = {{"uid", nullptr},
                        {"jailed", false},
                        {"limits", limits_json({})},
                        {"network", "none"},
                        {"ports", nlohmann::json::array()}};
  if (!rec.is_object()) return out;
  if (auto u = rec.find("uid"); u != rec.end() && u->is_number_unsigned()) out["uid"] = *u;
  if (auto j = rec.find("jailed"); j != rec.end() && j->is_boolean()) out["jailed"] = *j;
  if (auto l = rec.find("limits"); l != rec.end())
    out["limits"] = limits_json(limits_from_json(*l));
  if (auto n = rec.find("network");
      n != rec.end() && n->is_string() && (*n == "none" || *n == "outbound")) {
    out["network"] = *n;
  }
  out["netns"] = nullptr;  // forkd's field: the namespace's name
  out["netns_network"] = nullptr;
  if (auto ns = rec.find("netns"); ns != rec.end() && ns->is_object()) {
    auto info = netns_info(*ns);
    if (info.is_object()) {
      out["netns"] = info["name"];
      info.erase("name");
      out["netns_network"] = std::move(info);
    }
  }
  if (auto p = rec.find("ports"); p != rec.end() && p->is_array()) {
    for (const auto& f : *p) {
      int guest = json::int_or(f, "guest", 0);
      int host = json::int_or(f, "host", 0);
      if (guest < 1 || guest > 65535 || host < 1 || host > 65535) continue;
      nlohmann::json port = {{"guest", guest}, {"host", host}};
      if (auto a = json::string_or(f, "address", ""); is_ipv4_address(a)) port["address"] = a;
      out["ports"].push_back(std::move(port));
    }
  }
  return out;
}

nlohmann::json boundary_info(const vmm::Limits& default_limits, const std::string& expose_address) {
  const vmm::HostJail& host = vmm::host_jail();
  const vmm::NetnsSupport netns = vmm::netns_support();
  nlohmann::json j = {
      {"jailed", host.active},
      {"reason", host.active ? "" : host.reason},
      {"user", host.active ? vmm::kJailUser : ""},
      {"uid_range",
       host.active
           ? nlohmann::json::array({vmm::kJailUidBase, vmm::kJailUidBase + vmm::kJailUidCount - 1})
           : nlohmann::json()},
      {"no_new_privs", true},
      {"seccomp", vmm::kSeccompOptions},
      {"cgroups",
       {{"version", vmm::cgroup_version_name(host.cgroups.version)},
        {"controllers", host.cgroups.controllers},
        {"usable", host.active && host.cgroups.version != vmm::CgroupVersion::kNone}}},
      {"default_limits", limits_json(default_limits)},
      {"network_modes", {"none", "outbound"}},
      {"network",
       {{"outbound",
         "virtio-net on a user-mode network inside each QEMU (slirp): the guest is "
         "10.0.2.15, 10.0.2.2 is this host's loopback, 10.0.2.3 its resolver"},
        {"expose_address", expose_address},
        {"per_child_netns",
         {{"available", netns.available},
          {"reason", netns.reason},
          {"pool", vmm::kNetnsPool},
          {"host_forwarding", netns.host_forwarding}}},
        {"allow_list", netns.available}}},
      {"qemu_version", host.qemu_version}};
  return j;
}

Status apply_limits(const std::string& dir, const vmm::Limits& limits) {
  const vmm::HostJail& host = vmm::host_jail();
  if (limits.empty()) return {};
  if (!host.active || host.cgroups.version == vmm::CgroupVersion::kNone) {
    return make_error(ErrorCode::kUnavailable, "limits need the jail and cgroups: " + host.reason);
  }
  // create() on an existing leaf only writes the limits.
  auto cg = vmm::SandboxCgroup::create(host.cgroups, kCgroupParent, base_name(dir), limits);
  if (!cg) return tl::unexpected(cg.error());
  return {};
}

uint64_t oom_kills(const std::string& dir) { return cgroup_of(dir).oom_kills(); }

Status remove_run_dir(const std::string& dir) {
  // A child's own network namespace (named after it; see vmm/netns.h), if it had one.
  if (auto ns = vmm::remove_child_netns(vmm::netns_name(base_name(dir))); !ns) {
    logger("jail")->warn("event=netns_left dir={} why=\"{}\"", dir, ns.error().message());
  }
  // A cgroup the kernel still holds (a QEMU that has not finished exiting) is not the caller's
  // failure: gc sweeps empty leaves later (vmm::sweep_stale_leaves).
  if (auto cg = cgroup_of(dir).remove(); !cg) {
    logger("jail")->info("event=cgroup_left dir={} why=\"{}\"", dir, cg.error().message());
  }
  return remove_tree(dir);
}

}  // namespace forkd::engine

#include "engine/restore.h"

#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <iterator>
#include <thread>

#include "base/clock.h"
#include "base/files.h"
#include "base/json_get.h"
#include "base/log.h"
#include "engine/agent_replies.h"
#include "engine/code_window.h"
#include "engine/migration.h"
#include "engine/overlay_template.h"
#include "engine/sandbox_jail.h"
#include "engine/vm_setup.h"
#include "store/chain.h"
#include "store/snapshot_store.h"
#include "vmm/code_pages.h"
#include "vmm/netns.h"
#include "vmm/nic.h"

namespace forkd::engine {

namespace {

using Clock = std::chrono::steady_clock;

int64_t realtime_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

}  // namespace

// Friend of Sandbox: assembles one from the pieces of a restore.
class Restorer {
 public:
  static std::unique_ptr<Sandbox> make(std::string id, std::string dir, vmm::VmProcess vm) {
    return std::unique_ptr<Sandbox>(new Sandbox(std::move(id), std::move(dir), std::move(vm)));
  }
  static void set_agent(Sandbox& sb, std::unique_ptr<AgentClient> agent, Json info) {
    sb.agent_ = std::move(agent);
    sb.agent_info_ = std::move(info);
  }
  static Json& record(Sandbox& sb) { return sb.record_; }
  static Status write_record(Sandbox& sb) { return sb.write_record(); }
  static RestoreTimings& timings(Sandbox& sb) { return sb.restore_timings_; }
  static void collapse_code_pages(Sandbox& sb) { sb.vm_.collapse_code_pages(); }
  static std::optional<int> code_fill_step(Sandbox& sb) { return sb.vm_.code_fill_step(); }
};

Result<std::string> resolve_child_network(const store::SnapshotMeta& meta,
                                          const ChildNetwork& net) {
  auto bad = [&](const std::string& m) { return make_error(ErrorCode::kInvalidArgument, m); };
  std::string mode = net.mode.empty() ? meta.network : net.mode;
  if (mode != "none" && mode != "outbound") {
    return bad("network must be none or outbound, got '" + mode.substr(0, 40) + "'");
  }
  if (mode == "outbound" && !meta.has_nic()) {
    return bad("tag " + meta.tag +
               " was made without a network (snapshot --network none): its children can only "
               "be none; make the tag with --network outbound");
  }
  if (!net.expose.empty() && mode != "outbound") {
    return bad("exposed ports need network outbound (this child's network is none)");
  }
  if (net.netns && mode != "outbound") {
    return bad("per_child_netns needs network outbound (this child's network is none)");
  }
  if (!net.allow.empty() && !net.netns) {
    return bad(
        "an allow-list needs per_child_netns: a user-mode network (slirp) cannot filter "
        "destinations");
  }
  if (auto allow = vmm::parse_allow_list(net.allow); !allow) return tl::unexpected(allow.error());
  if (net.expose.size() > kMaxExposedPorts) {
    return bad("at most " + std::to_string(kMaxExposedPorts) + " exposed ports");
  }
  for (size_t i = 0; i < net.expose.size(); ++i) {
    int p = net.expose[i];
    if (p < 1 || p > 65535) return bad("exposed port " + std::to_string(p) + " is not 1..65535");
    for (size_t k = 0; k < i; ++k) {
      if (net.expose[k] == p) return bad("exposed port " + std::to_string(p) + " is repeated");
    }
  }
  return mode;
}

Result<std::string> tag_memory_path(const EngineConfig& cfg, const store::SnapshotMeta& meta) {
  store::SnapshotStore snaps(cfg.home);
  store::MemoryResolver resolver(snaps, snaps.assembled_dir());
  auto path = resolver.resolve(meta);
  if (!path) return tl::unexpected(path.error().wrap("tag " + meta.tag));
  return path;
}

// Puts vc's QEMU into a network namespace of its own (see ChildNetwork::netns); returns what
// sandbox.json records of it. The tap's descriptor goes to *tap, which must stay open until QEMU
// has started.
Result<Json> place_in_netns(const std::string& id, const std::string& dir, const ChildNetwork& net,
                            vmm::VmConfig* vc, UniqueFd* tap) {
  auto allow = vmm::parse_allow_list(net.allow);
  if (!allow) return tl::unexpected(allow.error());
  vmm::NetnsSpec spec;
  spec.name = vmm::netns_name(id);
  spec.tap_uid = vc->jail ? vc->jail->uid : ::geteuid();
  spec.tap_gid = vc->jail ? vc->jail->gid : ::getegid();
  spec.expose = net.expose;
  spec.allow = *allow;
  spec.nameserver = vmm::first_routable_nameserver(read_file("/etc/resolv.conf").value_or(""));
  spec.work_dir = dir;
  auto ns = vmm::create_child_netns(spec);
  if (!ns) return tl::unexpected(ns.error());
  auto fd = vmm::open_netns_tap(*ns);
  if (!fd) return tl::unexpected(fd.error());
  *tap = std::move(*fd);
  vc->nic_tap = vmm::kNetnsTap;
  vc->nic_tap_fd = tap->get();
  vc->netns_path = ns->path;
  Json allowed = Json::array();
  for (const auto& r : *allow) allowed.push_back(r.text());
  return Json{{"name", ns->name},
              {"address", ns->address},
              {"host_address", ns->host_address},
              {"allow", std::move(allowed)}};
}

Result<PrestartedVm> prestart_child(const EngineConfig& cfg, const store::SnapshotMeta& meta,
                                    const std::string& tag_dir, const vmm::Limits& limits,
                                    const ChildNetwork& net) {
  std::string id = new_sandbox_id();
  std::string dir = cfg.sandboxes_dir() + "/" + id;
  auto vc = base_vm_config(cfg, id, dir);
  if (!vc) return tl::unexpected(vc.error());
  auto lock = LockedDir::create(cfg.sandboxes_dir(), id);
  if (!lock) return tl::unexpected(lock.error().wrap("start child of " + meta.tag));
  lock->keep();  // removed by fail() below, or by whoever owns the VM later
  auto fail = [&](const Error& e) -> Result<PrestartedVm> {
    (void)remove_run_dir(dir);
    return tl::unexpected(e.wrap("start child of " + meta.tag));
  };
  vc->machine = meta.machine == "pc" ? vmm::MachineType::kPc : vmm::MachineType::kMicrovm;
  vc->bios = vmm::default_bios(vc->machine);
  vc->cpus = meta.cpus;
  vc->memory_mib = meta.memory_mib;
  vc->ram_bytes = meta.guest_ram_bytes();
  // No -kernel/-initrd/-append: the guest booted long ago, and QEMU would otherwise read both
  // files into its heap for fw_cfg (megabytes per child, and their start-up time).
  auto memory = tag_memory_path(cfg, meta);
  if (!memory) return fail(memory.error());
  vc->memory_file = *memory;
  vc->memory_share = false;  // MAP_PRIVATE: the child's writes never reach the tag
  vc->incoming_defer = true;
  // With a NIC the VM stays paused after the load until its link is set (finish_restore).
  vc->nic = meta.has_nic();
  vc->pit = meta.pit;
  vc->ioapic2 = meta.ioapic2;
  static const bool can_collapse = vmm::can_collapse_other_processes();
  vc->collapse_code_pages = cfg.collapse_code_pages && can_collapse;
  // The step where an earlier child of the tag stood after its restore (engine/code_window.h).
  std::string hint;
  if (cfg.code_window && can_collapse && !vc->collapse_code_pages &&
      vmm::can_window_code_pages(*vc)) {
    hint = code_window_path(cfg, tag_dir, meta);
    vc->code_window = read_code_window(hint).value_or(-1);
  }
  vc->start_paused = vc->nic;
  if (meta.has_disk) {
    std::string overlay = dir + "/overlay.qcow2";
    if (auto st = create_child_overlay(cfg, meta, tag_dir, overlay); !st) {
      return fail(st.error());
    }
    vc->disk = overlay;
  }
  auto jail = jail_vm(cfg, dir, limits, &*vc);
  if (!jail) return fail(jail.error());
  UniqueFd tap;
  if (net.netns) {
    auto ns = place_in_netns(id, dir, net, &*vc, &tap);
    if (!ns) return fail(ns.error());
    (*jail)["netns"] = std::move(*ns);
  }
  auto launched = vmm::VmProcess::launch_with_qmp(*vc, dir + "/qemu.log", std::chrono::seconds(30));
  if (!launched) return fail(launched.error());
  return PrestartedVm{id,
                      dir,
                      std::move(launched->first),
                      std::move(launched->second),
                      false,
                      vc->nic,
                      std::move(*lock),
                      std::move(*jail),
                      vmm::collapses_code_pages(*vc),
                      vmm::windows_code_pages(*vc) ? vc->code_window : -1,
                      std::move(hint)};
}

// The `network` of a resumed request: the user-mode network's addresses (the same in every
// child: each QEMU has its own), or none. A child in a namespace of its own has the same ones:
// its tap answers as slirp's gateway and resolver (vmm/netns.h).
Json resumed_network(bool online) {
  if (!online) return Json{{"mode", "none"}};
  return Json{{"mode", "outbound"},
              {"address", "10.0.2.15/24"},
              {"gateway", "10.0.2.2"},
              {"dns", "10.0.2.3"}};
}

// network: null, or the request's `network` (then the guest must confirm an outbound one).
Result<Json> set_identity(AgentClient& agent, const std::string& id, const std::string& epoch,
                          int attempts = 10, const Json& network = Json()) {
  Json req = {{"op", "resumed"},
              {"epoch", epoch},
              {"sandbox_id", id},
              {"hostname", id},
              {"time_ns", realtime_ns()}};
  if (!network.is_null()) req["network"] = network;
  // Retried on a short timeout: the reply to a request racing the port's close/open can be
  // dropped by the guest. Setting the same identity twice is harmless.
  // The first waits are short (a dropped reply should cost little); later ones double, up to
  // 4 s, for a guest that is only slow: on a host crowded with busy children a restored guest
  // can take more than a second to answer, and a reply to an earlier attempt does not count
  // (measured: 100 minimal children at once, 8-51 of them failed with every wait at 500 ms).
  static constexpr int kWaitMs[] = {200, 300, 500, 1000, 2000, 4000};
  constexpr int kLast = static_cast<int>(std::size(kWaitMs)) - 1;
  Result<AgentReply> r = make_error(ErrorCode::kAgentTimeout, "no attempt");
  for (int attempt = 0; attempt < attempts; ++attempt) {
    auto wait = std::chrono::milliseconds(kWaitMs[std::min(attempt, kLast)]);
    r = agent.call(req, random_bytes(64), wait);
    if (r || r.error().code() != ErrorCode::kAgentTimeout) break;
  }
  if (!r) return tl::unexpected(r.error().wrap("set identity"));
  auto reply = decode_resumed_reply(r->json);
  if (!reply) return tl::unexpected(reply.error().wrap("set identity"));
  if (!reply->reseeded) {
    return make_error(ErrorCode::kAgentError,
                      "guest could not reseed its RNG: " + reply->reseed_error);
  }
  if (!reply->clock_set) {
    return make_error(ErrorCode::kAgentError,
                      "guest could not set its clock: " + reply->clock_error);
  }
  const bool outbound = network.is_object() && json::string_or(network, "mode", "") == "outbound";
  if (outbound && reply->network_set != true) {
    return make_error(ErrorCode::kAgentError,
                      "guest could not configure its network: " + reply->network_error);
  }
  return reply->info;
}

// Starts a loaded VM that is paused after its load (one with a NIC: see prestart_child), its
// NIC's link set first, so a child without network never runs with it up.
Status run_with_link(vmm::QmpClient& qmp, bool link_up) {
  FORKD_TRY(vmm::set_nic_link(qmp, link_up));
  auto cont = qmp.execute("cont");
  if (!cont) return tl::unexpected(cont.error().wrap("cont"));
  return {};
}

Status warm_up_prestarted(PrestartedVm& pre, const std::string& tag_dir) {
  // With its link as the tag had it (up): taking it down and up again would leave a claimed
  // outbound child without a qdisc until the guest's linkwatch runs (up to a second). The
  // claim takes it down for a `none` child before the child runs.
  FORKD_TRY(load_device_state(pre.qmp, tag_dir + "/vmstate"));
  pre.loaded = true;
  {
    auto agent = AgentClient::connect(pre.dir + "/agent.sock", std::chrono::seconds(5));
    if (!agent) return tl::unexpected(agent.error());
    // A provisional identity (replaced at claim) and one exec translate the code paths a claim
    // and a first command take; the exec into huge pages, as any call's (vmm/code_pages.h).
    auto id = set_identity(**agent, "pool-" + pre.id, random_hex(16));
    if (!id) return tl::unexpected(id.error());
    pre.vm.ready_code_for_call(pre.code_window);
    auto ex =
        (*agent)->call(Json{{"op", "exec"}, {"argv", {"true"}}}, {}, std::chrono::seconds(30));
    if (!ex) return tl::unexpected(ex.error().wrap("warm-up exec"));
  }
  // Let the guest see this connection close before it is paused: a close still pending at
  // the claim would race the claimer's new connection and cost it a retried request.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto stopped = pre.qmp.execute("stop");
  if (!stopped) return tl::unexpected(stopped.error().wrap("stop"));
  return {};
}

Result<std::unique_ptr<Sandbox>> finish_restore(PrestartedVm pre, const store::SnapshotMeta& meta,
                                                const std::string& tag_dir,
                                                std::optional<vmm::Limits> limits,
                                                const ChildNetwork& net) {
  auto t0 = Clock::now();
  // From here the Sandbox owns the VM: any early return destroys it (kill + remove run dir).
  auto sb = Restorer::make(pre.id, pre.dir, std::move(pre.vm));
  auto fail = [&](const Error& e) -> Result<std::unique_ptr<Sandbox>> {
    std::string tail = vmm::log_tail(pre.dir + "/qemu.log", 600);
    return tl::unexpected(e.wrap("restore " + pre.id + " from " + meta.tag +
                                 (tail.empty() ? "" : " (qemu: " + tail + ")")));
  };
  if (limits) {
    // A pool member runs with the limits it was started with; the claim may ask for others.
    if (auto st = apply_limits(pre.dir, *limits); !st) return fail(st.error());
    pre.jail["limits"] = limits_json(*limits);
  }
  auto mode = resolve_child_network(meta, net);
  if (!mode) return fail(mode.error());
  const bool online = *mode == "outbound";
  // What the guest must be told of its network. An outbound child of a tag that `forkd snapshot`
  // booted needs nothing: its address, gateway (and the gateway's MAC: slirp's, the same in
  // every QEMU) and resolver are the template's, which the agent set at boot, and the parent's
  // TCP connections do not exist in this QEMU's slirp. Telling it anyway costs ~90 ms under TCG
  // (kernel paths translated afresh in each child). A `none` child is told to drop its route
  // and link; a child of a branched tag is told its address again (its source may have been a
  // `none` child, or changed it).
  // The same holds for a child in a namespace of its own (vmm/netns.h).
  const Json* netns = pre.jail.contains("netns") ? &pre.jail["netns"] : nullptr;
  const bool refresh = pre.nic && (!online || meta.branched_from.has_value());
  if (pre.loaded && pre.nic) {
    if (auto st = run_with_link(pre.qmp, online); !st) return fail(st.error());
  } else if (pre.loaded) {
    auto cont = pre.qmp.execute("cont");
    if (!cont) return fail(cont.error().wrap("cont"));
  } else if (auto st = load_device_state(pre.qmp, tag_dir + "/vmstate", true, !pre.nic); !st) {
    return fail(st.error());
  } else if (pre.nic) {
    if (auto st2 = run_with_link(pre.qmp, online); !st2) return fail(st2.error());
  }
  Restorer::timings(*sb).incoming_ms = ms_since(t0);

  std::string epoch = random_hex(16);
  Result<std::unique_ptr<AgentClient>> agent = make_error(ErrorCode::kAgentError, "no attempt");
  Result<Json> identity = make_error(ErrorCode::kAgentError, "no attempt");
  // The guest saw a host connection open at the snapshot point (the source's). Ours can be
  // dropped as the guest agent notices it is a new one, or go unnoticed by it: then close it
  // and connect again, which the guest sees as a close and an open of its port.
  for (int attempt = 0; attempt < 4; ++attempt) {
    agent = AgentClient::connect(pre.dir + "/agent.sock", std::chrono::seconds(5));
    if (!agent) return fail(agent.error());
    identity = set_identity(**agent, pre.id, epoch, 6, refresh ? resumed_network(online) : Json());
    if (identity) break;
    auto code = identity.error().code();
    bool dropped = identity.error().message().find("connection closed") != std::string::npos;
    if (!dropped && code != ErrorCode::kAgentTimeout) break;
    agent->reset();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!identity) return fail(identity.error());
  Json ports = Json::array();
  for (int guest_port : net.expose) {
    if (netns) {  // forwarded by the namespace's rules, from its address
      ports.push_back({{"guest", guest_port},
                       {"host", guest_port},
                       {"address", json::string_or(*netns, "address", "")}});
      continue;
    }
    auto fwd = vmm::add_port_forward(pre.qmp, net.listen_address, guest_port);
    if (!fwd) return fail(fwd.error());
    ports.push_back({{"guest", fwd->guest}, {"host", fwd->host}, {"address", fwd->address}});
  }
  // The restore and the identity step translated megabytes of guest code.
  if (pre.collapse_code_pages) Restorer::collapse_code_pages(*sb);
  Restorer::timings(*sb).ready_ms = ms_since(t0);
  // Where TCG stands now, for the tag's next children (a warm pool member ran an exec more).
  if (!pre.code_window_hint.empty() && !pre.loaded) {
    if (auto step = Restorer::code_fill_step(*sb)) note_code_window(pre.code_window_hint, *step);
  }
  Restorer::set_agent(*sb, std::move(*agent), *identity);
  Json& rec = Restorer::record(*sb);
  rec = {{"image", meta.image},
         {"tag", meta.tag},
         {"epoch", epoch},
         {"memory_mib", meta.memory_mib},
         {"ram_bytes", meta.guest_ram_bytes()},
         {"cpus", meta.cpus},
         {"machine", meta.machine},
         {"pit", meta.pit},
         {"ioapic2", meta.ioapic2},
         {"created_at", static_cast<int64_t>(std::time(nullptr))}};
  rec.update(pre.jail);
  rec["nic"] = pre.nic;
  rec["collapse_code_pages"] = pre.collapse_code_pages;
  rec["code_window"] = pre.code_window;
  rec["network"] = *mode;
  rec["ports"] = std::move(ports);
  if (auto st = Restorer::write_record(*sb); !st) return fail(st.error());
  pre.lock.unlock();  // recorded: from here `ps`, `rm` and gc see it as a sandbox
  return sb;
}

}  // namespace forkd::engine

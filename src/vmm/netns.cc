#include "vmm/netns.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <ctime>
#include <functional>
#include <sstream>
#include <thread>

#include "base/files.h"
#include "base/random.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"

namespace forkd::vmm {

namespace {

constexpr auto kCommandTimeout = std::chrono::seconds(20);
constexpr uint32_t kPoolBase = (10u << 24) | (200u << 16);

Result<int> parse_int(std::string_view s, int lo, int hi, const std::string& what) {
  int v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi) {
    return make_error(ErrorCode::kInvalidArgument, what + " '" + std::string(s.substr(0, 40)) +
                                                       "' is not " + std::to_string(lo) + ".." +
                                                       std::to_string(hi));
  }
  return v;
}

// Dotted-quad only (inet_pton: four decimal octets, no leading zeros, nothing around them).
Result<uint32_t> parse_ipv4(std::string_view s) {
  in_addr a{};
  if (s.size() > 15 || ::inet_pton(AF_INET, std::string(s).c_str(), &a) != 1) {
    return make_error(ErrorCode::kInvalidArgument,
                      "'" + std::string(s.substr(0, 40)) + "' is not an IPv4 address");
  }
  return ntohl(a.s_addr);
}

Result<RunResult> run_ok(const std::vector<std::string>& argv, const std::string& what) {
  auto r = run_capture(argv, kCommandTimeout);
  if (!r) return tl::unexpected(r.error().wrap(what));
  if (r->exit_code != 0) {
    std::string out = r->output.substr(0, 400);
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return make_error(ErrorCode::kInternal, what + ": " + argv[0] + " exited " +
                                                std::to_string(r->exit_code) + ": " + out);
  }
  return r;
}

// Runs fn on a thread that has joined the namespace at path (a network namespace is per thread;
// the thread ends with fn, so no other work ever runs in it). Processes fn starts are inside.
Status in_netns(const std::string& path, const std::function<Status()>& fn) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return errno_error(errno, "open " + path);
  Status result;
  std::thread t([&] {
    if (::setns(fd.get(), CLONE_NEWNET) != 0) {
      result = errno_error(errno, "join " + path);
      return;
    }
    try {
      result = fn();
    } catch (const std::exception& e) {
      result = make_error(ErrorCode::kInternal, std::string("in namespace: ") + e.what());
    }
  });
  t.join();
  return result;
}

}  // namespace

std::string ipv4_text(uint32_t a) {
  return std::to_string(a >> 24) + "." + std::to_string(a >> 16 & 255) + "." +
         std::to_string(a >> 8 & 255) + "." + std::to_string(a & 255);
}

std::string AllowRule::text() const {
  std::string s = ipv4_text(address);
  if (prefix != 32) s += "/" + std::to_string(prefix);
  if (port != 0) s += ":" + std::to_string(port);
  return s;
}

Result<AllowRule> parse_allow_rule(std::string_view s) {
  auto bad = [&](const std::string& why) {
    return make_error(ErrorCode::kInvalidArgument, "allow-list entry '" +
                                                       std::string(s.substr(0, 60)) + "': " + why +
                                                       " (want A.B.C.D[/N][:PORT])");
  };
  if (s.empty() || s.size() > 40) return bad("empty or too long");
  AllowRule r;
  std::string_view rest = s;
  if (size_t colon = rest.rfind(':'); colon != std::string_view::npos) {
    auto port = parse_int(rest.substr(colon + 1), 1, 65535, "port");
    if (!port) return bad(port.error().message());
    r.port = *port;
    rest = rest.substr(0, colon);
  }
  if (size_t slash = rest.find('/'); slash != std::string_view::npos) {
    auto prefix = parse_int(rest.substr(slash + 1), 0, 32, "prefix");
    if (!prefix) return bad(prefix.error().message());
    r.prefix = *prefix;
    rest = rest.substr(0, slash);
  }
  auto addr = parse_ipv4(rest);
  if (!addr) return bad(addr.error().message() + "; host names are not resolved");
  uint32_t mask = r.prefix == 0 ? 0 : ~0u << (32 - r.prefix);
  r.address = *addr & mask;
  return r;
}

Result<std::vector<AllowRule>> parse_allow_list(const std::vector<std::string>& entries) {
  if (entries.size() > kMaxAllowRules) {
    return make_error(ErrorCode::kInvalidArgument,
                      "at most " + std::to_string(kMaxAllowRules) + " allow-list entries");
  }
  std::vector<AllowRule> out;
  for (const auto& e : entries) {
    auto r = parse_allow_rule(e);
    if (!r) return tl::unexpected(r.error());
    out.push_back(*r);
  }
  return out;
}

std::string netns_name(const std::string& sandbox_id) { return "forkd-" + sandbox_id; }

ChildNetns netns_addresses(uint32_t slot) {
  ChildNetns ns;
  ns.slot = slot;
  ns.host_if = "fkh" + std::to_string(slot);
  uint32_t base = kPoolBase + 4 * (slot % kNetnsSlots);
  ns.host_address = ipv4_text(base + 1);
  ns.address = ipv4_text(base + 2);
  return ns;
}

std::string netns_ruleset(const NetnsSpec& spec, const ChildNetns& ns) {
  const std::string veth = std::string("\"") + kNetnsVeth + "\"";
  const std::string tap = std::string("\"") + kNetnsTap + "\"";
  std::ostringstream o;
  o << "table ip forkd {\n"
    << "  chain prerouting {\n"
    << "    type nat hook prerouting priority dstnat; policy accept;\n";
  for (int port : spec.expose) {
    o << "    iifname " << veth << " ip daddr " << ns.address << " tcp dport " << port
      << " dnat to 10.0.2.15:" << port << "\n";
  }
  if (!spec.nameserver.empty()) {
    for (const char* proto : {"udp", "tcp"}) {
      o << "    iifname " << tap << " ip daddr { 10.0.2.2, 10.0.2.3 } " << proto
        << " dport 53 dnat to " << spec.nameserver << ":53\n";
    }
  }
  o << "  }\n"
    << "  chain postrouting {\n"
    << "    type nat hook postrouting priority srcnat; policy accept;\n"
    << "    oifname " << veth << " masquerade\n"
    << "  }\n"
    << "  chain forward {\n"
    << "    type filter hook forward priority filter; policy drop;\n"
    << "    ct state established,related accept\n"
    << "    iifname " << veth << " oifname " << tap << " ct status dnat accept\n";
  const std::string out = "    iifname " + tap + " oifname " + veth + " ";
  if (spec.allow.empty()) {
    o << out << "accept\n";
  } else {
    for (const auto& r : spec.allow) {
      std::string dst = "ip daddr " + ipv4_text(r.address) +
                        (r.prefix == 32 ? "" : "/" + std::to_string(r.prefix)) + " ";
      if (r.port == 0) {
        o << out << dst << "accept\n";
      } else {
        for (const char* proto : {"tcp", "udp"}) {
          o << out << dst << proto << " dport " << r.port << " accept\n";
        }
      }
    }
    o << out << "reject with icmp type admin-prohibited\n";
  }
  // The namespace itself offers the guest nothing (its ARP for the gateway is not IP).
  o << "  }\n"
    << "  chain input {\n"
    << "    type filter hook input priority filter; policy drop;\n"
    << "    iifname \"lo\" accept\n"
    << "    ct state established,related accept\n"
    << "  }\n"
    << "}\n"
    // The guest may have slirp's resolver (10.0.2.3, MAC 52:55:0a:00:02:03) in its neighbour
    // cache from before the snapshot: frames to that MAC are taken as the tap's own, so the
    // child needs no refresh.
    << "table netdev forkd_l2 {\n"
    << "  chain ingress {\n"
    << "    type filter hook ingress device " << tap << " priority 0; policy accept;\n"
    << "    ether daddr " << kSlirpResolverMac << " ether daddr set " << kSlirpGatewayMac << "\n"
    << "  }\n"
    << "}\n";
  return o.str();
}

std::string first_routable_nameserver(std::string_view text) {
  std::istringstream in{std::string(text)};
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string key, value;
    if (!(words >> key >> value) || key != "nameserver") continue;
    auto addr = parse_ipv4(value);
    if (addr && (*addr >> 24) != 127 && *addr != 0) return ipv4_text(*addr);
  }
  return {};
}

Result<ChildNetns> create_child_netns(const NetnsSpec& spec) {
  const std::string what = "network namespace " + spec.name;
  if (auto r = run_ok({"ip", "netns", "add", spec.name}, what); !r)
    return tl::unexpected(r.error());
  ChildNetns ns;
  auto fail = [&](const Error& e) -> Result<ChildNetns> {
    (void)remove_child_netns(spec.name);
    return tl::unexpected(e);
  };
  // A free slot: the kernel refuses a host-side name that exists, whoever made it.
  std::string rnd = random_bytes(4);
  uint32_t start = 0;
  for (unsigned char c : rnd) start = start << 8 | c;
  bool placed = false;
  for (uint32_t i = 0; i < 64 && !placed; ++i) {
    ns = netns_addresses((start + i * 7919) % kNetnsSlots);
    auto r = run_capture({"ip", "link", "add", ns.host_if, "type", "veth", "peer", "name",
                          kNetnsVeth, "netns", spec.name},
                         kCommandTimeout);
    if (!r) return fail(r.error().wrap(what));
    if (r->exit_code == 0) {
      placed = true;
    } else if (r->output.find("File exists") == std::string::npos) {
      return fail(Error(ErrorCode::kInternal, what + ": veth: " + r->output.substr(0, 300)));
    }
  }
  if (!placed) return fail(Error(ErrorCode::kUnavailable, what + ": no free address slot"));
  ns.name = spec.name;
  ns.path = "/run/netns/" + spec.name;
  std::string host = "addr add " + ns.host_address + "/30 dev " + ns.host_if + "\n" + "link set " +
                     ns.host_if + " up\n";
  std::string inside = "addr add " + ns.address + "/30 dev " + kNetnsVeth + "\n" + "link set " +
                       kNetnsVeth + " up\n" + "link set lo up\n" + "tuntap add dev " + kNetnsTap +
                       " mode tap user " + std::to_string(spec.tap_uid) + " group " +
                       std::to_string(spec.tap_gid) + "\n" + "link set " + kNetnsTap + " address " +
                       kSlirpGatewayMac + "\n" + "addr add 10.0.2.2/24 dev " + kNetnsTap + "\n" +
                       "addr add 10.0.2.3/24 dev " + kNetnsTap + "\n" + "link set " + kNetnsTap +
                       " up\n" + "route add default via " + ns.host_address + "\n";
  const std::string host_file = spec.work_dir + "/netns-host.ip";
  const std::string inside_file = spec.work_dir + "/netns-inside.ip";
  const std::string rules_file = spec.work_dir + "/netns.nft";
  if (auto st = write_file_atomic(host_file, host); !st) return fail(st.error());
  if (auto st = write_file_atomic(inside_file, inside); !st) return fail(st.error());
  if (auto st = write_file_atomic(rules_file, netns_ruleset(spec, ns)); !st) {
    return fail(st.error());
  }
  if (auto r = run_ok({"ip", "-b", host_file}, what + ": host side"); !r) return fail(r.error());
  if (auto r = run_ok({"ip", "-n", spec.name, "-b", inside_file}, what + ": inside"); !r) {
    return fail(r.error());
  }
  auto st = in_netns(ns.path, [&]() -> Status {
    // Forwarding on; no IPv6 on the tap (its router and neighbour chatter would only wake the
    // guest: the guest network is IPv4).
    for (const std::string& knob :
         {std::string("/proc/sys/net/ipv4/ip_forward"),
          std::string("/proc/sys/net/ipv6/conf/") + kNetnsTap + "/disable_ipv6"}) {
      UniqueFd f(::open(knob.c_str(), O_WRONLY | O_CLOEXEC));
      if (!f && errno == ENOENT && knob.find("ipv6") != std::string::npos) continue;  // no IPv6
      if (!f) return errno_error(errno, "open " + knob);
      FORKD_TRY(write_all(f.get(), "1\n"));
    }
    if (auto r = run_ok({"nft", "-f", rules_file}, "rules"); !r) return tl::unexpected(r.error());
    return {};
  });
  if (!st) return fail(st.error().wrap(what));
  return ns;
}

Result<UniqueFd> open_netns_tap(const ChildNetns& ns) {
  UniqueFd tap;
  auto st = in_netns(ns.path, [&]() -> Status {
    UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
    if (!fd) return errno_error(errno, "open /dev/net/tun");
    ifreq ifr{};
    // No IFF_VNET_HDR: a NIC with the virtio-net header would carry it in its device state, and
    // a branch of this child could then not be loaded by a QEMU on slirp (nor its children).
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", kNetnsTap);
    if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) return errno_error(errno, "attach tap");
    tap = std::move(fd);
    return {};
  });
  if (!st) return tl::unexpected(st.error().wrap("network namespace " + ns.name));
  return tap;
}

Status remove_child_netns(const std::string& name) {
  if (::access(("/run/netns/" + name).c_str(), F_OK) != 0) return {};
  auto r = run_ok({"ip", "netns", "delete", name}, "remove network namespace " + name);
  if (!r) return tl::unexpected(r.error());
  return {};
}

int sweep_stale_netns(std::chrono::seconds min_age) {
  const std::string dir = "/run/netns";
  struct Candidate {
    std::string name;
    dev_t dev;
    ino_t ino;
  };
  std::vector<Candidate> candidates;
  const time_t now = ::time(nullptr);
  for (const auto& name : list_dir_names(dir)) {
    if (name.rfind("forkd-", 0) != 0) continue;
    struct stat st {};
    if (::stat((dir + "/" + name).c_str(), &st) != 0) continue;
    if (now - st.st_ctime < min_age.count()) continue;
    candidates.push_back({name, st.st_dev, st.st_ino});
  }
  if (candidates.empty()) return 0;
  // Drop every namespace some process is in.
  for (const auto& pid : list_dir_names("/proc")) {
    if (pid.empty() || pid[0] < '0' || pid[0] > '9') continue;
    struct stat st {};
    if (::stat(("/proc/" + pid + "/ns/net").c_str(), &st) != 0) continue;
    std::erase_if(candidates,
                  [&](const Candidate& c) { return c.dev == st.st_dev && c.ino == st.st_ino; });
    if (candidates.empty()) return 0;
  }
  int removed = 0;
  for (const auto& c : candidates) {
    if (remove_child_netns(c.name)) ++removed;
  }
  return removed;
}

NetnsSupport netns_support() {
  NetnsSupport s;
  std::string fwd = read_file("/proc/sys/net/ipv4/ip_forward").value_or("0");
  s.host_forwarding = !fwd.empty() && fwd[0] == '1';
  if (::geteuid() != 0) {
    s.reason = "needs root (network namespaces, veth and tap devices)";
  } else if (find_in_path("ip").empty()) {
    s.reason = "needs `ip` (iproute2)";
  } else if (find_in_path("nft").empty()) {
    s.reason = "needs `nft` (nftables)";
  } else if (::access("/dev/net/tun", R_OK | W_OK) != 0) {
    s.reason = "needs /dev/net/tun";
  } else {
    s.available = true;
  }
  return s;
}

}  // namespace forkd::vmm

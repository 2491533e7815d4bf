#include "net.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "base/unique_fd.h"
#include "log.h"

namespace forkd::agent {

namespace {

StepResult fail(int err, const std::string& what) {
  return StepResult{false, what + ": " + std::strerror(err)};
}

sockaddr_in inet(uint32_t addr) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = addr;
  return sin;
}

uint32_t prefix_mask(int prefix) { return htonl(prefix <= 0 ? 0u : ~uint32_t{0} << (32 - prefix)); }

void set_name(char* dst) { std::strncpy(dst, kNicName, IFNAMSIZ - 1); }

// A dotted IPv4 address, or nothing.
bool parse_ipv4(const std::string& s, uint32_t* out) {
  in_addr a{};
  if (s.size() > 15 || ::inet_pton(AF_INET, s.c_str(), &a) != 1) return false;
  *out = a.s_addr;
  return true;
}

StepResult set_flags(int s, bool up) {
  ifreq ifr{};
  set_name(ifr.ifr_name);
  if (::ioctl(s, SIOCGIFFLAGS, &ifr) != 0) return fail(errno, "SIOCGIFFLAGS");
  short flags = ifr.ifr_flags;
  ifr.ifr_flags = static_cast<short>(up ? (flags | IFF_UP) : (flags & ~IFF_UP));
  if (::ioctl(s, SIOCSIFFLAGS, &ifr) != 0) return fail(errno, up ? "link up" : "link down");
  return StepResult{true, {}};
}

// Removes every default route through the NIC (there is at most one we made; ESRCH ends it).
void delete_default_routes(int s) {
  for (int i = 0; i < 8; ++i) {
    rtentry rt{};
    sockaddr_in any = inet(0);
    std::memcpy(&rt.rt_dst, &any, sizeof any);
    std::memcpy(&rt.rt_genmask, &any, sizeof any);
    rt.rt_flags = RTF_UP;
    char dev[IFNAMSIZ] = {};
    set_name(dev);
    rt.rt_dev = dev;
    if (::ioctl(s, SIOCDELRT, &rt) != 0) return;
  }
}

StepResult add_default_route(int s, uint32_t gateway) {
  rtentry rt{};
  sockaddr_in any = inet(0);
  sockaddr_in gw = inet(gateway);
  std::memcpy(&rt.rt_dst, &any, sizeof any);
  std::memcpy(&rt.rt_genmask, &any, sizeof any);
  std::memcpy(&rt.rt_gateway, &gw, sizeof gw);
  rt.rt_flags = RTF_UP | RTF_GATEWAY;
  char dev[IFNAMSIZ] = {};
  set_name(dev);
  rt.rt_dev = dev;
  if (::ioctl(s, SIOCADDRT, &rt) != 0 && errno != EEXIST) return fail(errno, "default route");
  return StepResult{true, {}};
}

// The gateway's neighbour entry may name the parent's peer: drop it, the next packet asks again.
void forget_neighbour(int s, uint32_t addr) {
  arpreq req{};
  sockaddr_in pa = inet(addr);
  std::memcpy(&req.arp_pa, &pa, sizeof pa);
  set_name(req.arp_dev);
  (void)::ioctl(s, SIOCDARP, &req);  // ENXIO: there was none
}

StepResult write_resolver(uint32_t dns) {
  char text[INET_ADDRSTRLEN] = {};
  in_addr a{};
  a.s_addr = dns;
  ::inet_ntop(AF_INET, &a, text, sizeof text);
  std::string content = std::string("nameserver ") + text + "\n";
  {
    // Unchanged (the usual case after a restore): nothing to write.
    forkd::UniqueFd cur(::open("/etc/resolv.conf", O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    char buf[64] = {};
    ssize_t n = cur ? ::read(cur.get(), buf, sizeof buf - 1) : -1;
    if (n == static_cast<ssize_t>(content.size()) && content == buf) return StepResult{true, {}};
  }
  static constexpr char kTmp[] = "/etc/.resolv.conf.forkd";
  ::unlink(kTmp);
  forkd::UniqueFd fd(::open(kTmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (!fd) return fail(errno, "resolver");
  if (::write(fd.get(), content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
    ::unlink(kTmp);
    return fail(errno, "resolver");
  }
  fd.reset();
  if (::rename(kTmp, "/etc/resolv.conf") != 0) {
    int err = errno;
    ::unlink(kTmp);
    return fail(err, "resolver");
  }
  return StepResult{true, {}};
}

// The address, netmask and flags of the NIC, as the kernel has them.
struct NicState {
  uint32_t address = 0;
  uint32_t mask = 0;
  short flags = 0;
};
// The resolver step of an otherwise configured NIC: best effort (a read-only /etc is reported,
// not a failure).
StepResult finish_resolver(uint32_t dns) {
  if (auto r = write_resolver(dns); !r.ok) {
    log_line("network: " + r.error + " (address and route are set)");
    return StepResult{true, r.error};
  }
  return StepResult{true, {}};
}

NicState read_nic(int s) {
  NicState st;
  ifreq ifr{};
  set_name(ifr.ifr_name);
  if (::ioctl(s, SIOCGIFADDR, &ifr) == 0) {
    st.address = reinterpret_cast<sockaddr_in*>(&ifr.ifr_addr)->sin_addr.s_addr;
  }
  if (::ioctl(s, SIOCGIFNETMASK, &ifr) == 0) {
    st.mask = reinterpret_cast<sockaddr_in*>(&ifr.ifr_netmask)->sin_addr.s_addr;
  }
  if (::ioctl(s, SIOCGIFFLAGS, &ifr) == 0) st.flags = ifr.ifr_flags;
  return st;
}

// True when the main table has exactly one default route, through gateway on the NIC
// (/proc/net/route: "Iface Destination Gateway Flags ..." in hex, network byte order).
bool has_only_default_via(uint32_t gateway) {
  forkd::UniqueFd fd(::open("/proc/net/route", O_RDONLY | O_CLOEXEC));
  if (!fd) return false;
  char buf[4096];
  ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return false;
  buf[n] = '\0';
  int defaults = 0;
  bool ours = false;
  for (char* line = std::strchr(buf, '\n'); line != nullptr && line[1] != '\0';
       line = std::strchr(line + 1, '\n')) {
    char iface[IFNAMSIZ + 1] = {};
    unsigned dest = 0, gw = 0;
    if (std::sscanf(line + 1, "%16s %x %x", iface, &dest, &gw) != 3 || dest != 0) continue;
    ++defaults;
    ours = std::strcmp(iface, kNicName) == 0 && gw == gateway;
  }
  return defaults == 1 && ours;
}

}  // namespace

NetSpec default_outbound() {
  NetSpec n;
  n.outbound = true;
  parse_ipv4("10.0.2.15", &n.address);
  n.prefix = 24;
  parse_ipv4("10.0.2.2", &n.gateway);
  parse_ipv4("10.0.2.3", &n.dns);
  return n;
}

AgentResult<NetSpec> parse_net_spec(const Json& j) {
  if (!j.is_object()) return bad_request("\"network\" must be an object");
  auto mode = get_string(j, "mode");
  if (!mode) return tl::unexpected(mode.error());
  NetSpec n;
  if (*mode == "none") return n;
  if (*mode != "outbound") return bad_request("\"network.mode\" must be none or outbound");
  n.outbound = true;
  auto address = get_string(j, "address");
  if (!address) return tl::unexpected(address.error());
  auto slash = address->find('/');
  if (slash == std::string::npos || slash + 1 >= address->size() || address->size() > 18 ||
      !parse_ipv4(address->substr(0, slash), &n.address)) {
    return bad_request("\"network.address\" must be an IPv4 address with a prefix, a.b.c.d/N");
  }
  int prefix = 0;
  for (char c : address->substr(slash + 1)) {
    if (c < '0' || c > '9') return bad_request("\"network.address\" has a bad prefix");
    prefix = prefix * 10 + (c - '0');
    if (prefix > 32) break;
  }
  if (prefix < 1 || prefix > 30) return bad_request("\"network.address\" prefix must be 1..30");
  n.prefix = prefix;
  auto gateway = get_string(j, "gateway");
  if (!gateway) return tl::unexpected(gateway.error());
  if (!parse_ipv4(*gateway, &n.gateway)) {
    return bad_request("\"network.gateway\" must be an IPv4 address");
  }
  const uint32_t mask = prefix_mask(prefix);
  if ((n.gateway & mask) != (n.address & mask) || n.gateway == n.address) {
    return bad_request("\"network.gateway\" must be another address inside network.address");
  }
  if (j.contains("dns") && !j["dns"].is_null()) {
    auto dns = get_string(j, "dns");
    if (!dns) return tl::unexpected(dns.error());
    if (!parse_ipv4(*dns, &n.dns)) return bad_request("\"network.dns\" must be an IPv4 address");
  }
  return n;
}

bool has_nic() {
  struct stat st {};
  return ::stat((std::string("/sys/class/net/") + kNicName).c_str(), &st) == 0;
}

StepResult apply_net_spec(const NetSpec& spec, bool* changed) {
  bool ignored = false;
  if (changed == nullptr) changed = &ignored;
  *changed = true;
  forkd::UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s) return fail(errno, "socket");
  if (!spec.outbound) {
    delete_default_routes(s.get());
    return set_flags(s.get(), false);
  }
  // A restored child usually has the network its tag had: then only the neighbour entry and the
  // resolver are refreshed. Rewriting an unchanged address flushes its routes and runs kernel
  // paths that, under TCG, cost a fresh child ~150 ms of translation.
  const NicState now = read_nic(s.get());
  const bool same = now.address == spec.address && now.mask == prefix_mask(spec.prefix) &&
                    (now.flags & IFF_UP) != 0 && has_only_default_via(spec.gateway);
  if (same) {
    *changed = false;
    forget_neighbour(s.get(), spec.gateway);
    return spec.dns != 0 ? finish_resolver(spec.dns) : StepResult{true, {}};
  }
  ifreq ifr{};
  set_name(ifr.ifr_name);
  sockaddr_in addr = inet(spec.address);
  std::memcpy(&ifr.ifr_addr, &addr, sizeof addr);
  if (::ioctl(s.get(), SIOCSIFADDR, &ifr) != 0) return fail(errno, "address");
  sockaddr_in mask = inet(prefix_mask(spec.prefix));
  std::memcpy(&ifr.ifr_netmask, &mask, sizeof mask);
  if (::ioctl(s.get(), SIOCSIFNETMASK, &ifr) != 0) return fail(errno, "netmask");
  if (auto up = set_flags(s.get(), true); !up.ok) return up;
  forget_neighbour(s.get(), spec.gateway);
  delete_default_routes(s.get());
  if (auto r = add_default_route(s.get(), spec.gateway); !r.ok) return r;
  return spec.dns != 0 ? finish_resolver(spec.dns) : StepResult{true, {}};
}

}  // namespace forkd::agent

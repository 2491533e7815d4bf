#pragma once
// Per-child network namespaces (forkd's `per_child_netns`; root only). Such a child's QEMU runs
// inside a namespace of its own, where its NIC is a tap device instead of slirp:
//
//   guest 10.0.2.15 --tap0 (10.0.2.2+.3, slirp's MACs)-- [netns forkd-<id>] --veth0 (P+2)--
//       --fkh<slot> (P+1) on the host
//
// P is the child's /30 of kNetnsPool. Inside the namespace, nftables masquerades what the guest
// sends out of veth0 (so every child keeps the tag's address and the host sees P+2), forwards
// exposed ports from P+2 to the guest, points port 53 of 10.0.2.2/.3 at the host's resolver, and,
// with an allow-list, drops every other destination. Nothing of the host's own rules changes:
// to go past the host, the host must forward (net.ipv4.ip_forward=1) and masquerade kNetnsPool
// (docs/NETWORK.md says how); without that a child reaches the host (P+1) and nothing further.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace forkd::vmm {

inline constexpr const char* kNetnsPool = "10.200.0.0/16";
inline constexpr uint32_t kNetnsSlots = 16384;  // /30s in the pool
inline constexpr const char* kNetnsTap = "tap0";
inline constexpr const char* kNetnsVeth = "veth0";
inline constexpr size_t kMaxAllowRules = 64;
// What slirp's gateway (10.0.2.2) and resolver (10.0.2.3) answer ARP with: slirp builds them
// from the address. The tap takes both addresses and the gateway's MAC, so a guest restored from
// a slirp tag finds its gateway and resolver where its neighbour cache says.
inline constexpr const char* kSlirpGatewayMac = "52:55:0a:00:02:02";
inline constexpr const char* kSlirpResolverMac = "52:55:0a:00:02:03";

// One allow-list entry: "A.B.C.D", "A.B.C.D/N", either with ":PORT" (TCP and UDP).
struct AllowRule {
  uint32_t address = 0;  // host order, masked to prefix
  int prefix = 32;
  int port = 0;  // 0: every port
  std::string text() const;
};
Result<AllowRule> parse_allow_rule(std::string_view s);
Result<std::vector<AllowRule>> parse_allow_list(const std::vector<std::string>& entries);

// "1.2.3.4" of a host-order address.
std::string ipv4_text(uint32_t address);

struct NetnsSpec {
  std::string name;   // the namespace: netns_name(sandbox id)
  uid_t tap_uid = 0;  // the tap's owner (the jailed QEMU's uid)
  gid_t tap_gid = 0;
  std::vector<int> expose;       // guest TCP ports reachable at the child's address
  std::vector<AllowRule> allow;  // empty: every destination
  std::string nameserver;        // the host's resolver; empty: no DNS
  std::string work_dir;          // where the ip/nft scripts are written (the run dir)
};

struct ChildNetns {
  std::string name;
  std::string path;  // /run/netns/<name>, which QEMU joins
  uint32_t slot = 0;
  std::string host_if;       // fkh<slot>
  std::string host_address;  // P+1, the host's end: what the guest reaches the host at
  std::string address;       // P+2, the child's end: where exposed ports answer
};

std::string netns_name(const std::string& sandbox_id);

// The two ends of slot's /30.
ChildNetns netns_addresses(uint32_t slot);

// The nftables ruleset of a child's namespace. Pure, for tests.
std::string netns_ruleset(const NetnsSpec& spec, const ChildNetns& ns);

// The first IPv4 nameserver of a resolv.conf that a namespace can reach (not loopback); empty
// when there is none.
std::string first_routable_nameserver(std::string_view resolv_conf);

// Creates the namespace, its veth pair (on a free slot: the kernel refuses a taken name, so
// concurrent creators never share one), tap and rules. On failure nothing is left behind.
Result<ChildNetns> create_child_netns(const NetnsSpec& spec);

// Opens the namespace's tap (for QEMU: tap fd=N), without the virtio-net header (see
// VmConfig::nic_tap).
Result<UniqueFd> open_netns_tap(const ChildNetns& ns);

// Deletes the namespace (its devices go with it once no process is inside). Missing is fine.
Status remove_child_netns(const std::string& name);

// Deletes child namespaces (forkd-*) that no process is in and that are older than min_age (a
// launcher that died between making one and starting QEMU, or a QEMU reaped with its run dir by
// gc). Namespaces of every forkd home on this host qualify: one in use has its QEMU inside, and
// one being set up is younger than min_age. Returns how many went.
int sweep_stale_netns(std::chrono::seconds min_age);

// Whether per_child_netns can work here: root, and `ip` and `nft` installed. reason says why
// not. host_forwarding: net.ipv4.ip_forward is on (children can go past the host).
struct NetnsSupport {
  bool available = false;
  std::string reason;
  bool host_forwarding = false;
};
NetnsSupport netns_support();

}  // namespace forkd::vmm

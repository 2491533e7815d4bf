#pragma once
// The guest's NIC, as the host asks for it: `outbound` (a static address, a default route, a
// resolver) or `none` (no route, link down). Applied at boot when the VM has a NIC (the
// user-mode network's defaults) and again by `resumed`, which is what makes the network work at
// once in every restored child: the address and route are (re)set, the neighbour entry of the
// gateway is dropped, and /etc/resolv.conf is rewritten. See proto/PROTOCOL.md.
#include <cstdint>
#include <string>

#include "identity.h"
#include "request.h"

namespace forkd::agent {

inline constexpr char kNicName[] = "eth0";

struct NetSpec {
  bool outbound = false;  // false: mode none
  uint32_t address = 0;   // network byte order
  int prefix = 24;        // 1..30
  uint32_t gateway = 0;   // network byte order, inside address/prefix
  uint32_t dns = 0;       // network byte order; 0: leave the resolver alone
};

// The user-mode (slirp) network's addresses: what a guest with a NIC takes at boot.
NetSpec default_outbound();

// Parses the `network` object of a resumed request:
//   {"mode": "none"} or
//   {"mode": "outbound", "address": "10.0.2.15/24", "gateway": "10.0.2.2", "dns": "10.0.2.3"}
// Strict: unknown modes, malformed addresses and a gateway outside the subnet are bad_request.
AgentResult<NetSpec> parse_net_spec(const Json& j);

// True when the kernel has the NIC (a VM started with one).
bool has_nic();

// Applies spec to kNicName. Failures name the step (the resolver file is best effort: a
// read-only /etc is reported in `error` but does not fail an otherwise working network).
// *changed (when given) says whether the address or routes had to be rewritten.
StepResult apply_net_spec(const NetSpec& spec, bool* changed = nullptr);

}  // namespace forkd::agent

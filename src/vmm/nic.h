#pragma once
// Runtime control of a VM's NIC over QMP (see VmConfig::nic): its link, and ports forwarded from
// the host to the guest (slirp's hostfwd, added through HMP, which is where QEMU keeps it).
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "vmm/qmp_client.h"

namespace forkd::vmm {

struct PortForward {
  int guest = 0;
  int host = 0;
  std::string address;  // the host address it listens on
};

// The TCP host forwards listed in HMP `info usernet` output. Pure, for tests; lines that are not
// well-formed forwards are skipped.
std::vector<PortForward> parse_usernet_forwards(std::string_view text);

// Link up or down (QMP set_link). Down, the NIC drops every frame both ways: a child that must
// have no network although its tag has a NIC.
Status set_nic_link(QmpClient& qmp, bool up);

// Forwards a free TCP port on listen_address (chosen by the kernel) to guest_port; returns the
// forward. Fails if the address cannot be bound.
Result<PortForward> add_port_forward(QmpClient& qmp, const std::string& listen_address,
                                     int guest_port);

}  // namespace forkd::vmm

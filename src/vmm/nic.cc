#include "vmm/nic.h"

#include <charconv>
#include <sstream>

#include "vmm/qemu_cmdline.h"

namespace forkd::vmm {

namespace {

bool to_port(std::string_view s, int* out) {
  int v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < 0 || v > 65535) return false;
  *out = v;
  return true;
}

Result<std::string> hmp(QmpClient& qmp, const std::string& line) {
  auto r = qmp.execute("human-monitor-command", Json{{"command-line", line}});
  if (!r) return tl::unexpected(r.error());
  if (!r->is_string()) return make_error(ErrorCode::kProtocol, "HMP reply is not text");
  return r->get<std::string>();
}

}  // namespace

std::vector<PortForward> parse_usernet_forwards(std::string_view text) {
  // "  TCP[HOST_FORWARD]  12       127.0.0.1 34137       10.0.2.15  8080     0     0"
  std::vector<PortForward> out;
  std::istringstream in{std::string(text)};
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string proto, fd, src, sport, dst, dport;
    if (!(f >> proto >> fd >> src >> sport >> dst >> dport)) continue;
    if (proto != "TCP[HOST_FORWARD]") continue;
    PortForward pf;
    pf.address = src;
    if (!to_port(sport, &pf.host) || !to_port(dport, &pf.guest)) continue;
    out.push_back(pf);
  }
  return out;
}

Status set_nic_link(QmpClient& qmp, bool up) {
  auto r = qmp.execute("set_link", Json{{"name", kNicNetdev}, {"up", up}});
  if (!r) return tl::unexpected(r.error().wrap(up ? "NIC link up" : "NIC link down"));
  return {};
}

Result<PortForward> add_port_forward(QmpClient& qmp, const std::string& listen_address,
                                     int guest_port) {
  if (guest_port < 1 || guest_port > 65535) {
    return make_error(ErrorCode::kInvalidArgument, "guest port must be 1..65535");
  }
  const std::string what = "expose port " + std::to_string(guest_port);
  auto before = hmp(qmp, "info usernet");
  if (!before) return tl::unexpected(before.error().wrap(what));
  // Port 0: the kernel picks a free one, with no race against other sandboxes.
  auto added = hmp(qmp, std::string("hostfwd_add ") + kNicNetdev + " tcp:" + listen_address +
                            ":0-:" + std::to_string(guest_port));
  if (!added) return tl::unexpected(added.error().wrap(what));
  if (!added->empty()) {
    return make_error(ErrorCode::kQemuFailed, what + ": " + added->substr(0, 300));
  }
  auto after = hmp(qmp, "info usernet");
  if (!after) return tl::unexpected(after.error().wrap(what));
  auto old = parse_usernet_forwards(*before);
  for (const auto& pf : parse_usernet_forwards(*after)) {
    bool seen = false;
    for (const auto& o : old) seen = seen || (o.host == pf.host && o.address == pf.address);
    if (!seen && pf.guest == guest_port) return pf;
  }
  return make_error(ErrorCode::kQemuFailed, what + ": QEMU lists no new forward");
}

}  // namespace forkd::vmm

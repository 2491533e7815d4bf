#include "engine/switchover_gate.h"

#include <sys/ioctl.h>
#include <sys/socket.h>

#include <array>

namespace forkd::engine {

namespace {

// mig_rp_message_type (migration/migration.c).
constexpr uint16_t kRpShut = 1;
constexpr uint16_t kRpSwitchoverAck = 7;

}  // namespace

Status SwitchoverGate::poll(bool return_path, bool caught_up) {
  if (opened_ || !return_path || !caught_up) return {};
  auto now = std::chrono::steady_clock::now();
  if (!caught_up_at_) caught_up_at_ = now;
  const auto waited = now - *caught_up_at_;
  int unread = 0;
  if (::ioctl(fd_, FIONREAD, &unread) != 0) return errno_error(errno, "switch-over gate: FIONREAD");
  if (static_cast<uint64_t>(unread) > opt_.max_backlog && waited < opt_.max_wait) return {};
  waited_ms_ = std::chrono::duration<double, std::milli>(waited).count();
  backlog_ = static_cast<uint64_t>(unread);
  if (before_open_) before_open_();
  return open();
}

Status SwitchoverGate::open() {
  // SWITCHOVER_ACK (no data), then SHUT (be32 0). One write: a source that never reads its side
  // must not block this thread, so it may not be partial either.
  const std::array<uint8_t, 12> msgs = {0, kRpSwitchoverAck, 0, 0, 0, kRpShut, 0, 4, 0, 0, 0, 0};
  ssize_t n = ::send(fd_, msgs.data(), msgs.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n < 0) return errno_error(errno, "switch-over gate: send to the source");
  if (static_cast<size_t>(n) != msgs.size()) {
    return make_error(ErrorCode::kIo, "switch-over gate: the source's side took a partial message");
  }
  opened_ = true;
  return {};
}

}  // namespace forkd::engine

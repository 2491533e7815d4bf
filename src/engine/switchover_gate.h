#pragma once
// The receiving side of a QEMU return path, as much of it as a live branch uses: the gate on the
// source's switch-over (QEMU 8.1+, capabilities return-path and switchover-ack). With the gate
// the source copies and re-copies its memory as usual, but does not stop its guest for the last
// round until it is told it may.
//
// Why a branch gates it: the source sends faster than the branch's reader takes the stream in
// (the reader also writes the changed pages to the disk), so the socket between them held 5-16
// MiB when the source's first pass ended. Without the gate the source switched over then: the
// last pages and the device state, sent while the guest is stopped, could wait for the reader to
// make room, and the reader was busy with that backlog during the pause. The reader opens the
// gate once it has caught up with the first pass (every page of the main memory arrived) and the
// socket is nearly empty. It looks just before each read, when what it read before is parsed, so
// a source that sends nothing more while it waits is answered at once.
//
// What is sent is QEMU's return-path framing (migration/migration.c): a be16 type and a be16
// length, then the data. SWITCHOVER_ACK, then SHUT with 0 (no error), at once: the source's
// return-path thread ends on SHUT, and QEMU's completion joins that thread while the guest is
// stopped, so it must have ended by then.
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>

#include "base/error.h"

namespace forkd::engine {

class SwitchoverGate {
 public:
  struct Options {
    // Open once no more than this is unread in the socket (which holds 16 MiB, engine/
    // branch_receive.cc): room for the last round, and the reader all but idle during the pause,
    // so that it leaves the CPU to the pause's threads. Measured at 1 GiB with a 20 MiB/s
    // writer, four series of 10 each way, interleaved: switch-over p90 0.59 ms at 256 KiB,
    // 0.78 at 4 MiB, 1.40 without the gate; it waited 26 ms at most.
    uint64_t max_backlog = 256u << 10;
    // Or once this long has passed since the first pass arrived (a guest that dirties memory
    // faster than the reader takes it never lets the socket empty).
    std::chrono::milliseconds max_wait{100};
  };

  // fd: the receiving end of the stream's socket (the return path goes back over it).
  explicit SwitchoverGate(int fd) : SwitchoverGate(fd, Options{}) {}
  SwitchoverGate(int fd, Options options) : fd_(fd), opt_(options) {}

  // After each read of the stream. return_path: the source opened its return path;
  // caught_up: every page of the main memory arrived at least once. Opens the gate when it is
  // time; an error when the messages cannot be sent (a source that never reads its side).
  Status poll(bool return_path, bool caught_up);
  // Called just before the gate opens (the pause is about to begin), on poll's thread.
  void before_open(std::function<void()> f) { before_open_ = std::move(f); }

  bool opened() const { return opened_; }
  // How long after the first pass arrived the gate opened, and the bytes unread then.
  double waited_ms() const { return waited_ms_; }
  uint64_t backlog() const { return backlog_; }

 private:
  Status open();

  int fd_;
  Options opt_;
  bool opened_ = false;
  double waited_ms_ = 0;
  uint64_t backlog_ = 0;
  std::optional<std::chrono::steady_clock::time_point> caught_up_at_;
  std::function<void()> before_open_;
};

}  // namespace forkd::engine

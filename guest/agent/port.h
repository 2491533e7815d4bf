#pragma once
// The agent's byte channel to the host. Three flavours:
//  - the virtio-serial port named org.forkd.agent (production);
//  - any path opened read/write (--port PATH; a pty or fifo in tests);
//  - a unix socket listener serving one connection at a time (--listen-unix PATH, host tests).
// Thread safety: read_some() is called by one reader thread only; write() may be called from any
// thread and is serialized internally, so one call = one uninterrupted frame on the wire.
#include <memory>
#include <string>
#include <string_view>

#include "base/error.h"

namespace forkd::agent {

inline constexpr char kAgentPortName[] = "org.forkd.agent";

enum class ReadEvent {
  kData,   // bytes were appended
  kReset,  // the host side went away (or reconnected): drop any partial frame
};

class Port {
 public:
  virtual ~Port() = default;
  // Blocks until bytes arrive (appends at most max bytes to *out) or the peer goes away. Never
  // spins: while the host is absent it sleeps (SIGIO or a 1 s tick) between attempts.
  virtual ReadEvent read_some(std::string* out, size_t max) = 0;
  // Writes bytes whole. When the host is gone or stops reading for too long, drops them.
  virtual void write(std::string_view bytes) = 0;
};

// Finds /sys/class/virtio-ports/vport*/name == name and opens its /dev node; retries for up to
// wait_ms while the port does not exist yet. SIGIO must be blocked in every thread.
Result<std::unique_ptr<Port>> open_virtio_port(std::string_view name, int wait_ms);
Result<std::unique_ptr<Port>> open_path_port(const std::string& path);
Result<std::unique_ptr<Port>> open_unix_listener(const std::string& path);

// Writes all of data to a (possibly non-blocking) fd, waiting for POLLOUT on EAGAIN. Gives up
// when the peer hangs up or no progress is made for stall_ms. Returns false when data was
// dropped (in whole or in part).
bool write_all_fd(int fd, std::string_view data, int stall_ms);

}  // namespace forkd::agent

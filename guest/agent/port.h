#pragma once
// The agent's byte channel to the host. Three flavours:
//  - the virtio-serial port named org.forkd.agent (production);
//  - any path opened read/write (--port PATH; a pty or fifo in tests);
//  - a unix socket listener serving one connection at a time (--listen-unix PATH, host tests).
// Thread safety: read_some() is called by one reader thread only; write() may be called from any
// thread and is serialized internally, so one call = one uninterrupted frame on the wire.
//
// Connection generations: every time the host side goes away (or a new host connection is
// accepted) the generation goes up. A reply carries the generation its request arrived on and is
// dropped when that is no longer current, so a reply to an old host (e.g. one that was connected
// when the VM was snapshotted) never reaches a newer one. The check and the write happen under one
// lock, so a generation change cannot slip between them.
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
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
  // spins: while the host is absent it sleeps (SIGIO or a 1 s tick) between attempts. Bumps the
  // generation before returning kReset for a real disconnect.
  virtual ReadEvent read_some(std::string* out, size_t max) = 0;

  // The current connection generation. Bytes returned by read_some belong to the generation
  // read right after it (only the reader thread changes it, apart from new_generation()).
  uint64_t generation() const { return generation_.load(); }
  // Starts a new generation now, as if the host had reconnected (the `resumed` op: a transport
  // that cannot see a quick close+open still gets a clean cut).
  void new_generation();
  // Writes bytes whole if gen is still current, else drops them. When the host is gone or stops
  // reading for too long, drops them too.
  void write(std::string_view bytes, uint64_t gen);

 protected:
  // Called with write_mu_ held.
  virtual void write_locked(std::string_view bytes) = 0;
  void bump_generation_locked() { generation_.fetch_add(1); }

  std::mutex write_mu_;  // serializes frames; guards the connection state of subclasses

 private:
  std::atomic<uint64_t> generation_{1};
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

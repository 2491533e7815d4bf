#pragma once
// One agent connection per sandbox, kept for the daemon's life. QEMU's chardev serves one host
// connection at a time, so the daemon attaches once and multiplexes every request over it
// (AgentClient supports concurrent requests). Consequence: while the daemon holds a sandbox, a
// CLI `forkd exec` on the same sandbox waits for the connection and times out; drive such
// sandboxes through the daemon. Thread-safe.
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "base/error.h"
#include "engine/config.h"
#include "engine/sandbox.h"

namespace forkd::daemon {

class AgentCache {
 public:
  explicit AgentCache(engine::EngineConfig cfg) : cfg_(std::move(cfg)) {}

  // The attached sandbox, attaching on first use. Co-owners of the shared_ptr: the cache and the
  // requests using it; the attached object never owns the VM, so dropping it leaves QEMU running.
  Result<std::shared_ptr<engine::Sandbox>> get(const std::string& id);

  // Forgets sb's connection (after an error that may have broken it) if it is still the cached one.
  void drop(const std::string& id, const std::shared_ptr<engine::Sandbox>& sb);
  // Forgets the connection of id, whatever it is (before removing the sandbox).
  void drop(const std::string& id);

 private:
  struct Entry {
    std::mutex mu;  // serializes attaching, so two requests never race for the chardev
    std::shared_ptr<engine::Sandbox> sb;
  };
  engine::EngineConfig cfg_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> entries_;  // co-owned by attaching requests
};

// True for errors after which the agent connection should not be reused.
bool breaks_connection(const Error& err);

}  // namespace forkd::daemon

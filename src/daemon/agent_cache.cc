#include "daemon/agent_cache.h"

namespace forkd::daemon {

Result<std::shared_ptr<engine::Sandbox>> AgentCache::get(const std::string& id) {
  std::shared_ptr<Entry> e;
  {
    std::lock_guard lock(mu_);
    auto& slot = entries_[id];
    if (!slot) slot = std::make_shared<Entry>();
    e = slot;
  }
  std::lock_guard lock(e->mu);
  if (e->sb) return e->sb;
  auto sb = engine::Sandbox::attach(cfg_, id);
  if (!sb) {
    std::lock_guard g(mu_);
    if (auto it = entries_.find(id); it != entries_.end() && it->second == e && !e->sb) {
      entries_.erase(it);
    }
    return tl::unexpected(sb.error());
  }
  e->sb = std::shared_ptr<engine::Sandbox>(std::move(*sb));
  return e->sb;
}

void AgentCache::drop(const std::string& id, const std::shared_ptr<engine::Sandbox>& sb) {
  std::shared_ptr<Entry> e;
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return;
    e = it->second;
  }
  std::lock_guard lock(e->mu);
  if (e->sb == sb) e->sb.reset();
}

void AgentCache::drop(const std::string& id) {
  std::shared_ptr<Entry> e;
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return;
    e = it->second;
    entries_.erase(it);
  }
  std::lock_guard lock(e->mu);
  e->sb.reset();
}

bool breaks_connection(const Error& err) {
  switch (err.code()) {
    case ErrorCode::kAgentError:
    case ErrorCode::kAgentTimeout:
    case ErrorCode::kProtocol:
    case ErrorCode::kIo:
    case ErrorCode::kNotFound:
      return true;
    default:
      return false;
  }
}

}  // namespace forkd::daemon

#include "daemon/limits.h"

#include "base/thread_root.h"

namespace forkd::daemon {

namespace {
thread_local bool t_over_cap = false;
}  // namespace

bool over_inflight_cap() { return t_over_cap; }

AdmissionQueue::AdmissionQueue(InflightLimit& limit, size_t threads)
    : limit_(limit), work_(threads) {}

void AdmissionQueue::enqueue(std::function<void()> fn) {
  if (limit_.in_flight.fetch_add(1) < limit_.cap) {
    work_.enqueue([this, fn = std::move(fn)] {
      t_over_cap = false;
      // The root of a worker's task: whatever escapes httplib's own handling (the logger, a
      // socket write) must not end the daemon.
      guarded("http connection", fn);
      limit_.in_flight.fetch_sub(1);
    });
    return;
  }
  limit_.in_flight.fetch_sub(1);
  limit_.rejected.fetch_add(1);
  // fn owns the socket (it closes it when done), so it must run even to refuse.
  reject_.enqueue([fn = std::move(fn)] {
    t_over_cap = true;
    guarded("http connection (refused)", fn);
    t_over_cap = false;
  });
}

void AdmissionQueue::shutdown() {
  work_.shutdown();
  reject_.shutdown();
}

std::unique_ptr<ExecSlots::Guard> ExecSlots::acquire(const std::string& id) {
  std::lock_guard lock(mu_);
  int& n = running_[id];
  if (n >= cap_) {
    if (n == 0) running_.erase(id);
    rejected_.fetch_add(1);
    return nullptr;
  }
  ++n;
  total_.fetch_add(1);
  return std::make_unique<Guard>(*this, id);
}

void ExecSlots::release(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = running_.find(id);
  if (it != running_.end() && --it->second <= 0) running_.erase(it);
  total_.fetch_sub(1);
}

}  // namespace forkd::daemon

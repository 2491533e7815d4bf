#pragma once
// Concurrency caps of the daemon (issue 4, "limits"): the server answers 503 or 429 at once
// instead of letting work queue without bound.
//
// - Requests in flight: httplib 0.11 hands every accepted connection to its task queue and its
//   ThreadPool queues without limit, so a flood makes every client wait forever. AdmissionQueue
//   counts connections queued or running; beyond the cap a connection goes to a small side pool
//   that only answers 503 (the request must still be read to answer it over HTTP).
// - Execs per sandbox: one sandbox's agent serves requests over a single connection, so a flood
//   on one sandbox would starve the others of worker threads; ExecSlots answers 429 past its cap.
#include <httplib.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace forkd::daemon {

// Shared by every listener, so the cap holds for TCP and the unix socket together.
struct InflightLimit {
  int cap = 64;
  std::atomic<int> in_flight{0};      // connections queued or being served
  std::atomic<uint64_t> rejected{0};  // connections answered 503 for being over the cap
};

// True while the current thread serves a connection that was over the cap; the pre-routing
// handler answers such requests 503.
bool over_inflight_cap();

class AdmissionQueue : public httplib::TaskQueue {
 public:
  AdmissionQueue(InflightLimit& limit, size_t threads);
  void enqueue(std::function<void()> fn) override;
  void shutdown() override;

 private:
  InflightLimit& limit_;
  httplib::ThreadPool work_;
  // Two threads suffice: a rejected request costs one read and a short write.
  httplib::ThreadPool reject_{2};
};

// Per-sandbox exec counters. acquire() returns a guard that releases the slot, or nullptr when
// the sandbox is at its cap.
class ExecSlots {
 public:
  explicit ExecSlots(int cap) : cap_(cap) {}
  void set_cap(int cap) { cap_ = cap; }  // before serving only
  class Guard {
   public:
    Guard(ExecSlots& s, std::string id) : s_(s), id_(std::move(id)) {}
    ~Guard() { s_.release(id_); }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    ExecSlots& s_;
    std::string id_;
  };
  std::unique_ptr<Guard> acquire(const std::string& id);
  int cap() const { return cap_; }
  int total() const { return total_.load(); }  // execs running across all sandboxes
  uint64_t rejected() const { return rejected_.load(); }

 private:
  void release(const std::string& id);
  int cap_;
  std::mutex mu_;
  std::map<std::string, int> running_;  // only sandboxes with an exec running
  std::atomic<int> total_{0};
  std::atomic<uint64_t> rejected_{0};
};

}  // namespace forkd::daemon

#pragma once
// Pushes and pulls the daemon runs (POST /v1/hub/push|pull), listed with their progress until a
// while after they end: the last kKeptFinished finished ones are kept for GET. At most kMaxRunning
// run at once (a 503 beyond). Thread-safe.
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "base/error.h"

namespace forkd::daemon {

struct Transfer {
  std::string id;    // "xfer-<hex>"
  std::string kind;  // push | pull
  std::string ref;
  std::string tag;
  int64_t started_at = 0;
  std::atomic<uint64_t> done_bytes{0};
  std::atomic<uint64_t> total_bytes{0};
  // Set by cancel(): the registry client stops (hub::RegistryClientOptions::cancel).
  std::shared_ptr<std::atomic<bool>> cancel = std::make_shared<std::atomic<bool>>(false);
  // Set once, under the table's lock.
  std::string status = "running";  // running | done | failed
  nlohmann::json result;           // the verb's result when done
  nlohmann::json error;            // {code, message} when failed
  int64_t finished_at = 0;
};

class TransferTable {
 public:
  static constexpr int kMaxRunning = 4;
  static constexpr size_t kKeptFinished = 64;

  // A new running transfer, or null when kMaxRunning already run.
  std::shared_ptr<Transfer> start(const std::string& kind, const std::string& ref,
                                  const std::string& tag);
  void finish(const std::shared_ptr<Transfer>& t, nlohmann::json result);
  void fail(const std::shared_ptr<Transfer>& t, const std::string& code,
            const std::string& message);
  // Asks a running transfer to stop (it ends `failed` with code `cancelled`, its staging
  // removed; a cut pull's blobs stay for a resume). kNotFound for an unknown id,
  // kFailedPrecondition for one that already ended.
  Status cancel(const std::string& id);
  // Every running transfer (the daemon is stopping).
  void cancel_all();
  // The transfer's JSON (null when unknown).
  nlohmann::json get_json(const std::string& id) const;
  nlohmann::json list_json() const;

 private:
  nlohmann::json to_json_locked(const Transfer& t) const;
  void trim_locked();
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Transfer>> all_;  // co-owned by the worker thread
  int running_ = 0;
};

}  // namespace forkd::daemon

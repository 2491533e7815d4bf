#include "daemon/transfers.h"

#include <algorithm>
#include <ctime>
#include <vector>

#include "base/random.h"

namespace forkd::daemon {

using Json = nlohmann::json;

std::shared_ptr<Transfer> TransferTable::start(const std::string& kind, const std::string& ref,
                                               const std::string& tag) {
  std::lock_guard lock(mu_);
  if (running_ >= kMaxRunning) return nullptr;
  auto t = std::make_shared<Transfer>();
  t->id = "xfer-" + random_hex(6);
  t->kind = kind;
  t->ref = ref;
  t->tag = tag;
  t->started_at = static_cast<int64_t>(std::time(nullptr));
  all_[t->id] = t;
  running_++;
  return t;
}

void TransferTable::finish(const std::shared_ptr<Transfer>& t, Json result) {
  std::lock_guard lock(mu_);
  t->status = "done";
  t->result = std::move(result);
  t->finished_at = static_cast<int64_t>(std::time(nullptr));
  running_--;
  trim_locked();
}

void TransferTable::fail(const std::shared_ptr<Transfer>& t, const std::string& code,
                         const std::string& message) {
  std::lock_guard lock(mu_);
  t->status = "failed";
  t->error = {{"code", code}, {"message", message}};
  t->finished_at = static_cast<int64_t>(std::time(nullptr));
  running_--;
  trim_locked();
}

Status TransferTable::cancel(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = all_.find(id);
  if (it == all_.end()) return make_error(ErrorCode::kNotFound, "no transfer " + id);
  if (it->second->status != "running") {
    return make_error(ErrorCode::kFailedPrecondition,
                      "transfer " + id + " already ended (" + it->second->status + ")");
  }
  it->second->cancel->store(true);
  return {};
}

void TransferTable::cancel_all() {
  std::lock_guard lock(mu_);
  for (auto& [id, t] : all_) {
    if (t->status == "running") t->cancel->store(true);
  }
}

void TransferTable::trim_locked() {
  std::vector<std::pair<int64_t, std::string>> finished;
  for (const auto& [id, t] : all_) {
    if (t->status != "running") finished.emplace_back(t->finished_at, id);
  }
  if (finished.size() <= kKeptFinished) return;
  std::sort(finished.begin(), finished.end());
  for (size_t i = 0; i + kKeptFinished < finished.size(); i++) all_.erase(finished[i].second);
}

Json TransferTable::get_json(const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = all_.find(id);
  return it == all_.end() ? Json(nullptr) : to_json_locked(*it->second);
}

Json TransferTable::to_json_locked(const Transfer& t) const {
  uint64_t done = t.done_bytes.load(), total = t.total_bytes.load();
  Json j = {{"id", t.id},
            {"kind", t.kind},
            {"ref", t.ref},
            {"tag", t.tag.empty() ? Json(nullptr) : Json(t.tag)},
            {"status", t.status},
            {"cancelling", t.status == "running" && t.cancel->load()},
            {"done_bytes", done},
            {"total_bytes", total},
            {"percent", total ? 100.0 * static_cast<double>(done) / static_cast<double>(total)
                              : (t.status == "done" ? 100.0 : 0.0)},
            {"started_at_unix", t.started_at},
            {"finished_at_unix", t.finished_at ? Json(t.finished_at) : Json(nullptr)}};
  if (!t.result.is_null()) j["result"] = t.result;
  if (!t.error.is_null()) j["error"] = t.error;
  return j;
}

Json TransferTable::list_json() const {
  std::lock_guard lock(mu_);
  Json out = Json::array();
  for (const auto& [id, t] : all_) out.push_back(to_json_locked(*t));
  return {{"transfers", out}};
}

}  // namespace forkd::daemon

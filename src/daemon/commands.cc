#include "daemon/commands.h"

#include <algorithm>
#include <ctime>

#include "base/random.h"

namespace forkd::daemon {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

Command::Command(std::string id, std::string sandbox_id, Json description, size_t cap,
                 engine::OutputBudget* budget, bool consume)
    : id_(std::move(id)),
      sandbox_id_(std::move(sandbox_id)),
      description_(std::move(description)),
      cap_(cap),
      budget_(budget),
      consume_(consume),
      started_at_unix_(static_cast<int64_t>(std::time(nullptr))),
      t0_(Clock::now()) {}

Command::~Command() {
  if (budget_ && charged_) budget_->give_back(charged_);
}

void Command::append(bool err, std::string_view data) {
  std::lock_guard lock(mu_);
  written_[err] += data.size();
  size_t room = cap_ > held_[err] ? cap_ - held_[err] : 0;
  size_t want = std::min(room, data.size());
  size_t got = want && budget_ ? budget_->take(want) : want;
  charged_ += budget_ ? got : 0;
  dropped_ += data.size() - got;
  if (got == 0) return;
  held_[err] += got;
  chunks_.push_back({err, std::string(data.substr(0, got))});
  cv_.notify_all();
}

void Command::finish(const Result<engine::ExecResult>& r) {
  std::lock_guard lock(mu_);
  if (r) {
    result_.exit_code = r->exit_code;
    result_.timed_out = r->timed_out;
    result_.duration_ms = r->duration_ms;
  } else if (r.error().code() == ErrorCode::kGuestCommandNotFound) {
    // What a shell answers: exit 127 with the reason on stderr (as the plain exec does).
    std::string why = "forkd: " + r.error().message() + "\n";
    written_[1] += why.size();
    held_[1] += why.size();
    chunks_.push_back({true, std::move(why)});
    result_.exit_code = 127;
  } else {
    error_ = r.error();
  }
  ended_ms_ = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0_).count();
  if (r && result_.duration_ms == 0) result_.duration_ms = ended_ms_;
  done_ = true;
  sb_.reset();
  cv_.notify_all();
}

void Command::attach(std::shared_ptr<engine::Sandbox> sb) {
  std::lock_guard lock(mu_);
  if (!done_) sb_ = std::move(sb);
}

std::shared_ptr<engine::Sandbox> Command::sandbox() const {
  std::lock_guard lock(mu_);
  return sb_;
}

void Command::mark_killed() {
  std::lock_guard lock(mu_);
  if (!done_) killed_ = true;
}

void Command::unmark_killed() {
  std::lock_guard lock(mu_);
  killed_ = false;
}

bool Command::done() const {
  std::lock_guard lock(mu_);
  return done_;
}

Command::Read Command::read(uint64_t from, std::chrono::milliseconds wait) {
  std::unique_lock lock(mu_);
  auto available = [&] { return first_ + chunks_.size() > from || done_; };
  cv_.wait_for(lock, wait, available);
  Read out;
  from = std::max(from, first_);
  for (uint64_t i = from; i < first_ + chunks_.size(); ++i) {
    out.chunks.push_back(chunks_[static_cast<size_t>(i - first_)]);
  }
  out.next = first_ + chunks_.size();
  out.done = done_;
  if (consume_) {
    // One reader: what it took is not needed again.
    for (const auto& c : chunks_) {
      held_[c.err] -= c.data.size();
      if (budget_) {
        size_t back = std::min<uint64_t>(charged_, c.data.size());
        budget_->give_back(back);
        charged_ -= back;
      }
    }
    first_ += chunks_.size();
    chunks_.clear();
  }
  return out;
}

bool Command::wait_done(std::chrono::milliseconds wait) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, wait, [&] { return done_; });
}

Json Command::info_locked() const {
  int64_t duration =
      done_ ? ended_ms_
            : std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0_).count();
  Json j = {{"command_id", id_},
            {"sandbox_id", sandbox_id_},
            {"status", !done_   ? "running"
                       : error_ ? "failed"
                                : "exited"},
            {"exit_code", done_ && !error_ ? Json(result_.exit_code) : Json()},
            {"timed_out", result_.timed_out},
            {"killed", killed_},
            {"error", error_ ? Json(error_->message()) : Json()},
            {"started_at_unix", started_at_unix_},
            {"duration_ms", duration},
            {"stdout_bytes", written_[0]},
            {"stderr_bytes", written_[1]},
            {"dropped_bytes", dropped_}};
  j.update(description_);
  return j;
}

Json Command::info() const {
  std::lock_guard lock(mu_);
  return info_locked();
}

Json Command::final_line() const {
  std::lock_guard lock(mu_);
  if (error_) {
    return {
        {"type", "error"}, {"error", error_->message()}, {"code", error_code_name(error_->code())}};
  }
  return {{"type", "exit"},
          {"exit_code", result_.exit_code},
          {"timed_out", result_.timed_out},
          {"duration_ms", result_.duration_ms},
          {"stdout_bytes", written_[0]},
          {"stderr_bytes", written_[1]},
          {"dropped_bytes", dropped_}};
}

std::pair<std::string, std::string> Command::output() const {
  std::lock_guard lock(mu_);
  std::pair<std::string, std::string> out;
  for (const auto& c : chunks_) (c.err ? out.second : out.first) += c.data;
  return out;
}

Result<std::shared_ptr<Command>> CommandTable::create(const std::string& sandbox_id,
                                                      Json description, size_t cap,
                                                      engine::OutputBudget* budget, bool keep) {
  std::lock_guard lock(mu_);
  if (stopping_) return make_error(ErrorCode::kUnavailable, "the daemon is stopping");
  if (running_ >= kMaxRunning) {
    return make_error(ErrorCode::kUnavailable,
                      "busy: " + std::to_string(kMaxRunning) +
                          " streaming or background commands are running; retry later");
  }
  if (keep && kept_[sandbox_id].size() >= kPerSandbox) {
    return make_error(ErrorCode::kFailedPrecondition,
                      "sandbox " + sandbox_id + " has " + std::to_string(kPerSandbox) +
                          " background commands: delete finished ones "
                          "(DELETE /v1/sandboxes/:id/commands/:cid)");
  }
  auto cmd = std::make_shared<Command>("cmd-" + random_hex(8), sandbox_id, std::move(description),
                                       cap, budget, !keep);
  if (keep) kept_[sandbox_id][cmd->id()] = cmd;
  std::erase_if(live_, [](const auto& w) { return w.expired(); });
  live_.push_back(cmd);
  ++running_;
  return cmd;
}

void CommandTable::ended() {
  std::lock_guard lock(mu_);
  --running_;
}

std::shared_ptr<Command> CommandTable::find(const std::string& sandbox_id, const std::string& id) {
  std::lock_guard lock(mu_);
  auto s = kept_.find(sandbox_id);
  if (s == kept_.end()) return nullptr;
  auto c = s->second.find(id);
  return c == s->second.end() ? nullptr : c->second;
}

std::vector<std::shared_ptr<Command>> CommandTable::list(const std::string& sandbox_id) {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<Command>> out;
  if (auto s = kept_.find(sandbox_id); s != kept_.end()) {
    for (const auto& [id, c] : s->second) out.push_back(c);
  }
  return out;
}

std::shared_ptr<Command> CommandTable::erase(const std::string& sandbox_id, const std::string& id) {
  std::lock_guard lock(mu_);
  auto s = kept_.find(sandbox_id);
  if (s == kept_.end()) return nullptr;
  auto c = s->second.find(id);
  if (c == s->second.end()) return nullptr;
  auto cmd = c->second;
  s->second.erase(c);
  if (s->second.empty()) kept_.erase(s);
  return cmd;
}

void CommandTable::drop_sandbox(const std::string& sandbox_id) {
  std::lock_guard lock(mu_);
  kept_.erase(sandbox_id);
}

void CommandTable::shutdown() {
  std::vector<std::shared_ptr<Command>> cmds;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (const auto& w : live_) {
      if (auto c = w.lock()) cmds.push_back(std::move(c));
    }
  }
  for (const auto& c : cmds) {
    if (auto sb = c->sandbox()) sb->disconnect();
  }
}

int CommandTable::running() const {
  std::lock_guard lock(mu_);
  return running_;
}

}  // namespace forkd::daemon

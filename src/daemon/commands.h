#pragma once
// Commands that outlive one agent call's answer: streaming execs (the output goes to the client
// as it comes) and background commands (kept by the daemon until deleted). A Command runs its
// exec on a BackgroundWork thread and holds the output as chunks; readers wait on it. The output
// held at once is bounded per stream and charged to the daemon's exec output budget. Thread-safe.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/sandbox.h"

namespace forkd::daemon {

struct OutputChunk {
  bool err = false;  // stderr, else stdout
  std::string data;
};

class Command {
 public:
  // description: {args} or {shell}, echoed in info(). cap: bytes held per stream. budget: shared.
  Command(std::string id, std::string sandbox_id, nlohmann::json description, size_t cap,
          engine::OutputBudget* budget, bool consume);
  ~Command();
  Command(const Command&) = delete;
  Command& operator=(const Command&) = delete;

  const std::string& id() const { return id_; }
  const std::string& sandbox_id() const { return sandbox_id_; }

  // From the agent's reader thread: keeps data unless the stream's cap or the budget is spent.
  void append(bool err, std::string_view data);
  // The exec's outcome. The sandbox is forgotten (see attach).
  void finish(const Result<engine::ExecResult>& r);
  // The sandbox whose agent runs the command, for kill and disconnect; cleared by finish().
  void attach(std::shared_ptr<engine::Sandbox> sb);
  std::shared_ptr<engine::Sandbox> sandbox() const;
  // A kill is being sent (shown as `killed`); unmark_killed() when it could not be.
  void mark_killed();
  void unmark_killed();
  bool done() const;

  // Chunks from index `from` (0 = the first ever), waiting up to `wait` for one or the end.
  struct Read {
    std::vector<OutputChunk> chunks;
    uint64_t next = 0;  // the index after the last chunk returned
    bool done = false;  // the command ended and nothing is left after `next`
  };
  Read read(uint64_t from, std::chrono::milliseconds wait);
  // Waits until the command ended or `wait` passed; true when it ended.
  bool wait_done(std::chrono::milliseconds wait);

  // CommandInfo (docs/API.md).
  nlohmann::json info() const;
  // The exit line of a stream, or its error line.
  nlohmann::json final_line() const;
  // Everything kept: {stdout, stderr} as strings.
  std::pair<std::string, std::string> output() const;

 private:
  nlohmann::json info_locked() const;

  const std::string id_;
  const std::string sandbox_id_;
  const nlohmann::json description_;
  const size_t cap_;
  engine::OutputBudget* const budget_;
  // A consuming command (a streaming exec, one reader) frees chunks once read; a kept one
  // (background) keeps them for every reader until it is deleted.
  const bool consume_;
  const int64_t started_at_unix_;
  const std::chrono::steady_clock::time_point t0_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<OutputChunk> chunks_;
  uint64_t first_ = 0;  // index of chunks_.front()
  size_t held_[2] = {0, 0};
  uint64_t written_[2] = {0, 0};
  uint64_t dropped_ = 0;
  uint64_t charged_ = 0;  // taken from budget_
  bool done_ = false;
  bool killed_ = false;
  std::optional<Error> error_;
  engine::ExecResult result_;
  int64_t ended_ms_ = 0;
  std::shared_ptr<engine::Sandbox> sb_;
};

// The daemon's commands: background ones by sandbox, and a count of every running one (each holds
// a thread) against a global cap.
class CommandTable {
 public:
  static constexpr size_t kPerSandbox = 16;
  static constexpr int kMaxRunning = 256;

  // Reserves a running slot (and, when keep, a place among the sandbox's commands). Errors are
  // kResourceExhausted with the reason.
  Result<std::shared_ptr<Command>> create(const std::string& sandbox_id, nlohmann::json description,
                                          size_t cap, engine::OutputBudget* budget, bool keep);
  // Called when a command's exec returned: frees its running slot.
  void ended();
  std::shared_ptr<Command> find(const std::string& sandbox_id, const std::string& id);
  std::vector<std::shared_ptr<Command>> list(const std::string& sandbox_id);
  std::shared_ptr<Command> erase(const std::string& sandbox_id, const std::string& id);
  // Forgets a removed sandbox's commands.
  void drop_sandbox(const std::string& sandbox_id);
  // Daemon stopping: closes the agent connection of every running command so its thread ends,
  // and refuses new commands from then on.
  void shutdown();
  int running() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::map<std::string, std::shared_ptr<Command>>> kept_;
  std::vector<std::weak_ptr<Command>> live_;  // every command started, for shutdown
  int running_ = 0;
  bool stopping_ = false;
};

}  // namespace forkd::daemon

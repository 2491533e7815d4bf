#pragma once
// Minimal synchronous QMP client over a unix socket. Not thread-safe: one owner drives it.
// Asynchronous events that arrive while waiting for a command's reply are queued and can be
// fetched with wait_event / take_events.
#include <chrono>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "base/error.h"
#include "base/unique_fd.h"

namespace forkd::vmm {

using Json = nlohmann::json;

// One parsed QMP message.
struct QmpMessage {
  enum class Kind { kGreeting, kReturn, kError, kEvent } kind;
  Json body;       // the "return" value, the "error" object, the event object, or the greeting
  std::string id;  // the command id echoed back, if any
};

// Parses one line of QMP output. Malformed JSON or an unknown shape is kProtocol.
Result<QmpMessage> parse_qmp_message(std::string_view line);

class QmpClient {
 public:
  // Connects (retrying until timeout while the socket does not exist or refuses), reads the
  // greeting and negotiates capabilities.
  static Result<QmpClient> connect(const std::string& socket_path,
                                   std::chrono::milliseconds timeout);

  // Runs a command; returns its "return" value. A QMP error reply is kQemuFailed with
  // "<command>: <class>: <desc>". No reply within timeout is kTimeout. EOF is kQemuFailed.
  Result<Json> execute(std::string_view command, const Json& arguments = Json::object(),
                       std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // Like execute, and passes fd along with the command (SCM_RIGHTS), as `getfd` / `add-fd` need.
  Result<Json> execute_with_fd(std::string_view command, const Json& arguments, int fd,
                               std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // QEMU's monitor reads QMP one byte per turn of its loop (~10 us a byte on this host), so a
  // command costs its length when it is sent. arm() sends all of one but its closing brace,
  // which QEMU's parser then holds; fire() sends that brace and waits for the reply as execute()
  // does, so a command needed at a precise moment (a branch's `cont`) costs one byte then.
  // While one is armed, execute() disarms it first: disarm() completes it with a member QEMU
  // rejects, so it never runs, and reads that error.
  Status arm(std::string_view command, const Json& arguments = Json::object());
  Result<Json> fire(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  Status disarm();
  bool armed() const { return armed_.has_value(); }

  // Returns the first queued or arriving event named name (others stay queued).
  Result<Json> wait_event(std::string_view name, std::chrono::milliseconds timeout);
  std::deque<Json> take_events();

  int fd() const { return fd_.get(); }

 private:
  explicit QmpClient(UniqueFd fd) : fd_(std::move(fd)) {}
  Result<QmpMessage> read_message(std::chrono::steady_clock::time_point deadline);
  Status send_line(const std::string& line, int fd_to_pass,
                   std::chrono::steady_clock::time_point deadline);
  // The command's line without its newline (ids are numbers: shorter on the wire).
  std::string request_line(const std::string& command, const Json& arguments, uint64_t id) const;
  Result<Json> await_reply(const std::string& command, uint64_t id,
                           std::chrono::steady_clock::time_point deadline,
                           std::chrono::milliseconds timeout);

  struct Armed {
    std::string command;
    uint64_t id = 0;
  };

  UniqueFd fd_;
  std::string rbuf_;
  std::deque<Json> events_;
  uint64_t next_id_ = 1;
  std::optional<Armed> armed_;
};

}  // namespace forkd::vmm

#pragma once
// Helpers for tests that drive a real `forkd serve` process.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/subprocess.h"

namespace forkd::test {

// A loopback TCP port that was free a moment ago; 0 on failure.
int free_port();

// Starts `forkd serve --listen 127.0.0.1:port --token-file token_file extra...` and waits for
// /healthz to answer 200; nullopt (the process killed) when it never does. With tls_ca (extra
// then holds --tls-cert/--tls-key), /healthz is asked over https, trusting that PEM file.
std::optional<Child> start_daemon(int port, const std::string& token_file,
                                  std::vector<std::string> extra = {},
                                  const std::string& tls_ca = "");

// A loopback client of the daemon on port, with long timeouts (snapshot creation boots a VM) and
// the bearer token when one is given.
httplib::Client daemon_client(int port, const std::string& token);

// One `forkd serve` on a free loopback port with a fresh strong token, as a suite or a test
// owns it. Destroying it while the daemon runs SIGKILLs and reaps the daemon. Not thread-safe.
class TestDaemon {
 public:
  // Writes a new token to home/token_file (0600), picks a free port and starts the daemon with
  // extra flags. Use as ASSERT_TRUE(d.start(...)): the failure says which step failed.
  [[nodiscard]] ::testing::AssertionResult start(const std::string& home,
                                                 const std::string& token_file,
                                                 std::vector<std::string> extra = {});
  // Starts the daemon again (after stop) on the same port and token, with extra flags only:
  // those given to start are not reused.
  [[nodiscard]] ::testing::AssertionResult restart(std::vector<std::string> extra = {});
  // Sends sig and waits up to timeout; the exit code (128+signal when killed), nullopt when no
  // daemon ran or it did not exit in time (it is then SIGKILLed and reaped).
  std::optional<int> stop(int sig = SIGTERM,
                          std::chrono::seconds timeout = std::chrono::seconds(20));

  bool running() const { return child_.has_value(); }
  // The daemon's process id; -1 when none was started (or it was stopped).
  int pid() const { return child_ ? child_->pid() : -1; }
  // A client with long timeouts, with the bearer token unless auth is false.
  httplib::Client client(bool auth = true) const;
  int port() const { return port_; }
  const std::string& token() const { return token_; }
  const std::string& token_file() const { return token_file_; }  // the full path
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  std::string token_, token_file_;
  int port_ = 0;
  std::optional<Child> child_;
};

// POSTs body as JSON.
httplib::Result post_json(httplib::Client& c, const std::string& path, const nlohmann::json& body);

// POST /v1/workspaces/<name>/suspend with suspend_body, then /resume: the resumed sandbox's id.
// Either answering anything but 200 fails the calling test (non-fatally) and gives "".
std::string suspend_and_resume(httplib::Client& c, const std::string& name,
                               const nlohmann::json& suspend_body);

// The response body as JSON (discarded when there is none or it is not JSON).
nlohmann::json body_json(const httplib::Result& r);

// Checks a 4xx/5xx answer: the status, and a body {"error": "<message>"} containing needle.
void expect_error(const httplib::Result& r, int status, const std::string& needle = "");

}  // namespace forkd::test

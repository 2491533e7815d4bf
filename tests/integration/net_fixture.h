#pragma once
// The network tests' host side: a test HTTP server on a host address, and the guest command
// that fetches from it.
#include <gtest/gtest.h>
#include <httplib.h>

#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "integration/vm_fixture.h"

namespace forkd::test {

// The host's test server: GET /hello?from=X answers "hello X" and records X. It listens on
// address (the host's loopback, or the host's end of a child's veth) at port (0: a free one).
class HostServer {
 public:
  bool start(const std::string& address = "127.0.0.1", int port = 0) {
    server_.Get("/hello", [this](const httplib::Request& req, httplib::Response& res) {
      std::string from = req.get_param_value("from");
      {
        std::lock_guard lock(mu_);
        seen_.insert(from);
      }
      res.set_header("Connection", "close");
      res.set_content("hello " + from + "\n", "text/plain");
    });
    if (port == 0) {
      port_ = server_.bind_to_any_port(address);
    } else if (server_.bind_to_port(address, port)) {
      port_ = port;
    }
    if (port_ <= 0) return false;
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    return true;
  }
  void stop() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }
  ~HostServer() { stop(); }
  int port() const { return port_; }
  std::set<std::string> seen() {
    std::lock_guard lock(mu_);
    return seen_;
  }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  std::set<std::string> seen_;
};

// A guest shell line that asks the host server at host:port as `from` ("$(hostname)" is
// expanded by the guest). busybox's small nc quits as soon as its stdin ends, maybe before the
// answer arrived: its stdin is a FIFO held open until it exits, which it does when the server
// closes the connection (the server answers Connection: close).
inline std::string fetch_cmd(const std::string& host, int port, const std::string& from) {
  return "(f=/tmp/fetch.$$; mkfifo $f; nc -w 10 " + host + " " + std::to_string(port) +
         " < $f & p=$!; exec 3>$f; printf \"GET /hello?from=" + from +
         " HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n\" >&3; wait $p; rc=$?; exec 3>&-; rm -f $f; exit $rc)";
}
// Through the user-mode gateway, which is the host's loopback.
inline std::string fetch_cmd(int port, const std::string& from) {
  return fetch_cmd("10.0.2.2", port, from);
}

// `forkd fork <args> --json` of one child with one exposed port: its id and that port
// ({guest, host, address}); nullopt, with the test failed, when the CLI gave anything else.
struct ExposedChild {
  std::string id;
  nlohmann::json port;
};
inline std::optional<ExposedChild> fork_exposed_by_cli(std::vector<std::string> args) {
  args.insert(args.begin(), "fork");
  args.push_back("--json");
  auto r = run_cli(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  const bool one = j.is_object() && j["children"].is_array() && j["children"].size() == 1 &&
                   j["children"][0]["id"].is_string() && j["children"][0]["ports"].is_array() &&
                   j["children"][0]["ports"].size() == 1;
  EXPECT_TRUE(one) << r.out;
  if (r.exit_code != 0 || !one) return std::nullopt;
  return ExposedChild{j["children"][0]["id"], j["children"][0]["ports"][0]};
}

}  // namespace forkd::test

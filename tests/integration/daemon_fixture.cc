#include "integration/daemon_fixture.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <thread>

#include "base/files.h"
#include "engine/config.h"
#include "integration/vm_fixture.h"

namespace forkd::test {

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) ::close(fd);
    return 0;
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

std::optional<Child> start_daemon(int port, const std::string& token_file,
                                  std::vector<std::string> extra, const std::string& tls_ca) {
  std::vector<std::string> argv = {forkd_cli(),    "serve",
                                   "--listen",     "127.0.0.1:" + std::to_string(port),
                                   "--token-file", token_file};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto c = Child::spawn(argv);
  if (!c) return std::nullopt;
  std::unique_ptr<httplib::Client> https;
  if (!tls_ca.empty()) {
    https = std::make_unique<httplib::Client>("https://127.0.0.1:" + std::to_string(port));
    https->set_ca_cert_path(tls_ca.c_str());
    https->enable_server_certificate_verification(true);
  }
  httplib::Client plain("127.0.0.1", port);
  httplib::Client& cli = https ? *https : plain;
  for (int i = 0; i < 100; ++i) {
    if (auto r = cli.Get("/healthz"); r && r->status == 200) return std::move(*c);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  c->kill(SIGKILL);
  (void)c->wait();
  return std::nullopt;
}

::testing::AssertionResult TestDaemon::start(const std::string& home, const std::string& token_file,
                                             std::vector<std::string> extra) {
  token_ = engine::random_hex(32);
  token_file_ = home + "/" + token_file;
  if (auto w = write_file_atomic(token_file_, token_ + "\n", 0600); !w) {
    return ::testing::AssertionFailure() << "write token: " << w.error().describe();
  }
  port_ = free_port();
  if (port_ <= 0) return ::testing::AssertionFailure() << "no free loopback port";
  return restart(std::move(extra));
}

::testing::AssertionResult TestDaemon::restart(std::vector<std::string> extra) {
  if (child_) return ::testing::AssertionFailure() << "daemon on port " << port_ << " still runs";
  child_ = start_daemon(port_, token_file_, std::move(extra));
  if (!child_) {
    return ::testing::AssertionFailure()
           << "forkd serve on port " << port_ << " did not answer /healthz";
  }
  return ::testing::AssertionSuccess();
}

std::optional<int> TestDaemon::stop(int sig, std::chrono::seconds timeout) {
  if (!child_) return std::nullopt;
  child_->kill(sig);
  auto code = child_->wait(timeout);
  child_.reset();  // SIGKILLs and reaps a daemon that outlived the timeout
  if (!code) return std::nullopt;
  return *code;
}

httplib::Client TestDaemon::client(bool auth) const {
  return daemon_client(port_, auth ? token_ : "");
}

httplib::Client daemon_client(int port, const std::string& token) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(300, 0);
  if (!token.empty()) c.set_bearer_token_auth(token);
  return c;
}

httplib::Result post_json(httplib::Client& c, const std::string& path, const nlohmann::json& body) {
  return c.Post(path, body.dump(), "application/json");
}

std::string suspend_and_resume(httplib::Client& c, const std::string& name,
                               const nlohmann::json& suspend_body) {
  const std::string base = "/v1/workspaces/" + name;
  auto s = post_json(c, base + "/suspend", suspend_body);
  EXPECT_TRUE(s && s->status == 200) << (s ? s->body : httplib::to_string(s.error()));
  if (!s || s->status != 200) return "";
  auto r = c.Post(base + "/resume", "", "application/json");
  EXPECT_TRUE(r && r->status == 200) << (r ? r->body : httplib::to_string(r.error()));
  if (!r || r->status != 200) return "";
  auto id = body_json(r)["sandbox_id"];
  EXPECT_TRUE(id.is_string()) << r->body;
  return id.is_string() ? id.get<std::string>() : "";
}

nlohmann::json body_json(const httplib::Result& r) {
  if (!r) return nlohmann::json();
  return nlohmann::json::parse(r->body, nullptr, false);
}

void expect_error(const httplib::Result& r, int status, const std::string& needle) {
  ASSERT_TRUE(r) << "no response: " << httplib::to_string(r.error());
  EXPECT_EQ(r->status, status) << r->body;
  nlohmann::json j = body_json(r);
  ASSERT_TRUE(j.is_object() && j.contains("error") && j["error"].is_string()) << r->body;
  if (!needle.empty()) {
    EXPECT_NE(r->body.find(needle), std::string::npos) << r->body;
  }
}

}  // namespace forkd::test

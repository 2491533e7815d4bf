// `forkd serve --tls-cert/--tls-key`: a real daemon process serving HTTPS on a free loopback
// port with a self-signed certificate made by the openssl CLI. No VM is needed: /healthz and the
// tag list answer without one.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <memory>
#include <string>

#include "base/files.h"
#include "base/subprocess.h"
#include "engine/config.h"
#include "integration/daemon_fixture.h"
#include "integration/vm_fixture.h"

namespace forkd::test {
namespace {

class DaemonTls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!openssl_missing_reason().empty()) return;  // each test fails or skips with the reason
    auto dir = TempDir::create("forkd-tls-test");
    ASSERT_TRUE(dir) << dir.error().describe();
    dir_ = new TempDir(std::move(*dir));
    cert_ = dir_->path() + "/cert.pem";
    key_ = dir_->path() + "/key.pem";
    // A P-256 key is made in milliseconds; the SAN is what the client checks the host against.
    auto gen = run_capture(
        {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=forkd-test", "-addext",
         "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", key_, "-out", cert_},
        std::chrono::seconds(60));
    ASSERT_TRUE(gen) << gen.error().describe();
    ASSERT_EQ(gen->exit_code, 0) << gen->output;
    token_ = engine::random_hex(32);
    token_file_ = dir_->path() + "/token";
    ASSERT_TRUE(write_file_atomic(token_file_, token_ + "\n", 0600));
    port_ = free_port();
    ASSERT_GT(port_, 0);
    auto c = start_daemon(port_, token_file_, {"--tls-cert", cert_, "--tls-key", key_}, cert_);
    ASSERT_TRUE(c) << "TLS daemon did not answer /healthz over https";
    daemon_ = new Child(std::move(*c));
  }
  static void TearDownTestSuite() {
    if (daemon_) {
      daemon_->kill(SIGTERM);
      auto code = daemon_->wait(std::chrono::seconds(20));
      EXPECT_TRUE(code && *code == 0) << "daemon did not stop cleanly on SIGTERM";
      delete daemon_;  // SIGKILLs and reaps it if it is still there
      daemon_ = nullptr;
    }
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    FORKD_REQUIRE("openssl", openssl_missing_reason());
    ASSERT_NE(daemon_, nullptr);
  }

  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_); }

  static inline TempDir* dir_ = nullptr;
  static inline Child* daemon_ = nullptr;
  static inline std::string cert_, key_, token_, token_file_;
  static inline int port_ = 0;
};

TEST_F(DaemonTls, HealthzOverHttpsWithTheCaTrusted) {
  httplib::Client cli(url());
  cli.set_ca_cert_path(cert_.c_str());
  cli.enable_server_certificate_verification(true);
  auto r = cli.Get("/healthz");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200) << r->body;
}

TEST_F(DaemonTls, UntrustedCertificateIsRefusedByTheClient) {
  auto other = TempDir::create("forkd-tls-other");
  ASSERT_TRUE(other);
  std::string ca = other->path() + "/empty.pem";
  // An unrelated self-signed certificate: the daemon's must not verify against it.
  auto gen = run_capture({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                          "/CN=someone-else", "-keyout", other->path() + "/k.pem", "-out", ca},
                         std::chrono::seconds(60));
  ASSERT_TRUE(gen && gen->exit_code == 0);
  httplib::Client cli(url());
  cli.set_ca_cert_path(ca.c_str());
  cli.enable_server_certificate_verification(true);
  auto r = cli.Get("/healthz");
  EXPECT_FALSE(r) << "an untrusted certificate was accepted";
}

TEST_F(DaemonTls, PlainHttpToTheTlsPortGetsNo200) {
  httplib::Client cli("127.0.0.1", port_);
  cli.set_connection_timeout(5, 0);
  cli.set_read_timeout(5, 0);
  auto r = cli.Get("/healthz");
  if (r) {
    EXPECT_NE(r->status, 200) << r->body;
  }
}

TEST_F(DaemonTls, CliClientModeOverHttps) {
  auto ok = run_cli({"--url", url(), "images", "--json"},
                    {{"FORKD_TOKEN", token_}, {"FORKD_CA_CERT", cert_}}, 60);
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("\"tags\""), std::string::npos) << ok.out;

  // Without the CA the system store does not know the self-signed certificate.
  auto untrusted = run_cli({"--url", url(), "images"}, {{"FORKD_TOKEN", token_}}, 60);
  EXPECT_NE(untrusted.exit_code, 0);
  EXPECT_NE(untrusted.err.find("FORKD_CA_CERT"), std::string::npos) << untrusted.err;

  auto missing = run_cli({"--url", url(), "images"},
                         {{"FORKD_TOKEN", token_}, {"FORKD_CA_CERT", "/nonexistent/ca.pem"}}, 60);
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("/nonexistent/ca.pem"), std::string::npos) << missing.err;
}

// Start-up refusals: each must exit non-zero at once, naming the problem.
CliResult serve(std::vector<std::string> args) {
  std::vector<std::string> argv = {"serve", "--listen", "127.0.0.1:" + std::to_string(free_port())};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_cli(argv, {}, 30);
}

TEST_F(DaemonTls, CertWithoutKeyIsRefused) {
  auto r = serve({"--tls-cert", cert_});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.exit_code, -1) << "serve did not exit: " << r.err;
  EXPECT_NE(r.err.find("--tls-key"), std::string::npos) << r.err;
  auto k = serve({"--tls-key", key_});
  EXPECT_NE(k.exit_code, 0);
  EXPECT_NE(k.err.find("--tls-cert"), std::string::npos) << k.err;
}

TEST_F(DaemonTls, MissingCertFileIsRefused) {
  std::string missing = dir_->path() + "/no-such-cert.pem";
  auto r = serve({"--tls-cert", missing, "--tls-key", key_});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find(missing), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("No such file"), std::string::npos) << r.err;
}

TEST_F(DaemonTls, InvalidCertOrMismatchedKeyIsRefused) {
  std::string junk = dir_->path() + "/junk.pem";
  ASSERT_TRUE(write_file_atomic(junk, "not a certificate\n"));
  auto r = serve({"--tls-cert", junk, "--tls-key", key_});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find(junk), std::string::npos) << r.err;
  // The certificate as its own key: readable PEM, but not a private key.
  auto k = serve({"--tls-cert", cert_, "--tls-key", cert_});
  EXPECT_NE(k.exit_code, 0);
  EXPECT_NE(k.err.find("--tls-key " + cert_), std::string::npos) << k.err;
}

}  // namespace
}  // namespace forkd::test

// CLI client mode: `forkd --url URL VERB` against a real `forkd serve` on a free loopback port,
// with its token in FORKD_TOKEN.
#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

#include "integration/daemon_fixture.h"
#include "integration/vm_fixture.h"

namespace forkd::test {
namespace {

using Json = nlohmann::json;

class CliRemote : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!qemu_missing_reason().empty()) return;
    ASSERT_TRUE(daemon_.start(config().home, "cli-remote-token"));
  }
  static void TearDownTestSuite() {
    (void)daemon_.stop();
    (void)run_cli({"rm", "--all"});
  }
  void SetUp() override {
    FORKD_REQUIRE("qemu", qemu_missing_reason());
    ASSERT_TRUE(daemon_.running());
  }

  // forkd --url URL args..., with the token (or another one) in FORKD_TOKEN.
  static CliResult remote(std::vector<std::string> args,
                          const std::string& token = daemon_.token()) {
    args.insert(args.begin(), {"--url", daemon_.url()});
    return run_cli(args, {{"FORKD_TOKEN", token}});
  }

  static inline TestDaemon daemon_;
};

TEST_F(CliRemote, SnapshotForkPsExecRmImages) {
  auto snap = remote({"snapshot", "--tag", "clirem", "--memory", "128", "--force"});
  ASSERT_EQ(snap.exit_code, 0) << snap.err;
  EXPECT_NE(snap.out.find("tag clirem ready"), std::string::npos) << snap.out;

  auto fork = remote({"fork", "--tag", "clirem", "-n", "2", "--json"});
  ASSERT_EQ(fork.exit_code, 0) << fork.err;
  Json fj = Json::parse(fork.out, nullptr, false);
  ASSERT_TRUE(fj.is_object()) << fork.out;
  ASSERT_EQ(fj["children"].size(), 2u) << fork.out;
  std::vector<std::string> ids;
  for (const auto& c : fj["children"]) ids.push_back(c["id"].get<std::string>());

  auto ps = remote({"ps", "--json"});
  ASSERT_EQ(ps.exit_code, 0) << ps.err;
  Json pj = Json::parse(ps.out, nullptr, false);
  ASSERT_TRUE(pj.is_object()) << ps.out;
  for (const auto& id : ids) {
    bool found = false;
    for (const auto& s : pj["sandboxes"]) found = found || s["id"] == id;
    EXPECT_TRUE(found) << id << " missing from " << ps.out;
  }

  auto ex = remote({"exec", ids[0], "--", "sh", "-c", "echo hello-remote; echo oops >&2; exit 3"});
  EXPECT_EQ(ex.exit_code, 3) << ex.err;
  EXPECT_EQ(ex.out, "hello-remote\n");
  EXPECT_NE(ex.err.find("oops"), std::string::npos) << ex.err;

  auto exj = remote({"exec", "--json", ids[1], "--", "echo", "hi"});
  EXPECT_EQ(exj.exit_code, 0) << exj.err;
  Json ej = Json::parse(exj.out, nullptr, false);
  ASSERT_TRUE(ej.is_object()) << exj.out;
  EXPECT_EQ(ej["stdout"], "hi\n");
  EXPECT_EQ(ej["exit_code"], 0);

  auto missing = remote({"exec", "sb-nope", "--", "true"});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("not_found"), std::string::npos) << missing.err;

  auto rm = remote({"rm", "--all"});
  EXPECT_EQ(rm.exit_code, 0) << rm.err;
  for (const auto& id : ids) EXPECT_NE(rm.out.find(id), std::string::npos) << rm.out;
  auto ps2 = remote({"ps", "--json"});
  Json pj2 = Json::parse(ps2.out, nullptr, false);
  ASSERT_TRUE(pj2.is_object()) << ps2.out;
  EXPECT_TRUE(pj2["sandboxes"].empty()) << ps2.out;

  auto images = remote({"images", "--json"});
  ASSERT_EQ(images.exit_code, 0) << images.err;
  Json ij = Json::parse(images.out, nullptr, false);
  ASSERT_TRUE(ij.is_object()) << images.out;
  bool has_tag = false;
  for (const auto& t : ij["tags"]) has_tag = has_tag || t["tag"] == "clirem";
  EXPECT_TRUE(has_tag) << images.out;
  auto text = remote({"images"});
  EXPECT_NE(text.out.find("clirem"), std::string::npos) << text.out;

  auto rmi = remote({"rmi", "clirem"});
  EXPECT_EQ(rmi.exit_code, 0) << rmi.err;
  auto rmi2 = remote({"rmi", "clirem"});
  EXPECT_NE(rmi2.exit_code, 0);
  EXPECT_NE(rmi2.err.find("not_found"), std::string::npos) << rmi2.err;
}

TEST_F(CliRemote, WrongTokenIsUnauthorized) {
  auto r = remote({"ps"}, daemon_.token().substr(0, daemon_.token().size() - 1) + "x");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("unauthorized"), std::string::npos) << r.err;
  auto none = remote({"images"}, "");
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.err.find("FORKD_TOKEN"), std::string::npos) << none.err;
}

TEST_F(CliRemote, UnreachableDaemonIsAClearError) {
  int port = free_port();
  auto r = run_cli({"--url", "http://127.0.0.1:" + std::to_string(port), "ps"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("cannot reach forkd daemon at http://127.0.0.1:"), std::string::npos)
      << r.err;
  auto env = run_cli({"images"}, {{"FORKD_URL", "http://127.0.0.1:" + std::to_string(port)}});
  EXPECT_NE(env.exit_code, 0);
  EXPECT_NE(env.err.find("cannot reach forkd daemon"), std::string::npos) << env.err;
}

// snapshot --from over the API: fork, warm-up, branch, and the child is gone either way.
TEST_F(CliRemote, SnapshotFromBuildsALinkThroughTheDaemon) {
  auto base = remote({"snapshot", "--tag", "remfrom", "--memory", "128", "--force"});
  ASSERT_EQ(base.exit_code, 0) << base.err;
  auto link = remote({"snapshot", "--from", "remfrom", "--tag", "remlink", "--exec",
                      "echo warmed > /tmp/state", "--json"});
  ASSERT_EQ(link.exit_code, 0) << link.err;
  Json lj = Json::parse(link.out, nullptr, false);
  ASSERT_TRUE(lj.is_object()) << link.out;
  EXPECT_EQ(lj["tag"], "remlink");
  EXPECT_EQ(lj["status"], "ready");
  auto ps = remote({"ps", "--json"});
  Json pj = Json::parse(ps.out, nullptr, false);
  ASSERT_TRUE(pj.is_object()) << ps.out;
  EXPECT_TRUE(pj["sandboxes"].empty()) << "the warm-up child is deleted: " << ps.out;

  auto info = remote({"info", "remlink", "--json"});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  Json ij = Json::parse(info.out, nullptr, false);
  ASSERT_TRUE(ij.is_object()) << info.out;
  EXPECT_EQ(ij["parent_tag"], "remfrom");
  EXPECT_EQ(ij["chain_depth"], 1);

  auto fork = remote({"fork", "--tag", "remlink", "-n", "1"});
  ASSERT_EQ(fork.exit_code, 0) << fork.err;
  std::string id = fork.out.substr(0, fork.out.find('\n'));
  auto cat = remote({"exec", id, "--", "cat", "/tmp/state"});
  EXPECT_EQ(cat.exit_code, 0) << cat.err;
  EXPECT_EQ(cat.out, "warmed\n");
  EXPECT_EQ(remote({"rm", id}).exit_code, 0);

  // A failing warm-up step: non-zero exit naming the step, no tag, no child left.
  auto bad = remote({"snapshot", "--from", "remfrom", "--tag", "remfail", "--exec", "exit 7"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("exited 7"), std::string::npos) << bad.err;
  EXPECT_NE(remote({"info", "remfail"}).exit_code, 0) << "no tag remfail";
  auto forced = remote({"snapshot", "--from", "remfrom", "--tag", "x", "--force"});
  EXPECT_EQ(forced.exit_code, 2) << "bad usage";
  EXPECT_NE(forced.err.find("--force does not go with --from"), std::string::npos) << forced.err;
  auto ps2 = remote({"ps", "--json"});
  Json pj2 = Json::parse(ps2.out, nullptr, false);
  ASSERT_TRUE(pj2.is_object()) << ps2.out;
  EXPECT_TRUE(pj2["sandboxes"].empty()) << "the failed warm-up's child is deleted: " << ps2.out;
  (void)remote({"rmi", "--cascade", "remfrom"});
}

TEST_F(CliRemote, LocalOnlyVerbsAreRefused) {
  auto r = remote({"run", "--", "true"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("not supported with --url"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace forkd::test

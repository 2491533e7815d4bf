// The `resumed` op and connection generations, driven through the real forkd-agent binary over
// --listen-unix. The agent runs with --no-system-identity: the host's clock and hostname are never
// touched. The kernel RNG reseed is real (harmless with real random bytes).
#include <gtest/gtest.h>
#include <sys/random.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>

#include "server.h"
#include "test_client.h"

namespace forkd::agent {
namespace {

using namespace forkd::agent::testing;

std::string random_bytes(size_t n) {
  std::string s(n, '\0');
  size_t got = 0;
  while (got < n) got += static_cast<size_t>(::getrandom(s.data() + got, n - got, 0));
  return s;
}

std::string random_epoch() {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string e;
  for (unsigned char b : random_bytes(16)) {
    e.push_back(kHex[b >> 4]);
    e.push_back(kHex[b & 15]);
  }
  return e;
}

Json resumed_req(const std::string& epoch, const std::string& sandbox_id = "sb-1") {
  auto now = std::chrono::system_clock::now().time_since_epoch();
  return Json{{"op", "resumed"},
              {"epoch", epoch},
              {"sandbox_id", sandbox_id},
              {"hostname", "clone-1"},
              {"time_ns", std::chrono::duration_cast<std::chrono::nanoseconds>(now).count()}};
}

class AgentResumedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/agent-resumed-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    pid_ = start_agent(sock(), {"--no-system-identity"});
  }
  void TearDown() override {
    stop_agent(pid_);
    stop_agent(pid2_);
    std::string cmd = "rm -rf " + dir_;
    (void)std::system(cmd.c_str());
  }
  std::string sock() const { return dir_ + "/agent.sock"; }
  std::string dir_;
  pid_t pid_ = -1, pid2_ = -1;
};

TEST_F(AgentResumedTest, SetsIdentityForPingAndExec) {
  Client c(sock());
  ASSERT_TRUE(c.connected());
  Reply p = c.call({{"op", "ping"}});
  EXPECT_TRUE(p.final["sandbox_id"].is_null()) << p.final;
  EXPECT_TRUE(p.final["epoch"].is_null());
  const std::string epoch = random_epoch();
  Reply r = c.call(resumed_req(epoch, "sb_42"), random_bytes(64));
  ASSERT_EQ(r.final["ok"], true) << r.final;
  EXPECT_EQ(r.final["epoch"], epoch);
  EXPECT_EQ(r.final["reseeded"], ::geteuid() == 0) << r.final;
  EXPECT_EQ(r.final["clock_set"], false);
  EXPECT_TRUE(r.final["clock_error"].is_string());
  EXPECT_EQ(r.final["hostname_set"], false);
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  EXPECT_EQ(r.final["hostname"], host);  // untouched
  EXPECT_EQ(r.final["python_reseed_pending"], p.final["python"]) << r.final;
  p = c.call({{"op", "ping"}});
  EXPECT_EQ(p.final["sandbox_id"], "sb_42");
  EXPECT_EQ(p.final["epoch"], epoch);
  Reply e = c.call({{"op", "exec"}, {"shell", "echo $FORKD_SANDBOX_ID $FORKD_EPOCH"}});
  EXPECT_EQ(e.out, "sb_42 " + epoch + "\n");
  e = c.call({{"op", "exec"},
              {"shell", "echo $FORKD_SANDBOX_ID"},
              {"env", {{"FORKD_SANDBOX_ID", "mine"}}}});
  EXPECT_EQ(e.out, "mine\n");
  // A second restore of the same process (a clone of a clone) replaces both.
  const std::string epoch2 = random_epoch();
  ASSERT_EQ(c.call(resumed_req(epoch2, "sb_43"), random_bytes(32)).final["ok"], true);
  p = c.call({{"op", "ping"}});
  EXPECT_EQ(p.final["sandbox_id"], "sb_43");
  EXPECT_EQ(p.final["epoch"], epoch2);
}

TEST_F(AgentResumedTest, RejectsMalformedRequests) {
  Client c(sock());
  auto expect_bad = [&](Json req, std::string_view seed, const char* what) {
    Reply r = c.call(std::move(req), seed);
    EXPECT_EQ(r.final["ok"], false) << what;
    EXPECT_EQ(r.final["error"]["code"], "bad_request") << what << ": " << r.final;
  };
  const std::string seed = random_bytes(32);
  Json j = resumed_req("abc");
  expect_bad(j, seed, "short epoch");
  j = resumed_req(std::string(32, 'g'));
  expect_bad(j, seed, "non-hex epoch");
  j = resumed_req(random_epoch());
  j["hostname"] = "bad.host";
  expect_bad(j, seed, "hostname");
  j = resumed_req(random_epoch(), "a b");
  expect_bad(j, seed, "sandbox_id");
  j = resumed_req(random_epoch());
  j["time_ns"] = "now";
  expect_bad(j, seed, "time_ns type");
  j = resumed_req(random_epoch());
  expect_bad(j, random_bytes(31), "seed too short");
  expect_bad(j, random_bytes(513), "seed too long");
  expect_bad(j, "", "no seed");
  // Rejected requests leave no identity behind.
  EXPECT_TRUE(c.call({{"op", "ping"}}).final["sandbox_id"].is_null());
}

TEST_F(AgentResumedTest, ReseedsPythonWorkers) {
  Client a(sock());
  if (a.call({{"op", "ping"}}).final["python"] != true) GTEST_SKIP() << "no python3";
  const std::string sock2 = dir_ + "/agent2.sock";
  pid2_ = start_agent(sock2, {"--no-system-identity"});
  Client b(sock2);
  ASSERT_TRUE(b.connected());
  // Both workers in the same PRNG state, as two clones of one snapshot would be.
  const Json seed42 = {{"op", "eval"}, {"code", "import random; random.seed(42)"}};
  const Json draw = {{"op", "eval"}, {"code", "random.random()"}};
  ASSERT_EQ(a.call(seed42).final["ok"], true);
  const Json unseeded = a.call(draw).final["value"];
  ASSERT_EQ(b.call(seed42).final["ok"], true);
  EXPECT_EQ(b.call(draw).final["value"], unseeded);  // the control: same state, same numbers
  // A fake numpy records what the worker does to the legacy global RNG.
  ASSERT_EQ(a.call({{"op", "eval"},
                    {"code",
                     "import sys, types\ncalls = []\nfake = types.ModuleType('numpy')\n"
                     "fake.random = types.SimpleNamespace(seed=lambda s: calls.append(s))\n"
                     "sys.modules['numpy'] = fake"}})
                .final["error"],
            nullptr);
  ASSERT_EQ(a.call(seed42).final["ok"], true);
  ASSERT_EQ(b.call(seed42).final["ok"], true);
  Reply ra = a.call(resumed_req(random_epoch(), "clone-a"), random_bytes(32));
  Reply rb = b.call(resumed_req(random_epoch(), "clone-b"), random_bytes(32));
  EXPECT_EQ(ra.final["python_reseed_pending"], true) << ra.final;
  EXPECT_EQ(rb.final["python_reseed_pending"], true) << rb.final;
  const Json va = a.call(draw).final["value"], vb = b.call(draw).final["value"];
  EXPECT_NE(va, vb);
  EXPECT_NE(va, unseeded);
  EXPECT_NE(vb, unseeded);
  Reply np = a.call({{"op", "eval"}, {"code", "[len(calls), len(calls[0]), type(calls[0][0])]"}});
  EXPECT_EQ(np.final["value"], "[1, 8, <class 'int'>]") << np.final;
  Reply env = b.call({{"op", "eval"}, {"code", "__import__('os').environ['FORKD_SANDBOX_ID']"}});
  EXPECT_EQ(env.final["value"], "'clone-b'") << env.final;
}

TEST_F(AgentResumedTest, PythonReseedIsBoundedAndCatchesUp) {
  Client c(sock());
  if (c.call({{"op", "ping"}}).final["python"] != true) GTEST_SKIP() << "no python3";
  ASSERT_EQ(c.call({{"op", "eval"}, {"code", "import random; random.seed(7)"}}).final["ok"], true);
  const Json control = c.call({{"op", "eval"}, {"code", "random.random()"}}).final["value"];
  // An eval still running from before the snapshot holds the worker.
  c.send({{"op", "eval"}, {"code", "import time; time.sleep(3); random.seed(7)"}});
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto t0 = std::chrono::steady_clock::now();
  Reply r = c.call(resumed_req(random_epoch()), random_bytes(32));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(2500));
  EXPECT_EQ(r.final["ok"], true);
  EXPECT_EQ(r.final["python_reseed_pending"], true) << r.final;
  // The next eval runs after the pending reseed.
  Reply v = c.call({{"op", "eval"}, {"code", "random.random()"}});
  EXPECT_NE(v.final["value"], control) << v.final;
}

TEST_F(AgentResumedTest, RepliesNeverReachANewerConnection) {
  uint64_t old_id;
  {
    Client a(sock());
    old_id = a.send({{"op", "exec"}, {"shell", "sleep 0.5; echo old"}});
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }  // the host goes away while the exec runs
  Client b(sock());
  ASSERT_EQ(b.call({{"op", "ping"}}).final["ok"], true);
  for (const Json& j : b.collect_for(1000)) EXPECT_NE(j["id"], old_id) << j;
}

TEST_F(AgentResumedTest, ResumedCutsOffEarlierRequests) {
  // A virtio port can hide a close+open that land together; `resumed` is the cut then.
  Client c(sock());
  uint64_t old_id = c.send({{"op", "exec"}, {"shell", "sleep 0.5; echo old"}});
  Reply r = c.call(resumed_req(random_epoch()), random_bytes(32));
  EXPECT_EQ(r.final["ok"], true);
  uint64_t after = c.send({{"op", "ping"}});
  bool got_after = false;
  // The old exec ends within the first round; later rounds only wait out a loaded machine.
  for (int round = 0; round < 5 && !got_after; round++) {
    for (const Json& j : c.collect_for(1200)) {
      EXPECT_NE(j["id"], old_id) << j;
      if (j["id"] == after) got_after = true;
    }
  }
  EXPECT_TRUE(got_after);
}

TEST_F(AgentResumedTest, ResumedIsNeverBusy) {
  Client c(sock());
  for (int i = 0; i < 64; ++i) c.send({{"op", "exec"}, {"argv", {"sleep", "2"}}});
  Json ping = c.call({{"op", "ping"}}).final;
  EXPECT_EQ(ping["error"]["code"], "busy") << ping;
  Reply r = c.call(resumed_req(random_epoch()), random_bytes(32));
  EXPECT_EQ(r.final["ok"], true) << r.final;
}

// The session lane holds kLaneDepth requests; a flood beyond it gets threads of its own. Each
// `resumed` cuts off the replies of the ones before it, so only the last must be answered, and
// the agent answers other requests after.
TEST_F(AgentResumedTest, FloodOfSessionRequestsLeavesTheAgentAnswering) {
  Client c(sock());
  const std::string last_epoch = random_epoch();
  uint64_t last = 0;
  const int n = 3 * static_cast<int>(kLaneDepth);
  for (int i = 0; i < n; ++i) {
    last = c.send(resumed_req(i + 1 < n ? random_epoch() : last_epoch), random_bytes(32));
  }
  Reply r = c.wait(last);
  EXPECT_EQ(r.final["ok"], true) << r.final;
  EXPECT_EQ(r.final["epoch"], last_epoch);
  Json ping = c.call({{"op", "ping"}}).final;
  EXPECT_EQ(ping["ok"], true) << ping;
}

}  // namespace
}  // namespace forkd::agent

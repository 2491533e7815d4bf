#include "engine/agent_client.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "base/files.h"
#include "proto/frame.h"

namespace forkd::engine {
namespace {

// A fake agent on the other end of a socketpair: answers each request with a script.
class FakeAgent {
 public:
  using Handler = std::function<void(FakeAgent&, const Json& req, const std::string& bin)>;
  FakeAgent(UniqueFd fd, Handler h) : fd_(std::move(fd)), handler_(std::move(h)) {
    thread_ = std::jthread([this] { loop(); });
  }
  ~FakeAgent() { ::shutdown(fd_.get(), SHUT_RDWR); }
  // A client that already got what it wanted may have closed its end: what the fake still
  // writes then goes nowhere (EPIPE, no SIGPIPE), which is no failure of the test.
  void send(const Json& j, std::string_view bin = {}) {
    auto f = proto::encode_frame(j.dump(), bin);
    ASSERT_TRUE(f);
    send_raw(*f);
  }
  void send_raw(std::string_view raw) {
    while (!raw.empty()) {
      ssize_t n = ::send(fd_.get(), raw.data(), raw.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      raw.remove_prefix(static_cast<size_t>(n));
    }
  }

 private:
  void loop() {
    proto::FrameDecoder d;
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(fd_.get(), buf, sizeof buf);
      if (n <= 0) return;
      d.feed(std::string_view(buf, static_cast<size_t>(n)));
      while (auto f = d.next()) {
        if (!*f) continue;
        Json req = Json::parse((*f)->json, nullptr, false);
        handler_(*this, req, (*f)->bin);
      }
    }
  }
  UniqueFd fd_;
  Handler handler_;
  std::jthread thread_;
};

std::pair<UniqueFd, UniqueFd> socket_pair() {
  int sv[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

TEST(AgentClient, RepliesAndStreamEventsAreRoutedById) {
  auto [a, b] = socket_pair();
  FakeAgent agent(std::move(b), [](FakeAgent& self, const Json& req, const std::string& bin) {
    uint64_t id = req["id"];
    if (req["op"] == "exec") {
      self.send({{"id", id}, {"event", "stdout"}}, "hello ");
      self.send({{"id", id}, {"event", "stderr"}}, "oops");
      self.send({{"id", id}, {"event", "stdout"}}, "world");
      self.send({{"id", id}, {"ok", true}, {"exit_code", 3}});
    } else {
      self.send({{"id", id}, {"ok", true}, {"echo", bin}});
    }
  });
  auto client = AgentClient::from_fd(std::move(a));
  std::string out, err;
  auto r = client->call(
      {{"op", "exec"}}, {}, std::chrono::seconds(5),
      [&](const std::string& s, std::string_view d) { (s == "stdout" ? out : err).append(d); });
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->json["exit_code"], 3);
  EXPECT_EQ(out, "hello world");
  EXPECT_EQ(err, "oops");
  auto e = client->call({{"op", "echo"}}, "payload", std::chrono::seconds(5));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->json["echo"], "payload");
}

TEST(AgentClient, ConcurrentCallsAnsweredOutOfOrder) {
  auto [a, b] = socket_pair();
  std::mutex mu;
  std::vector<uint64_t> held;
  FakeAgent agent(std::move(b), [&](FakeAgent& self, const Json& req, const std::string&) {
    std::lock_guard lock(mu);
    held.push_back(req["id"].get<uint64_t>());
    if (held.size() == 8) {  // answer all in reverse order
      for (auto it = held.rbegin(); it != held.rend(); ++it) {
        self.send({{"id", *it}, {"ok", true}, {"n", *it}});
      }
    }
  });
  auto client = AgentClient::from_fd(std::move(a));
  std::vector<std::jthread> threads;
  std::atomic<int> good{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      auto r = client->call({{"op", "x"}}, {}, std::chrono::seconds(10));
      if (r && r->json["n"] == r->json["id"]) ++good;
    });
  }
  threads.clear();
  EXPECT_EQ(good.load(), 8);
}

TEST(AgentClient, ErrorReplyMapsCode) {
  auto [a, b] = socket_pair();
  FakeAgent agent(std::move(b), [](FakeAgent& self, const Json& req, const std::string&) {
    self.send({{"id", req["id"]},
               {"ok", false},
               {"error", {{"code", "not_found"}, {"message", "command not found: foo"}}}});
  });
  auto client = AgentClient::from_fd(std::move(a));
  auto r = client->call({{"op", "exec"}}, {}, std::chrono::seconds(5));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(r.error().message(), "command not found: foo");
}

TEST(AgentClient, TimeoutAndGarbageAndClose) {
  auto [a, b] = socket_pair();
  FakeAgent agent(std::move(b), [](FakeAgent& self, const Json&, const std::string&) {
    self.send_raw("this is not a frame");  // never answers properly
  });
  auto client = AgentClient::from_fd(std::move(a));
  auto r = client->call({{"op", "ping"}}, {}, std::chrono::milliseconds(200));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kAgentTimeout);
  EXPECT_TRUE(client->connected());
}

TEST(AgentClient, PeerCloseFailsPendingCall) {
  auto [a, b] = socket_pair();
  auto client = AgentClient::from_fd(std::move(a));
  std::jthread closer([fd = std::move(b)]() mutable {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    fd.reset();
  });
  auto r = client->call({{"op", "ping"}}, {}, std::chrono::seconds(10));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kAgentError);
  EXPECT_FALSE(client->connected());
}

// An agent that stops reading: the client's writes fill the socket and the stream is given up
// within the write deadline, instead of a caller blocking forever holding the write lock.
TEST(AgentClient, AnAgentThatStopsReadingFailsCallersWithinTheWriteDeadline) {
  auto [a, b] = socket_pair();  // b is never read
  AgentDeadlines d;
  d.write = std::chrono::milliseconds(300);
  auto client = AgentClient::from_fd(std::move(a), d);
  std::string big(proto::kMaxBinLen, 'x');
  auto t0 = std::chrono::steady_clock::now();
  Result<AgentReply> r = make_error(ErrorCode::kInternal, "not run");
  for (int i = 0; i < 20 && (r || r.error().code() != ErrorCode::kAgentTimeout); ++i) {
    r = client->call({{"op", "file_write"}}, big, std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kAgentTimeout);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_TRUE(client->stalled());
  EXPECT_FALSE(client->connected());
  auto after = client->call({{"op", "ping"}}, {}, std::chrono::seconds(5));
  ASSERT_FALSE(after);
  EXPECT_NE(after.error().message().find("stopped reading"), std::string::npos);
}

// An agent that reads but stops answering anything: a long call notices through the heartbeat
// and fails long before its own deadline.
TEST(AgentClient, HeartbeatUnansweredFailsALongCall) {
  auto [a, b] = socket_pair();
  FakeAgent agent(std::move(b), [](FakeAgent&, const Json&, const std::string&) {});  // silent
  AgentDeadlines d;
  d.probe_interval = std::chrono::milliseconds(100);
  d.probe_timeout = std::chrono::milliseconds(200);
  auto client = AgentClient::from_fd(std::move(a), d);
  auto t0 = std::chrono::steady_clock::now();
  auto r = client->call({{"op", "exec"}}, {}, std::chrono::seconds(60));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kAgentTimeout);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_TRUE(client->stalled());
}

// A live agent answers the heartbeat (an old one with unknown_op, which counts too): a long
// call keeps waiting for its real reply.
TEST(AgentClient, HeartbeatAnsweredKeepsALongCallWaiting) {
  auto [a, b] = socket_pair();
  std::atomic<int> beats{0};
  std::atomic<uint64_t> exec_id{0};
  FakeAgent agent(std::move(b), [&](FakeAgent& self, const Json& req, const std::string&) {
    if (req["op"] == "heartbeat") {
      ++beats;
      self.send({{"id", req["id"]},
                 {"ok", false},
                 {"error", {{"code", "unknown_op"}, {"message", "unknown op"}}}});
      if (beats == 3) self.send({{"id", exec_id.load()}, {"ok", true}, {"exit_code", 0}});
    } else {
      exec_id = req["id"].get<uint64_t>();
    }
  });
  AgentDeadlines d;
  d.probe_interval = std::chrono::milliseconds(100);
  d.probe_timeout = std::chrono::milliseconds(500);
  auto client = AgentClient::from_fd(std::move(a), d);
  auto r = client->call({{"op", "exec"}}, {}, std::chrono::seconds(30));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_GE(beats.load(), 3);
  EXPECT_FALSE(client->stalled());
}

// A streaming caller that consumes slowly keeps the reader busy, so heartbeat answers queue up
// behind its events: that is host back-pressure, not a dead agent.
TEST(AgentClient, ASlowStreamingCallerIsNotTakenForADeadAgent) {
  auto [a, b] = socket_pair();
  FakeAgent agent(std::move(b), [](FakeAgent& self, const Json& req, const std::string&) {
    if (req["op"] == "heartbeat") {
      self.send({{"id", req["id"]}, {"ok", true}});
      return;
    }
    for (int i = 0; i < 8; ++i) self.send({{"id", req["id"]}, {"event", "stdout"}}, "chunk");
    self.send({{"id", req["id"]}, {"ok", true}, {"exit_code", 0}});
  });
  AgentDeadlines d;
  d.probe_interval = std::chrono::milliseconds(100);
  d.probe_timeout = std::chrono::milliseconds(200);
  auto client = AgentClient::from_fd(std::move(a), d);
  int chunks = 0;
  auto r = client->call({{"op", "exec"}}, {}, std::chrono::seconds(30),
                        [&](const std::string&, std::string_view) {
                          ++chunks;
                          std::this_thread::sleep_for(std::chrono::milliseconds(300));
                        });
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(chunks, 8);
  EXPECT_FALSE(client->stalled());
}

// Events keep arriving after a caller gave up: they must never reach its (gone) callback.
TEST(AgentClient, NoEventReachesACallerThatReturned) {
  auto [a, b] = socket_pair();
  std::atomic<uint64_t> id{0};
  FakeAgent agent(std::move(b), [&](FakeAgent&, const Json& req, const std::string&) {
    id = req["id"].get<uint64_t>();
  });
  auto client = AgentClient::from_fd(std::move(a));
  auto alive = std::make_shared<std::atomic<bool>>(true);
  std::atomic<int> after_return{0};
  auto r = client->call({{"op", "exec"}}, {}, std::chrono::milliseconds(100),
                        [alive, &after_return](const std::string&, std::string_view) {
                          if (!*alive) ++after_return;
                        });
  *alive = false;
  ASSERT_FALSE(r);
  for (int i = 0; i < 50; ++i) agent.send({{"id", id.load()}, {"event", "stdout"}}, "late");
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(after_return.load(), 0);
}

// A forged flood: frames for ids nobody asked for, garbage, and a second final reply. The
// client stays usable and its memory bounded.
TEST(AgentClient, ForgedFramesAreIgnored) {
  auto [a, b] = socket_pair();
  FakeAgent agent(std::move(b), [](FakeAgent& self, const Json& req, const std::string&) {
    for (int i = 0; i < 200; ++i) self.send({{"id", 424242 + i}, {"ok", true}}, "junk");
    self.send({{"id", "not a number"}, {"ok", true}});
    self.send({{"id", req["id"]}, {"ok", true}, {"n", 1}});
    self.send({{"id", req["id"]}, {"ok", true}, {"n", 2}});  // a second final reply
  });
  auto client = AgentClient::from_fd(std::move(a));
  auto r = client->call({{"op", "ping"}}, {}, std::chrono::seconds(5));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->json["n"], 1);
  auto again = client->call({{"op", "ping"}}, {}, std::chrono::seconds(5));
  ASSERT_TRUE(again);
}

// A reply nested 400k levels deep (just under the 1 MiB frame limit) with the right id: copying
// such a value would recurse once per level and overflow the reader's stack. It is dropped
// as malformed, and the real reply that follows is delivered.
TEST(AgentClient, ADeeplyNestedReplyIsDroppedNotFollowed) {
  auto [a, b] = socket_pair();
  FakeAgent agent(std::move(b), [](FakeAgent& self, const Json& req, const std::string&) {
    std::string id = req["id"].dump();
    constexpr size_t kDepth = 400000;
    std::string deep = "{\"id\":" + id + ",\"ok\":true,\"x\":" + std::string(kDepth, '[') +
                       std::string(kDepth, ']') + "}";
    auto f = proto::encode_frame(deep, {});
    ASSERT_TRUE(f) << f.error().describe();
    self.send_raw(*f);
    self.send({{"id", req["id"]}, {"ok", true}, {"n", 1}});
  });
  auto client = AgentClient::from_fd(std::move(a));
  auto r = client->call({{"op", "ping"}}, {}, std::chrono::seconds(5));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->json["n"], 1);
}

}  // namespace
}  // namespace forkd::engine

#include "vmm/qmp_client.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <thread>

#include "base/files.h"
#include "base/subprocess.h"
#include "vmm/qemu_cmdline.h"

namespace forkd::vmm {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

// ---- parse_qmp_message ----

TEST(ParseQmpMessage, Greeting) {
  auto m = parse_qmp_message(R"({"QMP": {"version": {"qemu": {"major": 7}}, "capabilities": []}})");
  ASSERT_TRUE(m) << m.error().describe();
  EXPECT_EQ(m->kind, QmpMessage::Kind::kGreeting);
  EXPECT_EQ(m->body["version"]["qemu"]["major"], 7);
}

TEST(ParseQmpMessage, ReturnWithId) {
  auto m = parse_qmp_message(R"({"return": {"status": "running"}, "id": "7"})");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->kind, QmpMessage::Kind::kReturn);
  EXPECT_EQ(m->body["status"], "running");
  EXPECT_EQ(m->id, "7");
}

TEST(ParseQmpMessage, ReturnWithoutIdOrNumericId) {
  auto m = parse_qmp_message(R"({"return": {}})");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->id, "");
  auto n = parse_qmp_message(R"({"return": [], "id": 12})");
  ASSERT_TRUE(n);
  EXPECT_EQ(n->id, "12");
}

TEST(ParseQmpMessage, Error) {
  auto m = parse_qmp_message(R"({"error": {"class": "GenericError", "desc": "no"}, "id": "3"})");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->kind, QmpMessage::Kind::kError);
  EXPECT_EQ(m->body["desc"], "no");
  EXPECT_EQ(m->id, "3");
}

TEST(ParseQmpMessage, Event) {
  auto m =
      parse_qmp_message(R"({"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}})");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->kind, QmpMessage::Kind::kEvent);
  EXPECT_EQ(m->body["event"], "STOP");
}

TEST(ParseQmpMessage, MalformedAndWrongShapes) {
  for (const char* bad : {"", "{", "not json", "[1,2]", "\"str\"", "42", "{}", R"({"foo": 1})",
                          R"({"error": "x"})", R"({"event": 5})", R"({"QMP": []})"}) {
    auto m = parse_qmp_message(bad);
    ASSERT_FALSE(m) << bad;
    EXPECT_EQ(m.error().code(), ErrorCode::kProtocol) << bad;
  }
}

// ---- QmpClient against a fake server ----

// Reads one '\n'-terminated line from fd (byte at a time: test-only simplicity). Empty on EOF.
std::string read_line(int fd) {
  std::string line;
  char c;
  while (::read(fd, &c, 1) == 1) {
    if (c == '\n') return line;
    line.push_back(c);
  }
  return line;
}

void write_str(int fd, const std::string& s) { ASSERT_TRUE(write_all(fd, s)); }

Json read_command(int fd) { return Json::parse(read_line(fd), nullptr, false); }

constexpr const char* kGreeting =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}}, "
    "\"capabilities\": [\"oob\"]}}\r\n";

// Greets, answers qmp_capabilities, then hands the connection to script.
void greet_and_negotiate(int fd) {
  write_str(fd, kGreeting);
  Json caps = read_command(fd);
  ASSERT_EQ(caps["execute"], "qmp_capabilities");
  write_str(fd, R"({"return": {}, "id": )" + caps["id"].dump() + "}\r\n");
}

class FakeQmpServer {
 public:
  // Listens on <dir>/qmp.sock (after delay) and runs script on the first connection.
  FakeQmpServer(const std::string& dir, std::function<void(int)> script,
                std::chrono::milliseconds delay = 0ms)
      : path_(dir + "/qmp.sock") {
    thread_ = std::jthread([this, script = std::move(script), delay] {
      std::this_thread::sleep_for(delay);
      UniqueFd lfd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      path_.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
      ASSERT_EQ(::bind(lfd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
      ASSERT_EQ(::listen(lfd.get(), 1), 0);
      UniqueFd cfd(::accept4(lfd.get(), nullptr, nullptr, SOCK_CLOEXEC));
      ASSERT_TRUE(cfd);
      script(cfd.get());
    });
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::jthread thread_;
};

class QmpClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::create("qmp-test");
    ASSERT_TRUE(d);
    dir_.emplace(std::move(*d));
  }
  const std::string& dir() { return dir_->path(); }
  std::optional<TempDir> dir_;
};

TEST_F(QmpClientTest, NegotiatesAndRunsCommandWithInterleavedEvents) {
  FakeQmpServer server(dir(), [](int fd) {
    greet_and_negotiate(fd);
    Json cmd = read_command(fd);
    EXPECT_EQ(cmd["execute"], "migrate-set-capabilities");
    EXPECT_EQ(cmd["arguments"]["x"], 1);
    write_str(fd, R"({"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 0}})"
                  "\r\n");
    write_str(fd, R"({"return": {"stale": true}, "id": "old"})"
                  "\r\n");  // ignored: wrong id
    write_str(fd, R"({"return": {"ok": 1}, "id": )" + cmd["id"].dump() + "}\r\n");
    read_line(fd);  // wait for the client to go away
  });
  auto client = QmpClient::connect(server.path(), 2s);
  ASSERT_TRUE(client) << client.error().describe();
  auto r = client->execute("migrate-set-capabilities", Json{{"x", 1}});
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ((*r)["ok"], 1);
  auto events = client->take_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0]["event"], "RESUME");
  EXPECT_TRUE(client->take_events().empty());
}

TEST_F(QmpClientTest, CommandWithoutArgumentsOmitsThem) {
  FakeQmpServer server(dir(), [](int fd) {
    greet_and_negotiate(fd);
    Json cmd = read_command(fd);
    EXPECT_FALSE(cmd.contains("arguments"));
    write_str(fd, R"({"return": {"status": "running"}, "id": )" + cmd["id"].dump() + "}\n");
    read_line(fd);
  });
  auto client = QmpClient::connect(server.path(), 2s);
  ASSERT_TRUE(client);
  auto r = client->execute("query-status");
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["status"], "running");
}

TEST_F(QmpClientTest, ErrorReplyIsQemuFailed) {
  FakeQmpServer server(dir(), [](int fd) {
    greet_and_negotiate(fd);
    Json cmd = read_command(fd);
    write_str(fd, R"({"error": {"class": "GenericError", "desc": "boom"}, "id": )" +
                      cmd["id"].dump() + "}\r\n");
    read_line(fd);
  });
  auto client = QmpClient::connect(server.path(), 2s);
  ASSERT_TRUE(client);
  auto r = client->execute("cont");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kQemuFailed);
  EXPECT_EQ(r.error().message(), "cont: GenericError: boom");
}

TEST_F(QmpClientTest, NoReplyTimesOut) {
  FakeQmpServer server(dir(), [](int fd) {
    greet_and_negotiate(fd);
    read_command(fd);
    read_line(fd);  // never answers; returns when the client closes
  });
  auto client = QmpClient::connect(server.path(), 2s);
  ASSERT_TRUE(client);
  auto start = std::chrono::steady_clock::now();
  auto r = client->execute("stop", Json::object(), 100ms);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kTimeout);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  ::shutdown(client->fd(), SHUT_RDWR);  // unblocks the server
}

TEST_F(QmpClientTest, EofIsQemuFailed) {
  FakeQmpServer server(dir(), [](int fd) {
    greet_and_negotiate(fd);
    read_command(fd);  // then close without replying
  });
  auto client = QmpClient::connect(server.path(), 2s);
  ASSERT_TRUE(client);
  auto r = client->execute("quit");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kQemuFailed);
  EXPECT_THAT(r.error().message(), HasSubstr("closed"));
}

TEST_F(QmpClientTest, MissingGreetingIsProtocolError) {
  FakeQmpServer server(dir(), [](int fd) { write_str(fd, "{\"return\": {}}\r\n"); });
  auto client = QmpClient::connect(server.path(), 2s);
  ASSERT_FALSE(client);
  EXPECT_EQ(client.error().code(), ErrorCode::kProtocol);
}

TEST_F(QmpClientTest, ConnectRetriesUntilSocketAppears) {
  FakeQmpServer server(
      dir(), [](int fd) { greet_and_negotiate(fd); }, 100ms);
  auto client = QmpClient::connect(server.path(), 3s);
  EXPECT_TRUE(client) << client.error().describe();
}

TEST_F(QmpClientTest, ConnectTimesOutWithoutServer) {
  auto start = std::chrono::steady_clock::now();
  auto client = QmpClient::connect(dir() + "/absent.sock", 50ms);
  ASSERT_FALSE(client);
  EXPECT_EQ(client.error().code(), ErrorCode::kTimeout);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
}

TEST_F(QmpClientTest, WaitEventTakesQueuedThenArriving) {
  FakeQmpServer server(dir(), [](int fd) {
    greet_and_negotiate(fd);
    Json cmd = read_command(fd);
    write_str(fd, "{\"event\": \"STOP\"}\r\n{\"event\": \"A\"}\r\n");
    write_str(fd, R"({"return": {}, "id": )" + cmd["id"].dump() + "}\r\n");
    std::this_thread::sleep_for(20ms);
    write_str(fd,
              "{\"event\": \"B\"}\r\n{\"event\": \"MIGRATION\", \"data\": {\"status\": "
              "\"completed\"}}\r\n");
    read_line(fd);
  });
  auto client = QmpClient::connect(server.path(), 2s);
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->execute("stop"));
  auto stop = client->wait_event("STOP", 100ms);  // already queued
  ASSERT_TRUE(stop);
  EXPECT_EQ((*stop)["event"], "STOP");
  auto mig = client->wait_event("MIGRATION", 2s);  // arrives later, after B
  ASSERT_TRUE(mig) << mig.error().describe();
  EXPECT_EQ((*mig)["data"]["status"], "completed");
  auto rest = client->take_events();
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0]["event"], "A");
  EXPECT_EQ(rest[1]["event"], "B");
  auto none = client->wait_event("NEVER", 30ms);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code(), ErrorCode::kTimeout);
}

TEST_F(QmpClientTest, ExecuteWithFdPassesDescriptor) {
  int pipefd[2];
  ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
  UniqueFd rd(pipefd[0]), wr(pipefd[1]);
  FakeQmpServer server(dir(), [](int fd) {
    greet_and_negotiate(fd);
    char buf[4096];
    iovec iov{buf, sizeof(buf)};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    ASSERT_GT(n, 0);
    cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    ASSERT_NE(cm, nullptr);
    ASSERT_EQ(cm->cmsg_type, SCM_RIGHTS);
    int passed;
    std::memcpy(&passed, CMSG_DATA(cm), sizeof(int));
    UniqueFd got(passed);
    ASSERT_TRUE(write_all(got.get(), "via-scm"));
    Json cmd = Json::parse(std::string(buf, static_cast<size_t>(n)), nullptr, false);
    EXPECT_EQ(cmd["execute"], "getfd");
    EXPECT_EQ(cmd["arguments"]["fdname"], "vmstate");
    write_str(fd, R"({"return": {}, "id": )" + cmd["id"].dump() + "}\r\n");
    read_line(fd);
  });
  auto client = QmpClient::connect(server.path(), 2s);
  ASSERT_TRUE(client);
  auto r = client->execute_with_fd("getfd", Json{{"fdname", "vmstate"}}, wr.get());
  ASSERT_TRUE(r) << r.error().describe();
  char buf[16] = {};
  ASSERT_EQ(::read(rd.get(), buf, sizeof(buf)), 7);
  EXPECT_STREQ(buf, "via-scm");
}

// The bytes that arrive on fd within wait, up to max (no line framing: an armed command has no
// newline).
std::string read_for(int fd, std::chrono::milliseconds wait, size_t max = 4096) {
  std::string got;
  const auto end = std::chrono::steady_clock::now() + wait;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left.count() <= 0 || got.size() >= max) return got;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return got;
    char buf[256];
    ssize_t n = ::read(fd, buf, std::min(sizeof(buf), max - got.size()));
    if (n <= 0) return got;
    got.append(buf, static_cast<size_t>(n));
  }
}

TEST_F(QmpClientTest, ArmSendsAllButTheClosingBraceAndFireSendsIt) {
  FakeQmpServer server(dir(), [](int fd) {
    greet_and_negotiate(fd);
    std::string armed = read_for(fd, 200ms);
    EXPECT_EQ(armed, R"({"execute":"cont","id":2)");  // ids are numbers, the brace held back
    std::string fired = read_for(fd, 2000ms, 2);
    EXPECT_EQ(fired, "}\n");
    write_str(fd, R"({"return": {}, "id": 2})"
                  "\r\n");
    std::string next = read_for(fd, 200ms);
    EXPECT_EQ(next, R"({"execute":"stop","id":3)");
    const std::string disarm = ",\"forkd-disarmed\":true}\n";
    EXPECT_EQ(read_for(fd, 2000ms, disarm.size()), disarm);
    write_str(fd, R"({"id": 3, "error": {"class": "GenericError", "desc": "unexpected"}})"
                  "\r\n");
    read_line(fd);
  });
  auto client = QmpClient::connect(server.path(), 2s);
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->arm("cont"));
  EXPECT_TRUE(client->armed());
  std::this_thread::sleep_for(300ms);
  auto r = client->fire();
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_FALSE(client->armed());
  ASSERT_TRUE(client->arm("stop"));
  std::this_thread::sleep_for(300ms);
  auto d = client->disarm();
  EXPECT_TRUE(d) << d.error().describe();
  auto none = client->fire();
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code(), ErrorCode::kInternal);
}

// QEMU itself: an armed command stays unrun until fired, and one disarmed (here by the next
// execute) never runs.
TEST_F(QmpClientTest, RealQemuHoldsAnArmedCommandUntilFired) {
  const std::string qemu = default_qemu_binary();
  if (find_in_path(qemu).empty() && ::access(qemu.c_str(), X_OK) != 0) {
    GTEST_SKIP() << qemu << " not installed";
  }
  const std::string sock = dir() + "/real.sock";
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string qmp = "unix:" + sock + ",server=on,wait=off";
    ::execlp(qemu.c_str(), qemu.c_str(), "-M", "none", "-S", "-display", "none", "-nodefaults",
             "-qmp", qmp.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } reaper{pid};
  auto client = QmpClient::connect(sock, 10s);
  ASSERT_TRUE(client) << client.error().describe();
  auto running = [&] {
    auto st = client->execute("query-status");
    EXPECT_TRUE(st) << st.error().describe();
    return st && st->value("running", false);
  };
  ASSERT_TRUE(client->arm("cont"));
  std::this_thread::sleep_for(200ms);  // QEMU has read the armed bytes by now
  EXPECT_FALSE(running());             // disarmed by this execute: never ran
  ASSERT_TRUE(client->arm("cont"));
  std::this_thread::sleep_for(200ms);
  auto fired = client->fire();
  ASSERT_TRUE(fired) << fired.error().describe();
  EXPECT_TRUE(running());
  ASSERT_TRUE(client->arm("stop"));
  auto d = client->disarm();
  EXPECT_TRUE(d) << d.error().describe();
  EXPECT_TRUE(running());
}

}  // namespace
}  // namespace forkd::vmm

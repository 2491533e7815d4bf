#include "engine/switchover_gate.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "base/files.h"

namespace forkd::engine {
namespace {

// A socket pair: gate is the branch's end, source is QEMU's.
struct Pair {
  UniqueFd gate, source;
  Pair() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    gate.reset(fds[0]);
    source.reset(fds[1]);
  }
  // What the source can read now.
  std::string at_source() const {
    std::string got(64, '\0');
    ssize_t n = ::recv(source.get(), got.data(), got.size(), MSG_DONTWAIT);
    return n > 0 ? got.substr(0, static_cast<size_t>(n)) : "";
  }
  void from_source(size_t n) const {
    std::string bytes(n, 's');
    ASSERT_EQ(::send(source.get(), bytes.data(), n, 0), static_cast<ssize_t>(n));
  }
  void take_at_gate(size_t n) const {
    std::string buf(n, '\0');
    ASSERT_EQ(::recv(gate.get(), buf.data(), n, MSG_WAITALL), static_cast<ssize_t>(n));
  }
};

// QEMU's return-path messages: SWITCHOVER_ACK (type 7, no data), SHUT (type 1, be32 0).
const std::string kAckAndShut("\0\x07\0\0\0\x01\0\x04\0\0\0\0", 12);

TEST(SwitchoverGate, OpensOnceTheFirstPassArrivedAndTheSocketIsNearlyEmpty) {
  Pair p;
  SwitchoverGate gate(p.gate.get(), {/*max_backlog=*/1000, std::chrono::seconds(60)});
  p.from_source(3000);
  ASSERT_TRUE(gate.poll(/*return_path=*/false, /*caught_up=*/true));
  ASSERT_TRUE(gate.poll(true, false));
  ASSERT_TRUE(gate.poll(true, true));  // 3000 bytes unread
  EXPECT_FALSE(gate.opened());
  EXPECT_EQ(p.at_source(), "");
  // The hook before the gate opens (a pause's window, base/rt_window.h) runs once, before the
  // source can read its word.
  int hooked = 0;
  std::string readable_at_hook = "-";
  gate.before_open([&] {
    ++hooked;
    readable_at_hook = p.at_source();
  });
  p.take_at_gate(2000);
  ASSERT_TRUE(gate.poll(true, true));  // 1000 left
  EXPECT_TRUE(gate.opened());
  EXPECT_EQ(p.at_source(), kAckAndShut);
  ASSERT_TRUE(gate.poll(true, true));
  EXPECT_EQ(p.at_source(), "") << "sent once";
  EXPECT_EQ(hooked, 1);
  EXPECT_EQ(readable_at_hook, "");
}

TEST(SwitchoverGate, OpensAfterItsWaitWhenTheSocketNeverEmpties) {
  Pair p;
  SwitchoverGate gate(p.gate.get(), {/*max_backlog=*/0, std::chrono::milliseconds(30)});
  p.from_source(100);
  ASSERT_TRUE(gate.poll(true, true));
  EXPECT_FALSE(gate.opened());
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  ASSERT_TRUE(gate.poll(true, true));
  EXPECT_TRUE(gate.opened());
  EXPECT_GE(gate.waited_ms(), 30);
  EXPECT_EQ(p.at_source(), kAckAndShut);
}

TEST(SwitchoverGate, ASourceThatNeverReadsIsAnErrorNotAWait) {
  Pair p;
  // Fill what the source's side can hold, as a source that never reads would leave it.
  std::string chunk(64 << 10, 'g');
  while (::send(p.gate.get(), chunk.data(), chunk.size(), MSG_DONTWAIT) > 0) {
  }
  while (::send(p.gate.get(), chunk.data(), 1, MSG_DONTWAIT) > 0) {
  }
  SwitchoverGate gate(p.gate.get());
  auto st = gate.poll(true, true);
  ASSERT_FALSE(st);
  EXPECT_FALSE(gate.opened());
  EXPECT_NE(st.error().message().find("switch-over gate"), std::string::npos);
}

}  // namespace
}  // namespace forkd::engine

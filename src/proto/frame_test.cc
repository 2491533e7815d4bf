#include "proto/frame.h"

#include <gtest/gtest.h>

#include <random>

namespace forkd::proto {
namespace {

std::string frame(std::string_view json, std::string_view bin = {}) {
  auto f = encode_frame(json, bin);
  EXPECT_TRUE(f.has_value());
  return f.value_or("");
}

TEST(Frame, RoundTripWithBinaryBody) {
  std::string bin("\0\x01\xff binary", 10);
  FrameDecoder d;
  d.feed(frame(R"({"id":1})", bin));
  auto f = d.next();
  ASSERT_TRUE(f.has_value());
  ASSERT_TRUE(f->has_value());
  EXPECT_EQ((*f)->json, R"({"id":1})");
  EXPECT_EQ((*f)->bin, bin);
  EXPECT_FALSE(d.next().has_value());
  EXPECT_EQ(d.buffered(), 0u);
}

TEST(Frame, ByteAtATimeAndSeveralPerFeed) {
  std::string stream = frame(R"({"a":1})", "xy") + frame(R"({"b":2})") + frame(R"({"c":3})", "z");
  FrameDecoder d;
  std::vector<std::string> got;
  for (char c : stream) {
    d.feed(std::string_view(&c, 1));
    while (auto f = d.next()) {
      ASSERT_TRUE(f->has_value());
      got.push_back((*f)->json + (*f)->bin);
    }
  }
  std::vector<std::string> want = {"{\"a\":1}xy", "{\"b\":2}", "{\"c\":3}z"};
  EXPECT_EQ(got, want);
}

TEST(Frame, TruncatedFrameWaitsForMore) {
  std::string f = frame(R"({"id":7})", "abcdef");
  FrameDecoder d;
  d.feed(std::string_view(f).substr(0, f.size() - 1));
  EXPECT_FALSE(d.next().has_value());
  d.feed(std::string_view(f).substr(f.size() - 1));
  auto got = d.next();
  ASSERT_TRUE(got && got->has_value());
  EXPECT_EQ((*got)->bin, "abcdef");
}

TEST(Frame, EncodeRejectsOversizedAndEmptyBodies) {
  EXPECT_FALSE(encode_frame("", "").has_value());
  EXPECT_FALSE(encode_frame(std::string(kMaxJsonLen + 1, 'x'), "").has_value());
  EXPECT_FALSE(encode_frame("{}", std::string(kMaxBinLen + 1, 'x')).has_value());
  EXPECT_TRUE(encode_frame("{}", std::string(kMaxBinLen, 'x')).has_value());
}

TEST(Frame, OversizedLengthIsAnErrorThenResyncs) {
  std::string bad = frame(R"({"id":1})");
  bad[8] = '\xff';  // json_len = huge
  bad[9] = '\xff';
  bad[10] = '\xff';
  FrameDecoder d;
  d.feed(bad + frame(R"({"id":2})"));
  auto first = d.next();
  ASSERT_TRUE(first.has_value());
  ASSERT_FALSE(first->has_value());
  EXPECT_EQ(first->error().code(), ErrorCode::kProtocol);
  auto second = d.next();
  ASSERT_TRUE(second && second->has_value());
  EXPECT_EQ((*second)->json, R"({"id":2})");
}

TEST(Frame, GarbageBeforeFrameGivesOneErrorThenTheFrame) {
  FrameDecoder d;
  d.feed("garbage garbage garbage" + frame(R"({"id":3})"));
  int errors = 0;
  std::vector<std::string> ok;
  while (auto f = d.next()) {
    if (f->has_value()) {
      ok.push_back((*f)->json);
    } else {
      ++errors;
    }
  }
  EXPECT_EQ(errors, 1);
  EXPECT_EQ(ok, std::vector<std::string>{R"({"id":3})"});
}

TEST(Frame, WrongVersionAndZeroLengthRejected) {
  std::string v = frame(R"({"id":1})");
  v[4] = 9;
  FrameDecoder d;
  d.feed(v);
  auto f = d.next();
  ASSERT_TRUE(f && !f->has_value());
  EXPECT_NE(f->error().message().find("version"), std::string::npos);

  std::string z = frame(R"({"id":1})");
  z[8] = z[9] = z[10] = z[11] = 0;
  FrameDecoder d2;
  d2.feed(z);
  auto g = d2.next();
  ASSERT_TRUE(g && !g->has_value());
}

TEST(Frame, RandomGarbageNeverCrashesAndStaysBounded) {
  std::mt19937 rng(42);
  FrameDecoder d;
  for (int round = 0; round < 2000; ++round) {
    std::string chunk(static_cast<size_t>(rng() % 512), '\0');
    for (auto& c : chunk) c = static_cast<char>(rng());
    if (round % 7 == 0) chunk += "FKD1";
    d.feed(chunk);
    int guard = 0;
    while (auto f = d.next()) {
      ASSERT_LT(++guard, 100000);
    }
    ASSERT_LE(d.buffered(), kHeaderLen + kMaxJsonLen + kMaxBinLen);
  }
}

TEST(Frame, CleanStreamAfterErrorDecodes) {
  FrameDecoder d;
  d.feed("xx");
  auto e = d.next();
  ASSERT_TRUE(e && !e->has_value());
  d.feed(frame(R"({"id":5})"));
  auto f = d.next();
  ASSERT_TRUE(f && f->has_value());
  EXPECT_EQ((*f)->json, R"({"id":5})");
}

}  // namespace
}  // namespace forkd::proto

#include "python_worker.h"

#include <gtest/gtest.h>

namespace forkd::agent {
namespace {

TEST(WorkerMessage, RoundTripLength) {
  std::string m = encode_worker_message(Json{{"code", "1+1"}});
  ASSERT_GE(m.size(), 4u);
  EXPECT_EQ(decode_worker_length(m), m.size() - 4);
  EXPECT_EQ(Json::parse(m.substr(4))["code"], "1+1");
  EXPECT_EQ(decode_worker_length(std::string("\x01\x02\x00\x00", 4)), 0x0201u);
}

TEST(WorkerHello, Parses) {
  auto h = parse_worker_hello(R"({"hello": true, "numpy": "1.24.2", "python": "3.11.2"})");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->numpy, "1.24.2");
  EXPECT_EQ(h->python, "3.11.2");
  auto none = parse_worker_hello(R"({"hello": true, "numpy": null})");
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->numpy.is_null());
  EXPECT_FALSE(parse_worker_hello("garbage"));
  EXPECT_FALSE(parse_worker_hello(R"({"value": 1})"));
  // A wrongly typed numpy field is treated as absent, not trusted.
  auto odd = parse_worker_hello(R"({"hello": true, "numpy": 5})");
  ASSERT_TRUE(odd);
  EXPECT_TRUE(odd->numpy.is_null());
}

TEST(EvalReply, Validates) {
  auto r = parse_eval_reply(R"({"value": "2", "stdout": "hi\n", "error": null})");
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["value"], "2");
  EXPECT_EQ((*r)["stdout"], "hi\n");
  EXPECT_TRUE((*r)["error"].is_null());
  auto stmt = parse_eval_reply(R"({"stdout": ""})");
  ASSERT_TRUE(stmt);
  EXPECT_TRUE((*stmt)["value"].is_null());
  EXPECT_FALSE(parse_eval_reply(R"({"value": 2})"));
  EXPECT_FALSE(parse_eval_reply("[]"));
  EXPECT_FALSE(parse_eval_reply("{"));
  auto no_stdout = parse_eval_reply(R"({"value": null, "stdout": 7, "error": "x"})");
  ASSERT_TRUE(no_stdout);
  EXPECT_EQ((*no_stdout)["stdout"], "");
}

TEST(ReseedReply, Validates) {
  EXPECT_TRUE(parse_reseed_reply(R"({"reseeded": true, "numpy": false})"));
  auto failed = parse_reseed_reply(R"j({"reseeded": false, "error": "ValueError()"})j");
  ASSERT_FALSE(failed);
  EXPECT_NE(failed.error().message.find("ValueError"), std::string::npos);
  EXPECT_FALSE(parse_reseed_reply(R"({"value": "1", "stdout": "", "error": null})"));
  EXPECT_FALSE(parse_reseed_reply(R"({"reseeded": 1})"));
  EXPECT_FALSE(parse_reseed_reply("{"));
}

TEST(PythonWorker, ReseedWithoutWorkerIsFalse) {
  PythonWorker w;  // never started
  EXPECT_FALSE(w.reseed(std::string(64, 'a'), {}, 100));
}

TEST(PythonWorker, EvalRejectsBadArgs) {
  PythonWorker w;
  Request req;
  req.id = 1;
  req.op = "eval";
  req.args = Json{{"code", 5}};
  auto r = w.eval(req);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "bad_request");
}

}  // namespace
}  // namespace forkd::agent

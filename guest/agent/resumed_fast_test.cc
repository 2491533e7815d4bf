#include "resumed_fast.h"

#include <gtest/gtest.h>

#include <functional>

namespace forkd::agent {
namespace {

Json good_args() {
  return Json{{"op", "resumed"},
              {"id", 7},
              {"epoch", "0123456789abcdef0123456789abcdef"},
              {"sandbox_id", "sb_1-A"},
              {"hostname", "clone-7"},
              {"time_ns", 1'700'000'000'123'456'789LL}};
}

const std::string kSeed(32, '\x5a');

// What the general path makes of the same bytes: parse_request, then parse_resumed.
std::optional<std::pair<uint64_t, ResumedSpec>> general(const std::string& json,
                                                        const std::string& seed) {
  auto req = parse_request(json, seed);
  if (!req || req->op != "resumed") return std::nullopt;
  auto spec = parse_resumed(*req);
  if (!spec) return std::nullopt;
  return std::make_pair(req->id, *spec);
}

// The fast reader takes a request only where the general path takes it too, to the same spec.
void expect_subset(const std::string& json, const std::string& seed, bool fast_expected,
                   const std::string& name) {
  auto fast = parse_flat_resumed(json, seed);
  EXPECT_EQ(fast.has_value(), fast_expected) << name << ": " << json;
  if (!fast) return;
  auto slow = general(json, seed);
  ASSERT_TRUE(slow) << name << ": the general path refuses what the fast one took: " << json;
  EXPECT_EQ(fast->id, slow->first) << name;
  EXPECT_EQ(fast->spec.epoch, slow->second.epoch) << name;
  EXPECT_EQ(fast->spec.sandbox_id, slow->second.sandbox_id) << name;
  EXPECT_EQ(fast->spec.hostname, slow->second.hostname) << name;
  EXPECT_EQ(fast->spec.time_ns, slow->second.time_ns) << name;
  EXPECT_EQ(fast->spec.seed, slow->second.seed) << name;
  EXPECT_FALSE(slow->second.has_network) << name;
}

TEST(ResumedFast, TakesWhatTheHostSends) {
  expect_subset(good_args().dump(), kSeed, true, "good");
  Json with_null_network = good_args();
  with_null_network["network"] = nullptr;
  expect_subset(with_null_network.dump(), kSeed, true, "network null");
  Json extra = good_args();
  extra["unknown"] = "ignored";
  expect_subset(extra.dump(), kSeed, true, "an unknown field");
  expect_subset(good_args().dump(2), std::string(512, 'x'), true, "indented, seed 512");
  Json max_time = good_args();
  max_time["time_ns"] = INT64_MAX;
  expect_subset(max_time.dump(), kSeed, true, "time INT64_MAX");
}

TEST(ResumedFast, LeavesEverythingElseToTheGeneralPath) {
  const std::vector<std::pair<const char*, std::function<void(Json&)>>> cases = {
      {"op hello", [](Json& j) { j["op"] = "hello"; }},
      {"no op", [](Json& j) { j.erase("op"); }},
      {"id 0", [](Json& j) { j["id"] = 0; }},
      {"id negative", [](Json& j) { j["id"] = -1; }},
      {"id string", [](Json& j) { j["id"] = "7"; }},
      {"no id", [](Json& j) { j.erase("id"); }},
      {"bad epoch", [](Json& j) { j["epoch"] = "0123456789ABCDEF0123456789abcdef"; }},
      {"epoch null", [](Json& j) { j["epoch"] = nullptr; }},
      {"no sandbox", [](Json& j) { j.erase("sandbox_id"); }},
      {"sandbox slash", [](Json& j) { j["sandbox_id"] = "a/b"; }},
      {"sandbox array", [](Json& j) { j["sandbox_id"] = Json::array({"a"}); }},
      {"hostname dot", [](Json& j) { j["hostname"] = "a.b"; }},
      {"hostname escaped", [](Json& j) { j["hostname"] = "a\"b"; }},
      {"hostname unicode", [](Json& j) { j["hostname"] = "caf\xc3\xa9"; }},
      {"hostname long", [](Json& j) { j["hostname"] = std::string(65, 'h'); }},
      {"no time", [](Json& j) { j.erase("time_ns"); }},
      {"time zero", [](Json& j) { j["time_ns"] = 0; }},
      {"time negative", [](Json& j) { j["time_ns"] = -5; }},
      {"time float", [](Json& j) { j["time_ns"] = 1.5e18; }},
      {"time string", [](Json& j) { j["time_ns"] = "1"; }},
      {"time > int64", [](Json& j) { j["time_ns"] = Json::parse("9223372036854775808"); }},
      {"a network",
       [](Json& j) {
         j["network"] = Json{{"mode", "none"}};
       }},
      {"network string", [](Json& j) { j["network"] = "none"; }},
      {"nested unknown", [](Json& j) { j["extra"] = Json::object(); }},
  };
  for (const auto& [name, mutate] : cases) {
    Json j = good_args();
    mutate(j);
    expect_subset(j.dump(), kSeed, false, name);
  }
  expect_subset(good_args().dump(), std::string(31, 'x'), false, "seed 31");
  expect_subset(good_args().dump(), std::string(513, 'x'), false, "seed 513");
  expect_subset(good_args().dump(), "", false, "no seed");
  // A hostname the general parser takes through an escape: the same request, both spellings.
  std::string escaped = good_args().dump();
  escaped.replace(escaped.find("clone-7"), 7, "clone\\u002d7");
  expect_subset(escaped, kSeed, false, "an escaped hyphen");
  ASSERT_TRUE(general(escaped, kSeed));
  EXPECT_EQ(general(escaped, kSeed)->second.hostname, "clone-7");
}

TEST(ResumedFast, ReplyIsTheGeneralPathsByteForByte) {
  for (int mask = 0; mask < 16; ++mask) {
    ResumedOutcome o;
    o.rng = (mask & 1) ? StepResult{true, {}} : StepResult{false, "RNDADDENTROPY: Bad things"};
    o.clock =
        (mask & 2) ? StepResult{true, {}} : StepResult{false, "disabled (--no-system-identity)"};
    o.host = (mask & 4) ? StepResult{true, {}} : StepResult{false, "sethostname: Denied"};
    o.python_reseed_pending = (mask & 8) != 0;
    o.hostname = "sb-0a1b";
    o.epoch = "0123456789abcdef0123456789abcdef";
    o.sandbox_id = "sb-0a1b";
    auto fast = resumed_reply_text(18446744073709551615ull, o);
    ASSERT_TRUE(fast) << mask;
    EXPECT_EQ(*fast, to_wire(ok_reply(18446744073709551615ull, resumed_result(o)))) << mask;
  }
}

TEST(ResumedFast, LeavesRepliesItCannotWriteToNlohmann) {
  ResumedOutcome o;
  o.rng = o.clock = o.host = StepResult{true, {}};
  o.epoch = "0123456789abcdef0123456789abcdef";
  o.sandbox_id = "sb";
  o.hostname = "caf\xc3\xa9";  // a hostname some guest process set
  EXPECT_FALSE(resumed_reply_text(1, o));
  o.hostname = "ok";
  o.host = StepResult{false, "say \"no\""};
  EXPECT_FALSE(resumed_reply_text(1, o));
  o.host = StepResult{true, {}};
  o.has_network = true;
  EXPECT_FALSE(resumed_reply_text(1, o));
  o.has_network = false;
  EXPECT_TRUE(resumed_reply_text(1, o));
}

}  // namespace
}  // namespace forkd::agent

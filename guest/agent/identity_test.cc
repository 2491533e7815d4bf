#include "identity.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <set>

namespace forkd::agent {
namespace {

Request good_request() {
  Request req;
  req.id = 1;
  req.op = "resumed";
  req.args = Json{{"op", "resumed"},
                  {"id", 1},
                  {"epoch", "0123456789abcdef0123456789abcdef"},
                  {"sandbox_id", "sb_1-A"},
                  {"hostname", "clone-7"},
                  {"time_ns", 1'700'000'000'123'456'789LL}};
  req.body = std::string(32, '\x5a');
  return req;
}

TEST(Resumed, ParsesAGoodRequest) {
  auto spec = parse_resumed(good_request());
  ASSERT_TRUE(spec) << spec.error().message;
  EXPECT_EQ(spec->epoch, "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(spec->sandbox_id, "sb_1-A");
  EXPECT_EQ(spec->hostname, "clone-7");
  EXPECT_EQ(spec->time_ns, 1'700'000'000'123'456'789LL);
  EXPECT_EQ(spec->seed.size(), 32u);
  Request big = good_request();
  big.body.assign(512, 'x');
  big.args["time_ns"] = Json::parse("9223372036854775807");  // INT64_MAX, parsed as unsigned
  EXPECT_TRUE(parse_resumed(big));
}

TEST(Resumed, RejectsBadFields) {
  const std::vector<std::pair<const char*, std::function<void(Request&)>>> cases = {
      {"no epoch", [](Request& r) { r.args.erase("epoch"); }},
      {"short epoch", [](Request& r) { r.args["epoch"] = "0123456789abcdef0123456789abcde"; }},
      {"long epoch", [](Request& r) { r.args["epoch"] = "0123456789abcdef0123456789abcdef0"; }},
      {"upper hex", [](Request& r) { r.args["epoch"] = "0123456789ABCDEF0123456789abcdef"; }},
      {"not hex", [](Request& r) { r.args["epoch"] = "0123456789abcdeg0123456789abcdef"; }},
      {"epoch int", [](Request& r) { r.args["epoch"] = 5; }},
      {"no sandbox", [](Request& r) { r.args.erase("sandbox_id"); }},
      {"empty sandbox", [](Request& r) { r.args["sandbox_id"] = ""; }},
      {"long sandbox", [](Request& r) { r.args["sandbox_id"] = std::string(65, 'a'); }},
      {"sandbox slash", [](Request& r) { r.args["sandbox_id"] = "a/b"; }},
      {"sandbox array", [](Request& r) { r.args["sandbox_id"] = Json::array({"a"}); }},
      {"no hostname", [](Request& r) { r.args.erase("hostname"); }},
      {"empty hostname", [](Request& r) { r.args["hostname"] = ""; }},
      {"long hostname", [](Request& r) { r.args["hostname"] = std::string(65, 'h'); }},
      {"hostname dot", [](Request& r) { r.args["hostname"] = "a.b"; }},
      {"hostname underscore", [](Request& r) { r.args["hostname"] = "a_b"; }},
      {"hostname lead dash", [](Request& r) { r.args["hostname"] = "-ab"; }},
      {"hostname trail dash", [](Request& r) { r.args["hostname"] = "ab-"; }},
      {"hostname NUL", [](Request& r) { r.args["hostname"] = std::string("a\0b", 3); }},
      {"no time", [](Request& r) { r.args.erase("time_ns"); }},
      {"time string", [](Request& r) { r.args["time_ns"] = "1"; }},
      {"time float", [](Request& r) { r.args["time_ns"] = 1.5e18; }},
      {"time bool", [](Request& r) { r.args["time_ns"] = true; }},
      {"time zero", [](Request& r) { r.args["time_ns"] = 0; }},
      {"time negative", [](Request& r) { r.args["time_ns"] = -5; }},
      {"time > int64", [](Request& r) { r.args["time_ns"] = Json::parse("9223372036854775808"); }},
      {"no seed", [](Request& r) { r.body.clear(); }},
      {"seed 31", [](Request& r) { r.body.assign(31, 'x'); }},
      {"seed 513", [](Request& r) { r.body.assign(513, 'x'); }},
  };
  for (const auto& [name, mutate] : cases) {
    Request req = good_request();
    mutate(req);
    auto spec = parse_resumed(req);
    ASSERT_FALSE(spec) << name;
    EXPECT_EQ(spec.error().code, "bad_request") << name;
  }
}

TEST(Resumed, Validators) {
  EXPECT_TRUE(valid_hostname("a"));
  EXPECT_TRUE(valid_hostname(std::string(64, 'a')));
  EXPECT_TRUE(valid_hostname("Sandbox-9"));
  EXPECT_FALSE(valid_hostname("a b"));
  EXPECT_TRUE(valid_sandbox_id(std::string(64, '_')));
  EXPECT_FALSE(valid_sandbox_id("a.b"));
  EXPECT_TRUE(valid_epoch(std::string(32, 'f')));
  EXPECT_FALSE(valid_epoch(std::string(32, 'F')));
}

TEST(Resumed, IdentityEnv) {
  set_identity(Identity{"sb", "00000000000000000000000000000001"});
  auto env = identity_env();
  ASSERT_EQ(env.size(), 2u);
  EXPECT_EQ(env[0], (std::pair<std::string, std::string>{"FORKD_SANDBOX_ID", "sb"}));
  EXPECT_EQ(env[1].first, "FORKD_EPOCH");
  EXPECT_EQ(current_identity()->epoch, "00000000000000000000000000000001");
}

TEST(Resumed, PythonSaltIsFreshHex) {
  std::string seed(32, '\x01');
  std::set<std::string> seen;
  for (int i = 0; i < 4; ++i) {
    std::string salt = python_salt_hex(seed);
    EXPECT_EQ(salt.size(), 64u);
    EXPECT_EQ(salt.find_first_not_of("0123456789abcdef"), std::string::npos);
    seen.insert(salt);
  }
  EXPECT_EQ(seen.size(), 4u);
}

// Real ioctls on this machine's kernel: harmless with real random bytes. Root (CAP_SYS_ADMIN)
// succeeds; anyone else gets a reason.
TEST(Resumed, KernelReseed) {
  std::string seed(64, '\0');
  ASSERT_EQ(::getentropy(seed.data(), seed.size()), 0);
  StepResult r = reseed_kernel_rng(seed);
  if (::geteuid() == 0) {
    EXPECT_TRUE(r.ok) << r.error;
  } else {
    EXPECT_FALSE(r.ok);
    EXPECT_FALSE(r.error.empty());
  }
  EXPECT_FALSE(reseed_kernel_rng("").ok);
}

// After keep_rng_device_open a reseed opens no file: with no descriptor left to open it still
// reaches the ioctls.
TEST(Resumed, KernelReseedUsesTheDescriptorKeptFromStart) {
  keep_rng_device_open();
  ASSERT_TRUE(rng_device_kept_open());
  keep_rng_device_open();  // a second call keeps the first descriptor
  std::string seed(64, '\0');
  ASSERT_EQ(::getentropy(seed.data(), seed.size()), 0);
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  rlimit none = saved;
  none.rlim_cur = 0;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &none), 0);
  StepResult r = reseed_kernel_rng(seed);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  EXPECT_EQ(r.error.find("open"), std::string::npos) << r.error;
  if (::geteuid() == 0) {
    EXPECT_TRUE(r.ok) << r.error;
  }
}

TEST(Resumed, ResumedOpReportsStepsWithoutSystemIdentity) {
  Request req = good_request();
  ASSERT_EQ(::getentropy(req.body.data(), req.body.size()), 0);
  auto r = resumed_op(req, nullptr, ResumedOptions{false});
  ASSERT_TRUE(r);
  const Json& j = r->result;
  EXPECT_EQ(j["clock_set"], false);
  EXPECT_NE(j["clock_error"].get<std::string>().find("disabled"), std::string::npos);
  EXPECT_EQ(j["hostname_set"], false);
  EXPECT_TRUE(j["hostname"].is_string());
  EXPECT_EQ(j["python_reseed_pending"], false);
  EXPECT_EQ(j["epoch"], "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(j["reseeded"], ::geteuid() == 0);
  EXPECT_EQ(j.contains("reseed_error"), ::geteuid() != 0);
  EXPECT_EQ(current_identity()->sandbox_id, "sb_1-A");
  req.args["epoch"] = "nope";
  auto bad = resumed_op(req, nullptr, ResumedOptions{false});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, "bad_request");
}

TEST(Resumed, HostnameFileBecomesALinkToTheKernelsHostname) {
  char tmpl[] = "/tmp/forkd-hostname-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl, file = dir + "/hostname";
  {
    FILE* f = std::fopen(file.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("forkd\n", f);
    std::fclose(f);
  }
  EXPECT_FALSE(hostname_file_is_linked(file));
  ASSERT_TRUE(link_hostname_file(file).ok);
  EXPECT_TRUE(hostname_file_is_linked(file));
  char target[64] = {};
  ASSERT_GT(::readlink(file.c_str(), target, sizeof target - 1), 0);
  EXPECT_STREQ(target, kKernelHostnamePath);
  ASSERT_TRUE(link_hostname_file(file).ok) << "a second call keeps the link";
  EXPECT_TRUE(hostname_file_is_linked(file));
  // Known since it was made: checked without reading it again, until it is replaced.
  const uint64_t reads = hostname_link_reads();
  EXPECT_TRUE(hostname_file_is_linked(file));
  EXPECT_EQ(hostname_link_reads(), reads);
  ASSERT_EQ(::unlink(file.c_str()), 0);
  ASSERT_EQ(::symlink(kKernelHostnamePath, file.c_str()), 0);
  EXPECT_TRUE(hostname_file_is_linked(file));
  EXPECT_EQ(hostname_link_reads(), reads + 1) << "a new link is read once";
  EXPECT_TRUE(hostname_file_is_linked(file));
  EXPECT_EQ(hostname_link_reads(), reads + 1);
  EXPECT_NE(::access((file + ".forkd-link").c_str(), F_OK), 0) << "no staged link left behind";
  // A link elsewhere, or a longer target that starts the same, is not the kernel's.
  ASSERT_EQ(::unlink(file.c_str()), 0);
  ASSERT_EQ(::symlink("/proc/sys/kernel/hostnameX", file.c_str()), 0);
  EXPECT_FALSE(hostname_file_is_linked(file));
  ASSERT_EQ(::unlink(file.c_str()), 0);
  ASSERT_EQ(::rmdir(dir.c_str()), 0);
  // A directory that is not there: reported, nothing created.
  auto missing = link_hostname_file(dir + "/hostname");
  EXPECT_FALSE(missing.ok);
  EXPECT_FALSE(missing.error.empty());
}

}  // namespace
}  // namespace forkd::agent

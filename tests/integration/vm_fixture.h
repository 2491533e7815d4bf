#pragma once
// Helpers shared by the VM integration tests.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "engine/fork.h"
#include "engine/sandbox.h"

namespace forkd::test {

// Test homes are created under $TMPDIR with this prefix.
inline constexpr const char* kTestHomePrefix = "forkd-test-home";

// The engine configuration the tests use: the test binary's own FORKD_HOME.
engine::EngineConfig config();

// Skip reason when QEMU is truly absent; empty when tests can run.
std::string qemu_missing_reason();
// Reason when this process is not root ("needs root to " + what); empty as root.
std::string root_missing_reason(const std::string& what);
// Reason when the openssl CLI is not installed; empty when it is.
std::string openssl_missing_reason();

// Whether $FORKD_ALLOW_SKIP (a comma-separated list such as "qemu,root", or "all") names
// capability.
bool skip_allowed(const std::string& capability);

// A test that cannot run on this machine fails, unless FORKD_ALLOW_SKIP names the missing
// capability ("qemu", "root", "openssl"): then it is skipped. missing_reason is empty when the
// capability is there, and the test goes on. Returns from the calling (void) function, like
// GTEST_SKIP and FAIL.
#define FORKD_REQUIRE(capability, missing_reason)                                  \
  do {                                                                             \
    const std::string forkd_missing_ = (missing_reason);                           \
    if (!forkd_missing_.empty()) {                                                 \
      if (::forkd::test::skip_allowed(capability)) GTEST_SKIP() << forkd_missing_; \
      FAIL() << forkd_missing_ << " (set FORKD_ALLOW_SKIP=" << (capability)        \
             << " to skip instead)";                                               \
    }                                                                              \
  } while (0)

// Boots a sandbox or fails the calling test with the error.
std::unique_ptr<engine::Sandbox> boot(const std::string& image, int memory_mib = 256);

// Forks with fo through the engine; the ids of the children that came up. A failed call or child
// fails the calling test (non-fatally).
std::vector<std::string> fork_ok(const engine::ForkOptions& fo);

// Runs a shell command in the sandbox id (attached by id) with a 60 s timeout; a failed attach
// or call fails the calling test (non-fatally) and gives an empty result.
engine::ExecResult sh_in(const std::string& id, const std::string& cmd);

// Path of the forkd CLI built beside the test binaries.
std::string forkd_cli();

// Pids of QEMU processes whose command line mentions home's sandboxes dir.
std::vector<int> qemu_pids_for_home(const std::string& home);
// Pids of QEMU processes whose command line contains needle.
std::vector<int> qemu_pids_matching(const std::string& needle);

struct CliResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs the forkd CLI with args (and extra environment), capturing stdout and stderr separately.
CliResult run_cli(const std::vector<std::string>& args,
                  const std::vector<std::pair<std::string, std::string>>& env = {},
                  int timeout_s = 300);

// A suite whose tests fork their own sandboxes: needs QEMU (FORKD_REQUIRE), and after each test,
// passed or failed, every sandbox of the test home is removed.
class ForkingTest : public ::testing::Test {
 protected:
  // For SetUpTestSuite: the suite's tag "base" of the minimal image after warmup (nothing
  // without QEMU); a failure fails the suite.
  static void create_base_tag(std::vector<std::string> warmup);
  void SetUp() override;
  void TearDown() override;
};

// A suite whose tests share one sandbox booted from Traits::kImage with Traits::kMemoryMib,
// booted once before the suite and destroyed after it. Static members are per instantiation.
template <typename Traits>
class SharedSandboxTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!qemu_missing_reason().empty()) return;
    sb_ = boot(Traits::kImage, Traits::kMemoryMib).release();
  }
  static void TearDownTestSuite() {
    delete sb_;
    sb_ = nullptr;
  }
  void SetUp() override {
    FORKD_REQUIRE("qemu", qemu_missing_reason());
    ASSERT_NE(sb_, nullptr) << "sandbox did not boot";
  }
  static inline engine::Sandbox* sb_ = nullptr;
};

}  // namespace forkd::test

// `forkd run` and `forkd doctor` as a user runs them: exit codes, messages, teardown.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "base/files.h"
#include "base/subprocess.h"
#include "integration/vm_fixture.h"

namespace forkd::test {
namespace {

class CliRun : public ::testing::Test {
 protected:
  void SetUp() override { FORKD_REQUIRE("qemu", qemu_missing_reason()); }
  void TearDown() override {
    EXPECT_TRUE(qemu_pids_for_home(config().home).empty()) << "a test left QEMU running";
  }
};

TEST_F(CliRun, PassesOutputAndExitCodeThrough) {
  auto r = run_cli({"run", "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 7"});
  EXPECT_EQ(r.exit_code, 7) << r.err;
  EXPECT_EQ(r.out, "to-out\n");
  EXPECT_NE(r.err.find("to-err"), std::string::npos);
}

TEST_F(CliRun, JsonResult) {
  auto r = run_cli({"run", "--json", "--", "echo", "hi"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["stdout"], "hi\n");
  EXPECT_EQ(j["exit_code"], 0);
  EXPECT_GT(j["boot_ms"].get<double>(), 0);
}

TEST_F(CliRun, UnknownImage) {
  auto r = run_cli({"run", "--image", "nope", "--", "true"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("unknown image 'nope'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("minimal"), std::string::npos) << "should list the known images";
}

TEST_F(CliRun, CommandNotFoundInGuest) {
  auto r = run_cli({"run", "--", "definitely-not-a-command"});
  EXPECT_EQ(r.exit_code, 127);
  EXPECT_NE(r.err.find("definitely-not-a-command"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("command_not_found"), std::string::npos) << r.err;
}

TEST_F(CliRun, TimeoutKillsAndReports) {
  auto r = run_cli({"run", "--timeout", "1", "--", "sleep", "60"});
  EXPECT_EQ(r.exit_code, 124) << r.err;
  EXPECT_NE(r.err.find("timed out"), std::string::npos) << r.err;
}

TEST_F(CliRun, AgentThatNeverAnswersIsBoundedAndTornDown) {
  // rdinit=/bin/cat replaces the agent with a PID 1 that never answers.
  auto start = std::chrono::steady_clock::now();
  auto r =
      run_cli({"run", "--boot-timeout", "8", "--kernel-append", "rdinit=/bin/cat", "--", "true"});
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("agent_timeout"), std::string::npos) << r.err;
  EXPECT_LT(took, std::chrono::seconds(60));
}

TEST_F(CliRun, MissingQemuSaysHowToInstall) {
  auto r = run_cli({"run", "--", "true"}, {{"PATH", "/nonexistent-forkd-path"}});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("apt-get install"), std::string::npos) << r.err;
}

TEST_F(CliRun, BadArgumentsAreUsageErrors) {
  EXPECT_EQ(run_cli({"run", "--memory", "1", "--", "true"}).exit_code, 2);
  EXPECT_EQ(run_cli({"run"}).exit_code, 2);
  EXPECT_EQ(run_cli({"--accel", "warp", "run", "--", "true"}).exit_code, 2);
  EXPECT_EQ(run_cli({"no-such-verb"}).exit_code, 2);
}

TEST_F(CliRun, CtrlCTearsTheVmDown) {
  std::vector<std::string> argv = {forkd_cli(), "run", "--", "sleep", "120"};
  SpawnOptions o;
  int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  o.stdout_fd = devnull;
  o.stderr_fd = devnull;
  auto child = Child::spawn(argv, o);
  ::close(devnull);
  ASSERT_TRUE(child);
  // Wait until its QEMU is up and the command runs (the VM exists), then interrupt.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (qemu_pids_for_home(config().home).empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_FALSE(qemu_pids_for_home(config().home).empty()) << "QEMU never started";
  std::this_thread::sleep_for(std::chrono::seconds(3));
  child->kill(SIGINT);
  auto code = child->wait(std::chrono::seconds(30));
  ASSERT_TRUE(code);
  EXPECT_EQ(*code, 130);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_TRUE(qemu_pids_for_home(config().home).empty());
}

TEST_F(CliRun, NoDiskSpaceForImageBuild) {
  FORKD_REQUIRE("root", root_missing_reason("mount a tiny tmpfs"));
  auto dir = TempDir::create("forkd-nospace");
  ASSERT_TRUE(dir);
  ASSERT_EQ(::mount("tmpfs", dir->path().c_str(), "tmpfs", 0, "size=2m"), 0);
  auto r = run_cli({"run", "--", "true"}, {{"FORKD_HOME", dir->path()}, {"TMPDIR", dir->path()}});
  ::umount2(dir->path().c_str(), MNT_DETACH);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no_space"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("MiB free"), std::string::npos) << r.err;
}

TEST_F(CliRun, DoctorReportsAccelerator) {
  auto r = run_cli({"doctor", "--json"});
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out << r.err;
  bool saw_accel = false;
  for (const auto& c : j["checks"]) {
    if (c["check"] == "accelerator") {
      saw_accel = true;
      EXPECT_EQ(c["status"], "ok");
      EXPECT_FALSE(c["detail"].get<std::string>().empty());
    }
  }
  EXPECT_TRUE(saw_accel);
  EXPECT_EQ(r.exit_code, j["ok"].get<bool>() ? 0 : 1);
}

// doctor says whether QEMU runs with forkd's stub libraries (vmm/lean_qemu.h): it does on a host
// with the built stubs, not with FORKD_LEAN_QEMU=0, and a directory others may write is refused.
TEST_F(CliRun, DoctorReportsQemuLibraries) {
  auto check = [](const CliResult& r) {
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    for (const auto& c : j["checks"]) {
      if (c["check"] == "qemu-libs") {
        return c["status"].get<std::string>() + ": " + c["detail"].get<std::string>();
      }
    }
    return std::string("missing: ") + r.out;
  };
  const std::string lean = check(run_cli({"doctor", "--json"}));
  EXPECT_EQ(lean.rfind("ok: QEMU runs with forkd's stubs", 0), 0u) << lean;
  EXPECT_NE(lean.find("preloads its shim"), std::string::npos) << lean;
  EXPECT_EQ(check(run_cli({"doctor", "--json"}, {{"FORKD_LEAN_QEMU", "0"}})),
            "ok: QEMU loads its own libcapstone and libpmem (FORKD_LEAN_QEMU=0)");
  // A copy of forkd beside a stub directory its group may write.
  auto d = TempDir::create("forkd-lean-doctor");
  ASSERT_TRUE(d);
  std::error_code ec;
  std::filesystem::copy(forkd_cli(), d->path() + "/forkd", ec);
  ASSERT_FALSE(ec) << ec.message();
  std::filesystem::copy(
      std::filesystem::path(forkd_cli()).parent_path() / "qemu-lean", d->path() + "/qemu-lean",
      std::filesystem::copy_options::recursive | std::filesystem::copy_options::copy_symlinks, ec);
  ASSERT_FALSE(ec) << ec.message();
  ASSERT_EQ(::chmod(d->path().c_str(), 0755), 0);
  ASSERT_EQ(::chmod((d->path() + "/qemu-lean").c_str(), 0775), 0);
  auto r = run_capture({"sh", "-c", "exec \"$0\" doctor --json 2>/dev/null", d->path() + "/forkd"},
                       std::chrono::seconds(60));
  ASSERT_TRUE(r);
  CliResult copied;
  copied.out = r->output;
  std::string said = check(copied);
  EXPECT_EQ(said.rfind("warn: ", 0), 0u) << said;
  EXPECT_NE(said.find("writable by its group"), std::string::npos) << said;
}

}  // namespace
}  // namespace forkd::test

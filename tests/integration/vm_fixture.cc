#include "integration/vm_fixture.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "base/files.h"
#include "base/paths.h"
#include "base/subprocess.h"
#include "engine/registry.h"
#include "engine/snapshot.h"

namespace forkd::test {

namespace {

// The run dir (home/sandboxes/NAME) that pid's command line names, or its whole command line.
std::string run_dir_of(int pid, const std::string& home) {
  auto cmd = read_file("/proc/" + std::to_string(pid) + "/cmdline", 1 << 20);
  if (!cmd) return "(exited)";
  for (auto& c : *cmd) {
    if (c == '\0') c = ' ';
  }
  const std::string prefix = home + "/sandboxes/";
  auto at = cmd->find(prefix);
  if (at == std::string::npos) return *cmd;
  auto end = cmd->find_first_of("/ ,", at + prefix.size());
  return cmd->substr(at, end == std::string::npos ? std::string::npos : end - at);
}

// Each test binary gets its own FORKD_HOME (sandboxes, snapshots, pools), sharing the built
// images and cache of the real home through symlinks, so nothing a test does can touch a
// user's sandboxes, and its leftovers are attributable.
class TestHome : public ::testing::Environment {
 public:
  // How long a QEMU that is exiting (SIGTERM sent, quit over QMP) gets before it counts as left.
  static constexpr std::chrono::milliseconds kExitGrace{3000};

  void SetUp() override {
    std::string real = forkd_home();
    (void)make_dirs(real + "/images");
    (void)make_dirs(real + "/cache");
    auto dir = TempDir::create(kTestHomePrefix);
    ASSERT_TRUE(dir) << dir.error().describe();
    home_ = std::make_unique<TempDir>(std::move(*dir));
    ASSERT_EQ(::symlink((real + "/images").c_str(), (home_->path() + "/images").c_str()), 0);
    // The cache's entries are shared (built kernels and rootfs), except the memory of chain links
    // assembled for this home's tags, which would otherwise pile up in the real home run after
    // run (gigabytes each time).
    ASSERT_EQ(::mkdir((home_->path() + "/cache").c_str(), 0700), 0);
    for (const auto& name : list_dir_names(real + "/cache")) {
      if (name == "assembled") continue;
      ASSERT_EQ(
          ::symlink((real + "/cache/" + name).c_str(), (home_->path() + "/cache/" + name).c_str()),
          0);
    }
    ::setenv("FORKD_HOME", home_->path().c_str(), 1);
  }
  void TearDown() override {
    // Every QEMU of this home must be gone by now: the tests and suites remove what they start.
    // One still running is a leak and fails the binary (a process that is exiting gets a short
    // grace). Only after the failure is recorded is it killed, so no later suite inherits it.
    if (!home_) return;  // SetUp failed
    const std::string& home = home_->path();
    auto left = qemu_pids_for_home(home);
    for (auto until = std::chrono::steady_clock::now() + kExitGrace;
         !left.empty() && std::chrono::steady_clock::now() < until;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      left = qemu_pids_for_home(home);
    }
    if (!left.empty()) {
      std::string list;
      for (int pid : left) list += "\n  pid " + std::to_string(pid) + " " + run_dir_of(pid, home);
      ADD_FAILURE() << left.size() << " QEMU process(es) of the test home leaked: still running "
                    << "after the last test and a " << kExitGrace.count() << " ms grace" << list;
    }
    for (int pid : left) ::kill(pid, SIGKILL);
    for (int i = 0; i < 100 && !qemu_pids_for_home(home).empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::unlink((home_->path() + "/images").c_str());
    home_.reset();  // removes the cache's symlinks, never what they point to
  }

 private:
  std::unique_ptr<TempDir> home_;
};

const auto* const g_test_home = ::testing::AddGlobalTestEnvironment(new TestHome);

}  // namespace

engine::EngineConfig config() { return engine::EngineConfig::from_env(); }

std::string qemu_missing_reason() {
  if (find_in_path("qemu-system-x86_64").empty()) {
    return "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)";
  }
  return "";
}

std::string root_missing_reason(const std::string& what) {
  return ::geteuid() == 0 ? "" : "needs root to " + what;
}

std::string openssl_missing_reason() {
  return find_in_path("openssl").empty() ? "openssl CLI not installed (apt-get install openssl)"
                                         : "";
}

bool skip_allowed(const std::string& capability) {
  const char* env = std::getenv("FORKD_ALLOW_SKIP");
  if (!env) return false;
  std::string list = env;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    std::string item = list.substr(start, comma - start);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (item == capability || item == "all") return true;
    start = comma + 1;
  }
  return false;
}

std::unique_ptr<engine::Sandbox> boot(const std::string& image, int memory_mib) {
  engine::BootOptions o;
  o.image = image;
  o.memory_mib = memory_mib;
  auto sb = engine::Sandbox::boot(config(), o);
  EXPECT_TRUE(sb) << sb.error().describe();
  return sb ? std::move(*sb) : nullptr;
}

std::string forkd_cli() { return exe_dir() + "/forkd"; }

std::vector<int> qemu_pids_for_home(const std::string& home) {
  return qemu_pids_matching(home + "/sandboxes/");
}

std::vector<int> qemu_pids_matching(const std::string& needle) {
  std::vector<int> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    int pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    auto cmd = read_file("/proc/" + std::string(e->d_name) + "/cmdline", 1 << 20);
    if (!cmd) continue;
    for (auto& c : *cmd) {
      if (c == '\0') c = ' ';
    }
    if (cmd->find("qemu-system") != std::string::npos && cmd->find(needle) != std::string::npos) {
      out.push_back(pid);
    }
  }
  ::closedir(d);
  return out;
}

namespace {
void drain(int fd, std::string* into) {
  char buf[65536];
  ssize_t n = ::read(fd, buf, sizeof buf);
  if (n > 0) into->append(buf, static_cast<size_t>(n));
}
}  // namespace

CliResult run_cli(const std::vector<std::string>& args,
                  const std::vector<std::pair<std::string, std::string>>& env, int timeout_s) {
  CliResult res;
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) return res;
  UniqueFd out_r(out[0]), out_w(out[1]), err_r(err[0]), err_w(err[1]);
  std::vector<std::string> argv = {forkd_cli()};
  argv.insert(argv.end(), args.begin(), args.end());
  SpawnOptions o;
  o.stdout_fd = out_w.get();
  o.stderr_fd = err_w.get();
  for (const auto& [k, v] : env) o.env[k] = v;
  auto child = Child::spawn(argv, o);
  if (!child) {
    res.err = child.error().describe();
    return res;
  }
  out_w.reset();
  err_w.reset();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  bool out_open = true, err_open = true;
  while ((out_open || err_open) && std::chrono::steady_clock::now() < deadline) {
    struct pollfd p[2] = {{out_open ? out_r.get() : -1, POLLIN, 0},
                          {err_open ? err_r.get() : -1, POLLIN, 0}};
    if (::poll(p, 2, 500) <= 0) continue;
    if (p[0].revents) {
      size_t before = res.out.size();
      drain(out_r.get(), &res.out);
      if (res.out.size() == before) out_open = false;
    }
    if (p[1].revents) {
      size_t before = res.err.size();
      drain(err_r.get(), &res.err);
      if (res.err.size() == before) err_open = false;
    }
  }
  auto code = child->wait(std::chrono::seconds(out_open || err_open ? 0 : timeout_s));
  if (!code) {
    child->kill(SIGKILL);
    res.err += "\n[test: forkd did not exit in time]";
    return res;
  }
  res.exit_code = *code;
  return res;
}

std::vector<std::string> fork_ok(const engine::ForkOptions& fo) {
  auto r = engine::fork_children(config(), fo);
  EXPECT_TRUE(r) << r.error().describe();
  std::vector<std::string> ids;
  if (!r) return ids;
  for (const auto& c : r->children) {
    EXPECT_FALSE(c.error) << c.error->describe();
    if (!c.error) ids.push_back(c.id);
  }
  return ids;
}

engine::ExecResult sh_in(const std::string& id, const std::string& cmd) {
  auto sb = engine::Sandbox::attach(config(), id);
  EXPECT_TRUE(sb) << sb.error().describe();
  if (!sb) return {};
  engine::ExecOptions o;
  o.shell = cmd;
  o.timeout = std::chrono::seconds(60);
  auto r = (*sb)->exec(o);
  EXPECT_TRUE(r) << r.error().describe();
  return r ? std::move(*r) : engine::ExecResult{};
}

void ForkingTest::create_base_tag(std::vector<std::string> warmup) {
  if (!qemu_missing_reason().empty()) return;
  engine::SnapshotOptions so;
  so.tag = "base";
  so.image = "minimal";
  so.warmup = std::move(warmup);
  auto r = engine::create_snapshot(config(), so);
  ASSERT_TRUE(r) << r.error().describe();
}

void ForkingTest::SetUp() { FORKD_REQUIRE("qemu", qemu_missing_reason()); }

void ForkingTest::TearDown() {
  for (const auto& s : engine::list_sandboxes(config())) {
    (void)engine::remove_sandbox(config(), s.id);
  }
}

}  // namespace forkd::test

#include "vmm/lean_qemu.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <sstream>
#include <vector>

#include "base/files.h"
#include "base/scoped_env.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"
#include "vmm/jail.h"
#include "vmm/qemu_cmdline.h"

namespace forkd::vmm {
namespace {

TEST(LeanQemu, OnlyADirectoryNobodyElseMayWriteIsHandedToTheLoader) {
  auto d = TempDir::create("lean-test");
  ASSERT_TRUE(d);
  const std::string dir = d->path() + "/libs";
  EXPECT_FALSE(check_lean_dir(dir)) << "missing";
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  ASSERT_TRUE(write_file_atomic(dir + "/libcapstone.so.4", "x"));
  ASSERT_EQ(::chmod((dir + "/libcapstone.so.4").c_str(), 0755), 0);
  ASSERT_EQ(::symlink("libcapstone.so.4", (dir + "/libcapstone.so").c_str()), 0);
  auto ok = check_lean_dir(dir);
  ASSERT_TRUE(ok) << "0755, ours; a symlink's own mode does not count";
  EXPECT_EQ(*ok, std::filesystem::canonical(dir).string());

  ASSERT_EQ(::chmod(dir.c_str(), 0775), 0);
  auto st = check_lean_dir(dir);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message().find("writable by its group"), std::string::npos)
      << st.error().message();
  ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);

  ASSERT_EQ(::chmod((dir + "/libcapstone.so.4").c_str(), 0757), 0);
  st = check_lean_dir(dir);
  ASSERT_FALSE(st) << "an entry others may write (and the symlink to it)";
  EXPECT_NE(st.error().message().find("libcapstone.so"), std::string::npos);
  ASSERT_EQ(::chmod((dir + "/libcapstone.so.4").c_str(), 0755), 0);

  ASSERT_EQ(::chmod(d->path().c_str(), 0777), 0);
  EXPECT_FALSE(check_lean_dir(dir)) << "a parent others may write";
  ASSERT_EQ(::chmod(d->path().c_str(), 01777), 0);
  EXPECT_TRUE(check_lean_dir(dir)) << "a sticky parent, as /tmp";
  ASSERT_EQ(::chmod(d->path().c_str(), 0700), 0);

  const std::string spaced = d->path() + "/a b";
  ASSERT_EQ(::mkdir(spaced.c_str(), 0755), 0);
  st = check_lean_dir(spaced);
  ASSERT_FALSE(st) << "the loader would split the path";
  EXPECT_NE(st.error().message().find("blank"), std::string::npos) << st.error().message();

  const std::string file = d->path() + "/plain";
  ASSERT_TRUE(write_file_atomic(file, "x"));
  EXPECT_FALSE(check_lean_dir(file)) << "not a directory";
}

TEST(LeanQemu, EnvironmentPutsTheStubsAndTheShimFirst) {
  EXPECT_TRUE(lean_qemu_env("").empty());
  auto d = TempDir::create("lean-env");
  ASSERT_TRUE(d);
  const std::string& dir = d->path();
  {
    ScopedEnv lib("LD_LIBRARY_PATH", nullptr);
    ScopedEnv pre("LD_PRELOAD", nullptr);
    auto env = lean_qemu_env(dir);
    EXPECT_EQ(env.at("LD_LIBRARY_PATH"), dir);
    EXPECT_EQ(env.count("LD_PRELOAD"), 0u) << "no shim in the directory";
    ASSERT_TRUE(write_file_atomic(dir + "/libforkd-qemu-shim.so", "x"));
    EXPECT_EQ(lean_qemu_env(dir).at("LD_PRELOAD"), dir + "/libforkd-qemu-shim.so");
  }
  ScopedEnv lib("LD_LIBRARY_PATH", "/b");
  ScopedEnv pre("LD_PRELOAD", "/c/libother.so");
  auto env = lean_qemu_env(dir);
  EXPECT_EQ(env.at("LD_LIBRARY_PATH"), dir + ":/b");
  EXPECT_EQ(env.at("LD_PRELOAD"), dir + "/libforkd-qemu-shim.so:/c/libother.so");
}

using MadviseFn = int (*)(void*, size_t, int);

// The shim, loaded into this process beside libc, and its madvise.
struct Shim {
  Shim() {
    handle = ::dlopen((lean_qemu_default_dir() + "/libforkd-qemu-shim.so").c_str(),
                      RTLD_NOW | RTLD_LOCAL);
    if (handle != nullptr) madvise = reinterpret_cast<MadviseFn>(::dlsym(handle, "madvise"));
  }
  ~Shim() {
    if (handle != nullptr) ::dlclose(handle);
  }
  void* handle = nullptr;
  MadviseFn madvise = nullptr;
};

// The VmFlags line of this process's mapping that starts at addr; empty when there is none.
std::string flags_of(uintptr_t addr) {
  auto smaps = read_file("/proc/self/smaps");
  if (!smaps) return "";
  char start[32];
  std::snprintf(start, sizeof start, "%lx-", static_cast<unsigned long>(addr));
  size_t at = smaps->find("\n" + std::string(start));
  if (at == std::string::npos) return "";
  size_t flags = smaps->find("VmFlags:", at);
  return flags == std::string::npos ? "" : smaps->substr(flags, smaps->find('\n', flags) - flags);
}
bool has_flag(const std::string& flags, const char* flag) {
  return (flags + " ").find(std::string(" ") + flag + " ") != std::string::npos;
}

// The shim's madvise, called on areas of one and of two huge pages: the small one is marked
// "no huge pages" (VmFlags nh), the large one keeps what was asked (hg).
TEST(LeanQemu, QemuShimRefusesHugePagesOnlyToSmallAreas) {
  Shim shim;
  ASSERT_NE(shim.madvise, nullptr) << ::dlerror();
  for (size_t mib : {2u, 4u}) {
    SCOPED_TRACE(std::to_string(mib) + " MiB");
    const size_t len = mib << 20;
    void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(p, MAP_FAILED);
    ASSERT_EQ(shim.madvise(p, len, MADV_HUGEPAGE), 0) << std::strerror(errno);
    std::string flags = flags_of(reinterpret_cast<uintptr_t>(p));
    EXPECT_EQ(has_flag(flags, "nh"), mib == 2) << flags;
    EXPECT_EQ(has_flag(flags, "hg"), mib == 4) << flags;
    ASSERT_EQ(shim.madvise(p, len, MADV_DONTNEED), 0) << "other advice passes through";
    ::munmap(p, len);
  }
}

// FORKD_QEMU_CODE_THP on a reserved area (QEMU's code buffer when it asks): collapse leaves it
// unadvised; window:K advises it up to the 2 MiB step K counted from the first aligned one, and
// the rest on a SIGURG (forkd's, before calls); a malformed or out-of-range K advises all of it,
// as without the setting.
TEST(LeanQemu, QemuShimAdvisesTheCodeBufferUpToItsWindow) {
  Shim shim;
  ASSERT_NE(shim.madvise, nullptr) << ::dlerror();
  constexpr uintptr_t kStep = 2u << 20;
  struct Case {
    const char* mode;
    int window;  // -1: advised whole; -2: not advised at all
  };
  for (const Case& c : {Case{"window:1", 1}, Case{"window:3", 3}, Case{"collapse", -2},
                        Case{"window:", -1}, Case{"window:x", -1}, Case{"window:1x", -1},
                        Case{"window:512", -1}, Case{"window:-1", -1}, Case{"window:8", -1}}) {
    SCOPED_TRACE(c.mode);
    ScopedEnv mode("FORKD_QEMU_CODE_THP", c.mode);
    const size_t len = 16u << 20;  // 7 whole steps or 8, as the area falls: K=8 never fits
    void* p = ::mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    ASSERT_NE(p, MAP_FAILED);
    const auto start = reinterpret_cast<uintptr_t>(p);
    const uintptr_t first_step = (start + kStep - 1) / kStep * kStep;
    ASSERT_EQ(shim.madvise(p, len, MADV_HUGEPAGE), 0) << std::strerror(errno);
    if (c.window == -2) {
      EXPECT_FALSE(has_flag(flags_of(start), "hg")) << flags_of(start);
    } else if (c.window == -1) {
      EXPECT_TRUE(has_flag(flags_of(start), "hg")) << flags_of(start);
      EXPECT_EQ(flags_of(first_step + kStep), "") << "one mapping";
    } else {
      const uintptr_t lo = first_step + static_cast<uintptr_t>(c.window) * kStep;
      EXPECT_TRUE(has_flag(flags_of(start), "hg")) << flags_of(start);
      EXPECT_FALSE(has_flag(flags_of(lo), "hg")) << flags_of(lo);
      EXPECT_NE(flags_of(lo), "") << "the rest is a mapping of its own";
      EXPECT_EQ(flags_of(lo + kStep), "") << "the rest is one mapping";
      ASSERT_EQ(::raise(SIGURG), 0);  // handled before raise returns (this thread, unblocked)
      const bool merged = flags_of(lo).empty();  // into the area before it, now alike
      EXPECT_TRUE(merged || has_flag(flags_of(lo), "hg")) << flags_of(lo);
      EXPECT_TRUE(has_flag(flags_of(start), "hg"));
    }
    ::munmap(p, len);
  }
  // The handler lives in the shim, which this test unloads.
  ::signal(SIGURG, SIG_DFL);
  // An area already opened (not ---p) is not the code buffer: advised whole.
  ScopedEnv mode("FORKD_QEMU_CODE_THP", "window:1");
  const size_t len = 8u << 20;
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  ASSERT_EQ(shim.madvise(p, len, MADV_HUGEPAGE), 0);
  EXPECT_TRUE(has_flag(flags_of(reinterpret_cast<uintptr_t>(p)), "hg"));
  ::munmap(p, len);
}

TEST(LeanQemu, VersionIsParsedFromQemusBanner) {
  EXPECT_EQ(parse_qemu_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)\nCopyright"),
            "10.0.2");
  EXPECT_EQ(parse_qemu_version("loader: version GLIBC\nQEMU emulator version 7.2.15\n"), "7.2.15");
  EXPECT_EQ(parse_qemu_version("no banner"), "");
}

// The built stubs: what QEMU binds to exists (with libpmem's symbol version), and capstone opens
// no handle, so QEMU's disassembler gives up instead of printing.
TEST(LeanQemu, StubsExportWhatQemuImports) {
  const std::string dir = lean_qemu_default_dir();
  void* pmem = ::dlopen((dir + "/libpmem.so.1").c_str(), RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(pmem, nullptr) << ::dlerror();
  EXPECT_NE(::dlvsym(pmem, "pmem_persist", "LIBPMEM_1.0"), nullptr);
  EXPECT_NE(::dlvsym(pmem, "pmem_memcpy_persist", "LIBPMEM_1.0"), nullptr);
  ::dlclose(pmem);

  void* cs = ::dlopen((dir + "/libcapstone.so.4").c_str(), RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(cs, nullptr) << ::dlerror();
  using OpenFn = int (*)(int, int, size_t*);
  using MallocFn = void* (*)(size_t);
  auto cs_open = reinterpret_cast<OpenFn>(::dlsym(cs, "cs_open"));
  auto cs_malloc = reinterpret_cast<MallocFn>(::dlsym(cs, "cs_malloc"));
  ASSERT_NE(cs_open, nullptr);
  ASSERT_NE(cs_malloc, nullptr);
  for (const char* name : {"cs_close", "cs_option", "cs_disasm_iter"}) {
    EXPECT_NE(::dlsym(cs, name), nullptr) << name;
  }
  size_t handle = 12345;
  EXPECT_NE(cs_open(3, 0, &handle), 0) << "no handle opens";
  EXPECT_EQ(handle, 0u);
  EXPECT_EQ(cs_malloc(handle), nullptr);
  ::dlclose(cs);
}

// Pages of [p, p + len) that are in memory (/proc/self/pagemap).
size_t present_pages(const void* p, size_t len) {
  UniqueFd fd(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  if (!fd) return SIZE_MAX;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  size_t n = 0;
  for (uintptr_t a = reinterpret_cast<uintptr_t>(p); a < reinterpret_cast<uintptr_t>(p) + len;
       a += page) {
    uint64_t entry = 0;
    if (::pread(fd.get(), &entry, sizeof entry, static_cast<off_t>(a / page * sizeof entry)) !=
        sizeof entry) {
      return SIZE_MAX;
    }
    n += (entry >> 63) & 1;
  }
  return n;
}

// The shim's fdt_create gives the same bytes as libfdt's in every case, and leaves a buffer
// that is zero without being in memory (QEMU's fresh 1 MiB device-tree buffer) out of memory but
// for its first page. A buffer it cannot prove zero (a stray byte, a file's pages not read yet)
// is cleared by the real function.
TEST(LeanQemu, QemuShimMakesTheSameDeviceTreeWithoutTouchingAZeroBuffer) {
  void* fdt = ::dlopen("libfdt.so.1", RTLD_NOW | RTLD_GLOBAL);
  if (fdt == nullptr) GTEST_SKIP() << "libfdt.so.1 not installed: " << ::dlerror();
  void* shim =
      ::dlopen((lean_qemu_default_dir() + "/libforkd-qemu-shim.so").c_str(), RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(shim, nullptr) << ::dlerror();
  using CreateFn = int (*)(void*, int);
  auto shim_create = reinterpret_cast<CreateFn>(::dlsym(shim, "fdt_create"));
  auto real_create = reinterpret_cast<CreateFn>(::dlsym(fdt, "fdt_create"));
  ASSERT_NE(shim_create, nullptr);
  ASSERT_NE(real_create, nullptr);
  constexpr size_t kLen = 1 << 20;
  auto fresh = [&] {
    void* p = ::mmap(nullptr, kLen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return static_cast<unsigned char*>(p == MAP_FAILED ? nullptr : p);
  };
  unsigned char* expected = fresh();
  ASSERT_NE(expected, nullptr);
  ASSERT_EQ(real_create(expected, static_cast<int>(kLen)), 0);

  unsigned char* zero = fresh();
  ASSERT_NE(zero, nullptr);
  ASSERT_EQ(shim_create(zero, static_cast<int>(kLen)), 0);
  EXPECT_EQ(present_pages(zero, kLen), 1u) << "only the header's page is written";
  EXPECT_EQ(std::memcmp(zero, expected, kLen), 0);

  unsigned char* stray = fresh();
  ASSERT_NE(stray, nullptr);
  stray[kLen / 2] = 1;
  ASSERT_EQ(shim_create(stray, static_cast<int>(kLen)), 0);
  EXPECT_EQ(std::memcmp(stray, expected, kLen), 0) << "the stray byte is cleared";

  auto d = TempDir::create("shim-fdt");
  ASSERT_TRUE(d);
  ASSERT_TRUE(write_file_atomic(d->path() + "/ones", std::string(kLen, '\xff')));
  UniqueFd file(::open((d->path() + "/ones").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(file);
  void* mapped = ::mmap(nullptr, kLen, PROT_READ | PROT_WRITE, MAP_PRIVATE, file.get(), 0);
  ASSERT_NE(mapped, MAP_FAILED);
  auto* from_file = static_cast<unsigned char*>(mapped);
  ASSERT_EQ(shim_create(from_file, static_cast<int>(kLen)), 0);
  EXPECT_EQ(std::memcmp(from_file, expected, kLen), 0) << "a file's bytes are not taken for zero";

  unsigned char small[4096];
  std::memset(small, 0, sizeof small);
  unsigned char small_expected[4096];
  std::memset(small_expected, 0, sizeof small_expected);
  ASSERT_EQ(shim_create(small, sizeof small), 0);
  ASSERT_EQ(real_create(small_expected, sizeof small_expected), 0);
  EXPECT_EQ(std::memcmp(small, small_expected, sizeof small), 0);

  for (void* p : {static_cast<void*>(expected), static_cast<void*>(zero), static_cast<void*>(stray),
                  mapped}) {
    ::munmap(p, kLen);
  }
  ::dlclose(shim);
  ::dlclose(fdt);
}

// pmem_persist returns only in a QEMU started with FORKD_PMEM_PERSIST=skip (a branch's
// destination, VmConfig::skip_ram_sync); anywhere else it stops the process, and so does the
// nvdimm label copy.
TEST(LeanQemu, PmemStubSkipsTheSyncOnlyWhereForkdAsked) {
  const std::string lib = lean_qemu_default_dir() + "/libpmem.so.1";
  // In a child process each: a refusal aborts it.
  auto run = [&](const char* setting, bool copy) {
    pid_t pid = ::fork();
    if (pid == 0) {
      if (setting != nullptr) {
        ::setenv("FORKD_PMEM_PERSIST", setting, 1);
      } else {
        ::unsetenv("FORKD_PMEM_PERSIST");
      }
      int null_fd = ::open("/dev/null", O_WRONLY);
      if (null_fd >= 0) ::dup2(null_fd, STDERR_FILENO);
      void* h = ::dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (h == nullptr) ::_exit(3);
      char buf[64] = {};
      if (copy) {
        using CopyFn = void* (*)(void*, const void*, size_t);
        reinterpret_cast<CopyFn>(::dlsym(h, "pmem_memcpy_persist"))(buf, "x", 1);
      } else {
        using PersistFn = void (*)(const void*, size_t);
        reinterpret_cast<PersistFn>(::dlsym(h, "pmem_persist"))(buf, sizeof buf);
      }
      ::_exit(0);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return status;
  };
  int skipped = run("skip", false);
  EXPECT_TRUE(WIFEXITED(skipped) && WEXITSTATUS(skipped) == 0) << skipped;
  for (const char* other : {static_cast<const char*>(nullptr), "", "1", "skipped"}) {
    int st = run(other, false);
    EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT) << (other ? other : "(unset)");
  }
  int copied = run("skip", true);
  EXPECT_TRUE(WIFSIGNALED(copied) && WTERMSIG(copied) == SIGABRT) << copied;
}

// The second set (src/vmm/lean/unused_libs.txt): every library listed is built and exports every
// symbol with the version QEMU binds to; a call stops the process with the symbol's name, but for
// gnutls's start-up and its random bytes, which fill the buffer from the kernel.
TEST(LeanQemu, UnusedStubsExportWhatQemuImportsAndStopOnACall) {
  const std::string dir = lean_qemu_default_dir() + "/" + kUnusedStubsDirName;
  auto list = read_file(std::string(FORKD_SOURCE_DIR) + "/src/vmm/lean/unused_libs.txt", 1 << 20);
  ASSERT_TRUE(list) << list.error().message();
  size_t libs = 0, symbols = 0;
  std::istringstream lines(*list);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("lib", 0) != 0) continue;
    std::istringstream words(line);
    std::string soname, version, sym;
    words >> soname >> version;
    void* h = ::dlopen((dir + "/" + soname).c_str(), RTLD_NOW | RTLD_LOCAL);
    ASSERT_NE(h, nullptr) << ::dlerror();
    ++libs;
    while (words >> sym) {
      if (sym[0] == '+') sym.erase(0, 1);
      void* f =
          version == "-" ? ::dlsym(h, sym.c_str()) : ::dlvsym(h, sym.c_str(), version.c_str());
      EXPECT_NE(f, nullptr) << soname << " " << sym << "@" << version;
      ++symbols;
    }
    ::dlclose(h);
  }
  EXPECT_GE(libs, 10u);
  EXPECT_GE(symbols, 200u);

  void* tls = ::dlopen((dir + "/libgnutls.so.30").c_str(), RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(tls, nullptr) << ::dlerror();
  using InitFn = int (*)();
  using RndFn = int (*)(int, void*, size_t);
  auto init = reinterpret_cast<InitFn>(::dlvsym(tls, "gnutls_global_init", "GNUTLS_3_4"));
  auto rnd = reinterpret_cast<RndFn>(::dlvsym(tls, "gnutls_rnd", "GNUTLS_3_4"));
  ASSERT_NE(init, nullptr);
  ASSERT_NE(rnd, nullptr);
  EXPECT_EQ(init(), 0);
  unsigned char a[4096] = {}, b[4096] = {};
  ASSERT_EQ(rnd(1, a, sizeof a), 0);
  ASSERT_EQ(rnd(1, b, sizeof b), 0);
  EXPECT_NE(std::memcmp(a, b, sizeof a), 0);
  size_t zeros = 0;
  for (unsigned char c : a) zeros += c == 0;
  EXPECT_LT(zeros, 64u) << "about 16 of 4096 random bytes are zero";
  ::dlclose(tls);

  // Any other symbol: the process stops, saying which one QEMU called.
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(pipe_fds[1], STDERR_FILENO);
    void* h = ::dlopen((dir + "/libgnutls.so.30").c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) ::_exit(3);
    using ByeFn = int (*)(void*, int);
    reinterpret_cast<ByeFn>(::dlvsym(h, "gnutls_bye", "GNUTLS_3_4"))(nullptr, 0);
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  std::string said;
  char buf[256];
  for (ssize_t n; (n = ::read(pipe_fds[0], buf, sizeof buf)) > 0;) said.append(buf, n);
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT) << status;
  EXPECT_NE(said.find("QEMU called gnutls_bye"), std::string::npos) << said;
}

// With this host's QEMU: it starts with the stubs and the shim and reports the same version; a
// broken stub or shim, or a directory without stubs, is not used, with the reason.
TEST(LeanQemu, ProbeStartsTheRealQemu) {
  const std::string qemu = default_qemu_binary();
  if (find_in_path(qemu).empty() && qemu.find('/') == std::string::npos) {
    GTEST_SKIP() << qemu << " not installed";
  }
  auto lean = probe_lean_qemu(qemu, lean_qemu_default_dir());
  EXPECT_FALSE(lean.dir.empty()) << lean.reason;
  EXPECT_EQ(lean.version, probe_qemu_version(qemu));
  EXPECT_TRUE(lean.pmem_stub) << "Debian's QEMU links libpmem";
  // unused_libs.txt was made from the QEMU install-deps installs.
  if (lean.version == "10.0.2") {
    EXPECT_TRUE(lean.unused_stubs) << lean.unused_reason;
  }
  if (lean.unused_stubs) {
    EXPECT_NE(
        lean_qemu_env(lean.dir, true)["LD_LIBRARY_PATH"].find(lean.dir + "/unused:" + lean.dir),
        std::string::npos);
  }

  // A copy of the built stubs' directory, to break one part of.
  auto copy_of_lean_dir = [](const char* name) -> std::optional<TempDir> {
    auto d = TempDir::create(name);
    if (!d) return std::nullopt;
    std::error_code ec;
    std::filesystem::copy(
        lean_qemu_default_dir(), d->path(),
        std::filesystem::copy_options::recursive | std::filesystem::copy_options::copy_symlinks,
        ec);
    if (ec) return std::nullopt;
    return std::move(*d);
  };

  // A second set that QEMU cannot start with (a symbol missing) leaves the first in use.
  auto copy = copy_of_lean_dir("lean-probe-unused");
  ASSERT_TRUE(copy);
  const std::string tls = copy->path() + "/" + kUnusedStubsDirName + "/libgnutls.so.30";
  ASSERT_EQ(::unlink(tls.c_str()), 0);
  auto capstone = read_file(lean_qemu_default_dir() + "/libcapstone.so.4");
  ASSERT_TRUE(capstone);
  ASSERT_TRUE(write_file_atomic(tls, *capstone, 0644));  // a library, but not gnutls
  auto fallback = probe_lean_qemu(qemu, copy->path());
  EXPECT_FALSE(fallback.dir.empty()) << fallback.reason;
  EXPECT_FALSE(fallback.unused_stubs);
  EXPECT_NE(fallback.unused_reason.find("does not start"), std::string::npos)
      << fallback.unused_reason;

  // A set made for another QEMU version is not used either, even where QEMU starts with it.
  if (lean.unused_stubs) {
    auto other = copy_of_lean_dir("lean-probe-version");
    ASSERT_TRUE(other);
    const std::string for_file = other->path() + "/" + kUnusedStubsDirName + "/for-qemu";
    ASSERT_TRUE(write_file_atomic(for_file, "9.2.0\n", 0644));
    auto mismatch = probe_lean_qemu(qemu, other->path());
    EXPECT_FALSE(mismatch.dir.empty()) << mismatch.reason;
    EXPECT_FALSE(mismatch.unused_stubs);
    EXPECT_NE(mismatch.unused_reason.find("made for QEMU 9.2.0, this one is " + lean.version),
              std::string::npos)
        << mismatch.unused_reason;
  }

  auto d = TempDir::create("lean-probe");
  ASSERT_TRUE(d);
  auto none = probe_lean_qemu(qemu, d->path());
  EXPECT_TRUE(none.dir.empty());
  EXPECT_FALSE(none.pmem_stub);
  EXPECT_NE(none.reason.find("links neither"), std::string::npos) << none.reason;

  ASSERT_TRUE(write_file_atomic(d->path() + "/libcapstone.so.4", "not a library"));
  ASSERT_EQ(::chmod((d->path() + "/libcapstone.so.4").c_str(), 0644), 0);
  auto broken = probe_lean_qemu(qemu, d->path());
  EXPECT_TRUE(broken.dir.empty());
  EXPECT_NE(broken.reason.find("does not start"), std::string::npos) << broken.reason;

  // The loader only warns about a preload it cannot load, and QEMU starts: the probe still
  // refuses a directory whose shim was not mapped.
  auto s = TempDir::create("lean-probe-shim");
  ASSERT_TRUE(s);
  auto pmem = read_file(lean_qemu_default_dir() + "/libpmem.so.1");
  ASSERT_TRUE(pmem);
  ASSERT_TRUE(write_file_atomic(s->path() + "/libpmem.so.1", *pmem));
  ASSERT_TRUE(write_file_atomic(s->path() + "/libforkd-qemu-shim.so", "not a library"));
  for (const char* f : {"/libpmem.so.1", "/libforkd-qemu-shim.so"}) {
    ASSERT_EQ(::chmod((s->path() + f).c_str(), 0644), 0);
  }
  auto unloaded = probe_lean_qemu(qemu, s->path());
  EXPECT_TRUE(unloaded.dir.empty());
  EXPECT_NE(unloaded.reason.find("did not preload"), std::string::npos) << unloaded.reason;
}

// The shim's posix_fadvise keeps a file's page cache where QEMU asks to drop it (a disk's
// activation), and passes other advice on. Checked against libc's own first: on a file system
// whose cache the advice cannot drop (tmpfs) there is nothing to show.
TEST(LeanQemu, ShimKeepsThePageCacheQemuAsksToDrop) {
  using FadviseFn = int (*)(int, off_t, off_t, int);
  Shim shim;
  ASSERT_NE(shim.handle, nullptr) << ::dlerror();
  auto shim_fadvise = reinterpret_cast<FadviseFn>(::dlsym(shim.handle, "posix_fadvise"));
  auto shim_fadvise64 = reinterpret_cast<FadviseFn>(::dlsym(shim.handle, "posix_fadvise64"));
  ASSERT_NE(shim_fadvise, nullptr);
  ASSERT_NE(shim_fadvise64, nullptr);
  // Beside the build (a disk file system), not in /tmp, which may be tmpfs.
  const std::string path =
      lean_qemu_default_dir() + "/../fadvise-test-" + std::to_string(::getpid()) + ".bin";
  ASSERT_TRUE(write_file_atomic(path, std::string(4 << 20, 'x')));
  struct Remove {  // on every way out, failed assertions included
    std::string path;
    ~Remove() { ::unlink(path.c_str()); }
  } remove{path};
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd);
  auto fill = [&] { ASSERT_TRUE(read_chunks(path, [](const char*, size_t) {})); };
  fill();
  const size_t all = page_cache_pages(path);
  ASSERT_GT(all, 0u);
  ASSERT_EQ(::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED), 0);
  if (page_cache_pages(path) == all) {
    GTEST_SKIP() << "this file system keeps its cache against the advice anyway";
  }
  fill();
  EXPECT_EQ(shim_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED), 0);
  EXPECT_EQ(shim_fadvise64(fd.get(), 0, 0, POSIX_FADV_DONTNEED), 0);
  EXPECT_GE(page_cache_pages(path), all) << "the shim dropped the cache";
  EXPECT_EQ(shim_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL), 0) << "other advice passes";
  EXPECT_EQ(shim_fadvise(-1, 0, 0, POSIX_FADV_SEQUENTIAL), EBADF) << "and its errors come back";
}

}  // namespace
}  // namespace forkd::vmm

#include "vmm/code_pages.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>

#include "base/files.h"
#include "base/unique_fd.h"

namespace forkd::vmm {
namespace {

TEST(CodePages, FindsTheLargestWritableExecutableAnonymousMapping) {
  const std::string maps =
      "55d0c0000000-55d0c0100000 r-xp 00000000 fe:00 123 /usr/bin/qemu-system-x86_64\n"
      "7f0000000000-7f0000400000 rwxp 00000000 00:00 0 \n"
      "7f1000000000-7f1040000000 rwxp 00000000 00:00 0\n"
      "7f2000000000-7f2080000000 rwxp 00000000 fe:00 99 /tmp/a file\n"
      "7f3000000000-7f30c0000000 rw-p 00000000 00:00 0 \n"
      "7f4000000000-7f4100000000 rwxp 00000000 00:00 0 [heap]\n"
      "not a line at all\n"
      "7f5000000000-7f4000000000 rwxp 00000000 00:00 0\n"
      "7f6000000000-7f6000100000 rwxp 00000000 00:00 0";
  auto found = find_code_buffer(maps);
  ASSERT_TRUE(found);
  EXPECT_EQ(found->first, 0x7f1000000000u);
  EXPECT_EQ(found->second, 0x7f1040000000u);
  EXPECT_FALSE(find_code_buffer("7f0000000000-7f0000400000 r-xp 00000000 00:00 0\n"));
  EXPECT_FALSE(find_code_buffer(""));
}

// Kernel pages of a mapping from /proc/PID/smaps (kB): Rss and AnonHugePages.
std::pair<long, long> rss_and_huge(pid_t pid, uintptr_t start) {
  auto smaps = read_file("/proc/" + std::to_string(pid) + "/smaps");
  if (!smaps) return {-1, -1};
  std::istringstream in(*smaps);
  std::string line;
  bool ours = false;
  long rss = -1, huge = -1;
  while (std::getline(in, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2) {
      ours = lo <= start && start < hi;
    } else if (ours && line.rfind("Rss:", 0) == 0) {
      rss = std::atol(line.c_str() + 4);
    } else if (ours && line.rfind("AnonHugePages:", 0) == 0) {
      huge = std::atol(line.c_str() + 14);
    }
  }
  return {rss, huge};
}

// A child process stands in for QEMU: a writable, executable anonymous buffer filled from its
// start in 4 KiB pages, 2 MiB steps at a time. Only whole steps become huge pages, each once.
TEST(CodePages, CollapsesTheWholeStepsOfAnotherProcessOnly) {
  auto thp = read_file("/sys/kernel/mm/transparent_hugepage/enabled");
  if (!thp || thp->find("[madvise]") == std::string::npos) GTEST_SKIP() << "THP mode not madvise";
  if (!can_collapse_other_processes()) GTEST_SKIP() << "needs CAP_SYS_NICE";
  const size_t size = 32u << 20;
  auto* buf = static_cast<unsigned char*>(::mmap(nullptr, size, PROT_READ | PROT_WRITE | PROT_EXEC,
                                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(buf, MAP_FAILED);
  const auto start = reinterpret_cast<uintptr_t>(buf);
  const uintptr_t first_step = (start + kHugeStep - 1) / kHugeStep * kHugeStep;
  int to_child[2], to_parent[2];
  ASSERT_EQ(::pipe(to_child), 0);
  ASSERT_EQ(::pipe(to_parent), 0);
  // The parent's ends close however the test ends, and the child then exits.
  UniqueFd child_in(to_child[0]), child_tell(to_child[1]), parent_in(to_parent[0]),
      parent_tell(to_parent[1]);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Fills up to the byte count the parent sends, then reports; ends when the parent closes.
    ::close(to_child[1]);
    ::close(to_parent[0]);
    uint64_t upto = 0;
    while (::read(to_child[0], &upto, sizeof upto) == sizeof upto) {
      for (uintptr_t p = start; p < first_step + upto; p += 4096) buf[p - start] = 0xc3;
      char done = 1;
      if (::write(to_parent[1], &done, 1) != 1) ::_exit(1);
    }
    ::_exit(0);
  }
  child_in.reset();
  parent_tell.reset();
  auto fill = [&](uint64_t upto) {
    char done = 0;
    return ::write(child_tell.get(), &upto, sizeof upto) == sizeof upto &&
           ::read(parent_in.get(), &done, 1) == 1;
  };
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  ASSERT_TRUE(pidfd);
  CodePages pages;
  ASSERT_TRUE(fill(2 * kHugeStep + kHugeStep / 2));  // two steps and half of the third
  EXPECT_EQ(pages.collapse(pid, pidfd.get()), 2);
  auto [rss, huge] = rss_and_huge(pid, start);
  EXPECT_EQ(huge, 4096);
  EXPECT_EQ(rss, static_cast<long>((first_step - start + 2 * kHugeStep + kHugeStep / 2) / 1024));
  EXPECT_EQ(pages.collapse(pid, pidfd.get()), 0) << "the third step is not whole yet";
  ASSERT_TRUE(fill(3 * kHugeStep));
  EXPECT_EQ(pages.collapse(pid, pidfd.get()), 1);
  EXPECT_EQ(rss_and_huge(pid, start).second, 6144);
  // A fresh handle (a CLI attaching) walks the done steps again, which the kernel takes as done.
  CodePages again;
  EXPECT_EQ(again.collapse(pid, pidfd.get()), 3);
  EXPECT_EQ(rss_and_huge(pid, start).second, 6144);
  child_tell.reset();
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(pages.collapse(pid, -1), 0);
  ::munmap(buf, size);
}

// A process without a code buffer (KVM's QEMU, say) is given up at once.
TEST(CodePages, AProcessWithoutACodeBufferIsLeftAlone) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::pause();
    ::_exit(0);
  }
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  CodePages pages;
  EXPECT_EQ(pages.collapse(pid, pidfd.get()), 0);
  EXPECT_EQ(pages.collapse(pid, pidfd.get()), 0);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

}  // namespace
}  // namespace forkd::vmm

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
  // The shim's window splits the buffer by advice into adjacent pieces: they are one buffer.
  const std::string pieces =
      "7f0000000000-7f0000800000 rwxp 00000000 00:00 0 \n"
      "7f1000000000-7f1000400000 rwxp 00000000 00:00 0 \n"
      "7f1000400000-7f1000600000 rwxp 00000000 00:00 0 \n"
      "7f1000600000-7f1001000000 rwxp 00000000 00:00 0 \n"
      "7f1001000000-7f1001200000 rw-p 00000000 00:00 0 \n";
  found = find_code_buffer(pieces);
  ASSERT_TRUE(found);
  EXPECT_EQ(found->first, 0x7f1000000000u);
  EXPECT_EQ(found->second, 0x7f1001000000u);
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

// A child process stands in for QEMU: a writable, executable anonymous buffer (mapped before the
// fork, so both see it at one address), filled from its start in 4 KiB pages up to the byte
// count the parent sends. The child ends when the parent closes its pipe.
class Filler {
 public:
  static constexpr size_t kSize = 32u << 20;

  // advise(start, first_step) runs in the parent before the fork (the child inherits it).
  template <typename Advise>
  explicit Filler(Advise advise) {
    buf_ = static_cast<unsigned char*>(::mmap(nullptr, kSize, PROT_READ | PROT_WRITE | PROT_EXEC,
                                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (buf_ == MAP_FAILED) return;
    start = reinterpret_cast<uintptr_t>(buf_);
    first_step = (start + kHugeStep - 1) / kHugeStep * kHugeStep;
    advise(start, first_step);
    int to_child[2], to_parent[2];
    if (::pipe(to_child) != 0 || ::pipe(to_parent) != 0) return;
    UniqueFd child_in(to_child[0]), parent_tell(to_parent[1]);
    tell_.reset(to_child[1]);
    hear_.reset(to_parent[0]);
    pid = ::fork();
    if (pid == 0) {
      tell_.reset();
      hear_.reset();
      uint64_t upto = 0;
      while (::read(to_child[0], &upto, sizeof upto) == sizeof upto) {
        for (uintptr_t p = start; p < first_step + upto; p += 4096) buf_[p - start] = 0xc3;
        char done = 1;
        if (::write(to_parent[1], &done, 1) != 1) ::_exit(1);
      }
      ::_exit(0);
    }
    if (pid > 0) pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  }
  ~Filler() {
    if (pid > 0) {
      tell_.reset();
      ::waitpid(pid, nullptr, 0);
    }
    if (buf_ != MAP_FAILED) ::munmap(buf_, kSize);
  }
  bool ok() const { return pid > 0 && pidfd; }
  // Fills up to upto bytes past the first whole step.
  bool fill(uint64_t upto) {
    char done = 0;
    return ::write(tell_.get(), &upto, sizeof upto) == sizeof upto &&
           ::read(hear_.get(), &done, 1) == 1;
  }
  // Waits for the child's clean end.
  bool finish() {
    tell_.reset();
    int status = 0;
    bool clean = ::waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    pid = -1;
    return clean;
  }

  uintptr_t start = 0, first_step = 0;
  pid_t pid = -1;
  UniqueFd pidfd;

 private:
  unsigned char* buf_ = static_cast<unsigned char*>(MAP_FAILED);
  UniqueFd tell_, hear_;
};

bool can_collapse_here(std::string* why) {
  auto thp = read_file("/sys/kernel/mm/transparent_hugepage/enabled");
  if (!thp || thp->find("[madvise]") == std::string::npos)
    *why = "THP mode not madvise";
  else if (!can_collapse_other_processes())
    *why = "needs CAP_SYS_NICE";
  return why->empty();
}

// In 4 KiB pages all along (the shim's collapse mode), only whole steps become huge pages, each
// once.
TEST(CodePages, CollapsesTheWholeStepsOfAnotherProcessOnly) {
  if (std::string why; !can_collapse_here(&why)) GTEST_SKIP() << why;
  Filler f([](uintptr_t, uintptr_t) {});
  ASSERT_TRUE(f.ok());
  CodePages pages;
  ASSERT_TRUE(f.fill(2 * kHugeStep + kHugeStep / 2));  // two steps and half of the third
  EXPECT_EQ(pages.collapse(f.pid, f.pidfd.get()), 2);
  auto [rss, huge] = rss_and_huge(f.pid, f.start);
  EXPECT_EQ(huge, 4096);
  EXPECT_EQ(rss,
            static_cast<long>((f.first_step - f.start + 2 * kHugeStep + kHugeStep / 2) / 1024));
  EXPECT_EQ(pages.collapse(f.pid, f.pidfd.get()), 0) << "the third step is not whole yet";
  ASSERT_TRUE(f.fill(3 * kHugeStep));
  EXPECT_EQ(pages.collapse(f.pid, f.pidfd.get()), 1);
  EXPECT_EQ(rss_and_huge(f.pid, f.start).second, 6144);
  // A fresh handle (a CLI attaching) walks the done steps again, which the kernel takes as done.
  CodePages again;
  EXPECT_EQ(again.collapse(f.pid, f.pidfd.get()), 3);
  EXPECT_EQ(rss_and_huge(f.pid, f.start).second, 6144);
  const pid_t pid = f.pid;
  EXPECT_TRUE(f.finish());
  EXPECT_EQ(pages.collapse(pid, -1), 0);
}

// The shim's window mode while the child is idle: huge pages advised up to step 2, the rest not
// (two mappings). The buffer is found whole, the last written step is where the filling stands,
// and from step 2 on the buffer holds just the pages written, until collapse_written_from makes
// every written step huge (a partial one with zeros).
TEST(CodePages, PastTheWindowOnlyWrittenPagesUntilCollapsed) {
  if (std::string why; !can_collapse_here(&why)) GTEST_SKIP() << why;
  Filler f([](uintptr_t start, uintptr_t first_step) {
    ::madvise(reinterpret_cast<void*>(start), first_step + 2 * kHugeStep - start, MADV_HUGEPAGE);
  });
  ASSERT_TRUE(f.ok());
  auto maps = read_file("/proc/" + std::to_string(f.pid) + "/maps");
  ASSERT_TRUE(maps);
  auto found = find_code_buffer(*maps);
  ASSERT_TRUE(found);
  EXPECT_EQ(found->first, f.start);
  EXPECT_EQ(found->second, f.start + Filler::kSize);
  const uintptr_t window = f.first_step + 2 * kHugeStep;
  CodePages pages;
  EXPECT_FALSE(pages.last_written_step(f.pid)) << "nothing written yet";
  ASSERT_TRUE(f.fill(3 * kHugeStep + kHugeStep / 4));
  EXPECT_EQ(pages.last_written_step(f.pid), 3);
  EXPECT_EQ(rss_and_huge(f.pid, f.first_step).second, 4096) << "steps 0 and 1 huge from the start";
  EXPECT_EQ(rss_and_huge(f.pid, window), std::make_pair(2560L, 0L))
      << "steps 2-3: what was written";
  EXPECT_EQ(pages.collapse_written_from(f.pid, f.pidfd.get(), 2), 2);
  EXPECT_EQ(rss_and_huge(f.pid, window), std::make_pair(4096L, 4096L));
  // The handle starts again at the last step it did (it may have been filling then); a fresh one
  // walks them all, which the kernel takes as done.
  EXPECT_EQ(pages.collapse_written_from(f.pid, f.pidfd.get(), 2), 1);
  CodePages again;
  EXPECT_EQ(again.collapse_written_from(f.pid, f.pidfd.get(), 2), 2);
  EXPECT_EQ(rss_and_huge(f.pid, window), std::make_pair(4096L, 4096L));
  EXPECT_EQ(pages.collapse_written_from(f.pid, f.pidfd.get(), -1), 0);
  EXPECT_EQ(pages.collapse_written_from(f.pid, f.pidfd.get(), kMaxCodeWindow), 0);
  EXPECT_EQ(pages.collapse_written_from(f.pid, f.pidfd.get(), 16), 0) << "past the buffer's end";
  EXPECT_TRUE(f.finish());
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
  EXPECT_FALSE(pages.last_written_step(pid));
  EXPECT_EQ(pages.collapse_written_from(pid, pidfd.get(), 0), 0);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

}  // namespace
}  // namespace forkd::vmm

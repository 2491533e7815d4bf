#pragma once
// TCG's code buffer and transparent huge pages.
//
// QEMU asks for huge pages on its whole TCG code buffer (1 GiB, reserved), so on a host whose THP
// mode is `madvise` the 2 MiB step TCG is filling is a whole huge page from its first byte: an
// idle child that translated 5.3 MiB of code holds 6, and on average half a huge page per child
// is zeros. Translated code runs faster from huge pages (fewer TLB misses), so QEMU's request is
// not simply dropped: a QEMU started with kCodePagesEnv=kCodePagesCollapse has forkd's shim
// (lean/qemu_shim.c) leave that one request out, TCG's pages come 4 KiB at a time, and forkd
// collapses each 2 MiB step TCG has filled into a huge page (MADV_COLLAPSE through
// process_madvise, Linux 6.1+), at the points where a child has just translated new code: after
// its restore and after each agent call. Only the step TCG is still filling stays in small pages.
//
// TCG fills its buffer from the start, one region per vCPU thread; with one vCPU there is one
// region, so the filled steps are a prefix (VmConfig::collapse_code_pages asks for the shim's
// part only then).
//
// That costs a child's first calls 25-60 % (they translate megabytes into small pages), so the
// default is narrower: with kCodePagesEnv=kCodePagesWindow + K the shim advises huge pages up to
// step K, the one where TCG stood when an earlier child of the same tag had just been restored
// (engine/code_window.h), and leaves the rest of the buffer in small pages while the child is
// idle: what TCG translates there after the restore (a python child ~1.3 MiB in its first
// seconds) takes only the pages it writes, not whole huge pages. Before each agent call forkd
// sends QEMU kCodePagesSignal, on which the shim advises huge pages for the rest too, and
// collapses the steps TCG wrote from K on (collapse_written_from), so the call translates into
// huge pages as before. Both are no-ops from the second call on.
#include <signal.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>

namespace forkd::vmm {

inline constexpr const char* kCodePagesEnv = "FORKD_QEMU_CODE_THP";
inline constexpr const char* kCodePagesCollapse = "collapse";
inline constexpr const char* kCodePagesWindow = "window:";
// What the shim's window mode answers (lean/qemu_shim.c); ignored by default, so harmless to a
// QEMU without the shim's handler.
inline constexpr int kCodePagesSignal = SIGURG;
inline constexpr uint64_t kHugeStep = 2u << 20;
// The shim's bound on K (a 1 GiB buffer); the same number is in lean/qemu_shim.c.
inline constexpr int kMaxCodeWindow = 512;

// The TCG code buffer in the text of /proc/PID/maps: the largest private anonymous mapping that
// is writable and executable at once (TCG's buffer without split-wx). nullopt when there is none
// (KVM, or TCG with split-wx).
std::optional<std::pair<uint64_t, uint64_t>> find_code_buffer(std::string_view maps);

// Whether forkd may collapse another process's pages: process_madvise needs CAP_SYS_NICE.
bool can_collapse_other_processes();

// Per QEMU process; shared by the copies of its VmProcess's handle, safe from several threads
// (a call finding another in progress returns at once).
class CodePages {
 public:
  CodePages();
  ~CodePages();
  CodePages(const CodePages&) = delete;
  CodePages& operator=(const CodePages&) = delete;

  // Collapses the 2 MiB steps of pid's code buffer (pidfd names the same process) that are whole
  // (every page present) from the first one not collapsed yet, and returns how many it
  // collapsed. A step already in a huge page counts as done. Gives up for good on a process that
  // has no code buffer or where the kernel refuses (no THP for it, no permission), and stops at a
  // step the kernel cannot collapse now (no free huge page), to try again next time.
  int collapse(pid_t pid, int pidfd);

  // The last step TCG has written to (its first page present), counted from the buffer's first
  // whole step, as far as the first step it has not: where an idle child's TCG stands. nullopt
  // without a buffer, or when nothing is written.
  std::optional<int> last_written_step(pid_t pid);

  // Makes every step TCG has written to from step k on one huge page (MADV_COLLAPSE; the pages of
  // a step TCG has not written become zeros of it), up to the first step it has not written, and
  // returns how many it asked for. Cheap for steps that are huge already; a handle starts after
  // the steps it did before.
  int collapse_written_from(pid_t pid, int pidfd, int k);

 private:
  struct State;
  bool find_buffer(pid_t pid);  // with State::mu held; false: nothing to do, ever
  std::unique_ptr<State> state_;
};

}  // namespace forkd::vmm

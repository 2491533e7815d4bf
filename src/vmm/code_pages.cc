#include "vmm/code_pages.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <mutex>
#include <string>

#include "base/files.h"
#include "base/unique_fd.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

namespace forkd::vmm {

namespace {

constexpr size_t kPage = 4096;
constexpr size_t kStepPages = kHugeStep / kPage;
// /proc/PID/maps of a QEMU holds a few hundred lines; a process that made far more mappings is
// left alone.
constexpr size_t kMaxMapsBytes = 4u << 20;

bool parse_hex(std::string_view s, uint64_t* out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out, 16);
  return ec == std::errc() && p == s.data() + s.size();
}

std::string_view next_field(std::string_view* line) {
  size_t start = line->find_first_not_of(' ');
  if (start == std::string_view::npos) {
    *line = {};
    return {};
  }
  size_t end = line->find(' ', start);
  std::string_view field = line->substr(start, end == std::string_view::npos ? end : end - start);
  *line = end == std::string_view::npos ? std::string_view() : line->substr(end);
  return field;
}

}  // namespace

std::optional<std::pair<uint64_t, uint64_t>> find_code_buffer(std::string_view maps) {
  std::optional<std::pair<uint64_t, uint64_t>> best, run;
  while (!maps.empty()) {
    size_t nl = maps.find('\n');
    std::string_view line = maps.substr(0, nl);
    maps = nl == std::string_view::npos ? std::string_view() : maps.substr(nl + 1);
    std::string_view range = next_field(&line), perms = next_field(&line);
    next_field(&line);  // offset
    next_field(&line);  // device
    std::string_view inode = next_field(&line), name = next_field(&line);
    size_t dash = range.find('-');
    uint64_t lo = 0, hi = 0;
    if (dash == std::string_view::npos || !parse_hex(range.substr(0, dash), &lo) ||
        !parse_hex(range.substr(dash + 1), &hi) || hi <= lo) {
      continue;
    }
    if (perms != "rwxp" || inode != "0" || !name.empty()) continue;
    // Pieces that differ only in their advice (a window of small pages) are one buffer.
    if (run && run->second == lo) {
      run->second = hi;
    } else {
      run = std::make_pair(lo, hi);
    }
    if (!best || run->second - run->first > best->second - best->first) best = run;
  }
  return best;
}

bool can_collapse_other_processes() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  std::array<__user_cap_data_struct, _LINUX_CAPABILITY_U32S_3> data{};
  if (::syscall(SYS_capget, &header, data.data()) != 0) return false;
  return (data[CAP_SYS_NICE / 32].effective >> (CAP_SYS_NICE % 32) & 1) != 0;
}

struct CodePages::State {
  std::mutex mu;
  bool searched = false;
  bool off = false;         // nothing to do in this process, ever
  uint64_t first_step = 0;  // address of the first whole 2 MiB step of the buffer
  uint64_t end = 0;
  uint64_t next = 0;         // the first step not collapsed yet
  uint64_t window_next = 0;  // collapse_written_from: the last step it collapsed
};

CodePages::CodePages() : state_(std::make_unique<State>()) {}
CodePages::~CodePages() = default;

bool CodePages::find_buffer(pid_t pid) {
  State& s = *state_;
  if (s.off || pid <= 0) return false;
  if (s.searched) return true;
  s.searched = true;
  auto maps = read_file("/proc/" + std::to_string(pid) + "/maps", kMaxMapsBytes);
  auto buffer = maps ? find_code_buffer(*maps) : std::nullopt;
  if (!buffer) {
    s.off = true;
    return false;
  }
  s.first_step = (buffer->first + kHugeStep - 1) / kHugeStep * kHugeStep;
  s.end = buffer->second;
  s.next = s.first_step;
  return true;
}

namespace {

UniqueFd open_pagemap(pid_t pid) {
  return UniqueFd(
      ::open(("/proc/" + std::to_string(pid) + "/pagemap").c_str(), O_RDONLY | O_CLOEXEC));
}

// Whether TCG has written to the step at `at`: its first page is present (TCG fills a step from
// its start).
bool written(int pagemap, uint64_t at) {
  uint64_t entry = 0;
  return ::pread(pagemap, &entry, sizeof entry, static_cast<off_t>(at / kPage * sizeof entry)) ==
             sizeof entry &&
         (entry >> 63 & 1) != 0;
}

bool collapse_range(int pidfd, uint64_t at) {
  iovec step{reinterpret_cast<void*>(at), kHugeStep};
  return ::syscall(SYS_process_madvise, pidfd, &step, 1, MADV_COLLAPSE, 0) ==
         static_cast<long>(kHugeStep);
}

}  // namespace

int CodePages::collapse(pid_t pid, int pidfd) {
  std::unique_lock lock(state_->mu, std::try_to_lock);
  State& s = *state_;
  if (!lock.owns_lock() || pidfd < 0 || !find_buffer(pid)) return 0;
  UniqueFd pagemap = open_pagemap(pid);
  if (!pagemap) {
    s.off = true;
    return 0;
  }
  int collapsed = 0;
  std::array<uint64_t, kStepPages> entries;
  while (s.next + kHugeStep <= s.end) {
    const auto bytes = static_cast<ssize_t>(sizeof entries);
    if (::pread(pagemap.get(), entries.data(), sizeof entries,
                static_cast<off_t>(s.next / kPage * sizeof(uint64_t))) != bytes) {
      break;
    }
    for (uint64_t e : entries) {
      if ((e >> 63 & 1) == 0) return collapsed;  // TCG has not filled this step yet
    }
    if (!collapse_range(pidfd, s.next)) {
      // EAGAIN/ENOMEM: no huge page to be had now; anything else will not change.
      if (errno != EAGAIN && errno != ENOMEM) s.off = true;
      break;
    }
    s.next += kHugeStep;
    ++collapsed;
  }
  return collapsed;
}

std::optional<int> CodePages::last_written_step(pid_t pid) {
  std::lock_guard lock(state_->mu);
  State& s = *state_;
  if (!find_buffer(pid)) return std::nullopt;
  UniqueFd pagemap = open_pagemap(pid);
  if (!pagemap) return std::nullopt;
  std::optional<int> last;
  for (uint64_t at = s.first_step;
       at + kHugeStep <= s.end && at - s.first_step < kHugeStep * kMaxCodeWindow; at += kHugeStep) {
    if (!written(pagemap.get(), at)) break;
    last = static_cast<int>((at - s.first_step) / kHugeStep);
  }
  return last;
}

int CodePages::collapse_written_from(pid_t pid, int pidfd, int k) {
  std::lock_guard lock(state_->mu);
  State& s = *state_;
  if (k < 0 || k >= kMaxCodeWindow || pidfd < 0 || !find_buffer(pid)) return 0;
  UniqueFd pagemap = open_pagemap(pid);
  if (!pagemap) return 0;
  // The last step done before may have been filling then: it is huge now, and so is what TCG
  // added to it since. Start there.
  uint64_t at = std::max(s.first_step + static_cast<uint64_t>(k) * kHugeStep, s.window_next);
  int asked = 0;
  for (; at + kHugeStep <= s.end; at += kHugeStep) {
    if (!written(pagemap.get(), at)) break;
    (void)collapse_range(pidfd, at);  // a step it cannot take now stays small: slower, not wrong
    s.window_next = at;
    ++asked;
  }
  return asked;
}

}  // namespace forkd::vmm

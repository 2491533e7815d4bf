#include "vmm/code_pages.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

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
  std::optional<std::pair<uint64_t, uint64_t>> best;
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
    if (!best || hi - lo > best->second - best->first) best = std::make_pair(lo, hi);
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
  uint64_t next = 0;  // the first step not collapsed yet
};

CodePages::CodePages() : state_(std::make_unique<State>()) {}
CodePages::~CodePages() = default;

int CodePages::collapse(pid_t pid, int pidfd) {
  std::unique_lock lock(state_->mu, std::try_to_lock);
  State& s = *state_;
  if (!lock.owns_lock() || s.off || pid <= 0 || pidfd < 0) return 0;
  if (!s.searched) {
    s.searched = true;
    auto maps = read_file("/proc/" + std::to_string(pid) + "/maps", kMaxMapsBytes);
    auto buffer = maps ? find_code_buffer(*maps) : std::nullopt;
    if (!buffer) {
      s.off = true;
      return 0;
    }
    s.first_step = (buffer->first + kHugeStep - 1) / kHugeStep * kHugeStep;
    s.end = buffer->second;
    s.next = s.first_step;
  }
  UniqueFd pagemap(
      ::open(("/proc/" + std::to_string(pid) + "/pagemap").c_str(), O_RDONLY | O_CLOEXEC));
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
    iovec step{reinterpret_cast<void*>(s.next), kHugeStep};
    if (::syscall(SYS_process_madvise, pidfd, &step, 1, MADV_COLLAPSE, 0) !=
        static_cast<long>(kHugeStep)) {
      // EAGAIN/ENOMEM: no huge page to be had now; anything else will not change.
      if (errno != EAGAIN && errno != ENOMEM) s.off = true;
      break;
    }
    s.next += kHugeStep;
    ++collapsed;
  }
  return collapsed;
}

}  // namespace forkd::vmm

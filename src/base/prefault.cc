#include "base/prefault.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <system_error>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace forkd {

namespace {
constexpr uint64_t kChunk = 4ull << 20;
}  // namespace

FilePrefaulter::FilePrefaulter(const std::string& path, uint64_t bytes) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return;
  try {
    thread_ = std::thread([this, fd, bytes] { run(fd, bytes); });
  } catch (const std::system_error&) {
    ::close(fd);
  }
}

FilePrefaulter::~FilePrefaulter() { stop(); }

void FilePrefaulter::stop() {
  stop_.store(true);
  wait();
}

void FilePrefaulter::wait() {
  if (thread_.joinable()) thread_.join();
}

void FilePrefaulter::run(int fd, uint64_t bytes) {
  // Only on otherwise idle CPU time: the copy's own threads, and the branch's pause (the
  // caller's `cont` after the switchover), come first.
  sched_param idle{};
  (void)::sched_setscheduler(0, SCHED_IDLE, &idle);
  void* map =
      bytes > 0 ? ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
  ::close(fd);
  if (map == MAP_FAILED) return;
  char* base = static_cast<char*>(map);
  // From the end: the writer starts at the front, so the two meet somewhere in between.
  for (uint64_t end = bytes; end > 0 && !stop_.load();) {
    const uint64_t start = end > kChunk ? end - kChunk : 0;
    if (::madvise(base + start, end - start, MADV_POPULATE_WRITE) != 0) break;
    done_.fetch_add(end - start);
    end = start;
  }
  ::munmap(map, bytes);
}

}  // namespace forkd

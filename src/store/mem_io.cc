#include "store/mem_io.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

namespace forkd::store {

bool all_zero(const void* p, size_t n) {
  const auto* b = static_cast<const unsigned char*>(p);
  return b[0] == 0 && std::memcmp(b, b + 1, n - 1) == 0;
}

Status pread_full(int fd, char* buf, size_t n, off_t off, const std::string& what) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, buf + done, n - done, off + static_cast<off_t>(done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno_error(errno, "read " + what);
    }
    if (r == 0) return make_error(ErrorCode::kIo, what + ": unexpected end of file");
    done += static_cast<size_t>(r);
  }
  return {};
}

Status pwrite_full(int fd, const char* buf, size_t n, off_t off, const std::string& what) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pwrite(fd, buf + done, n - done, off + static_cast<off_t>(done));
    if (r < 0) {
      if (errno == EINTR) continue;
      // A file system that takes O_DIRECT at open but not this write: go on through the cache.
      const int flags = ::fcntl(fd, F_GETFL);
      if (errno == EINVAL && flags >= 0 && (flags & O_DIRECT) != 0 &&
          ::fcntl(fd, F_SETFL, flags & ~O_DIRECT) == 0) {
        continue;
      }
      return errno_error(errno, "write " + what);
    }
    done += static_cast<size_t>(r);
  }
  return {};
}

Result<ReadMapping> ReadMapping::map(int fd, uint64_t size, const std::string& path) {
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return errno_error(errno, "map " + path);
  return ReadMapping(static_cast<const char*>(p), size);
}

ReadMapping::~ReadMapping() {
  if (p_ != nullptr) ::munmap(const_cast<char*>(p_), n_);
}

Result<uint64_t> file_size(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return errno_error(errno, "stat " + path);
  return static_cast<uint64_t>(st.st_size);
}

Status fsync_fd(int fd, const std::string& path) {
  if (::fsync(fd) != 0) return errno_error(errno, "fsync " + path);
  return {};
}

}  // namespace forkd::store

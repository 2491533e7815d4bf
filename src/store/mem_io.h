#pragma once
// File and mapping helpers shared by the chain code (store/chain.cc) and the link receiver
// (store/link_receiver.cc): whole reads and writes at an offset, a read-only mapping.
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "base/error.h"

namespace forkd::store {

// pread / pwrite of exactly n bytes at off (EINTR and short transfers retried). pwrite_full
// drops O_DIRECT from fd when the file system refuses this write with it.
Status pread_full(int fd, char* buf, size_t n, off_t off, const std::string& what);
Status pwrite_full(int fd, const char* buf, size_t n, off_t off, const std::string& what);

Result<uint64_t> file_size(int fd, const std::string& path);

// Whether n bytes (n >= 1) at p are all zero.
bool all_zero(const void* p, size_t n);
Status fsync_fd(int fd, const std::string& path);

// A file mapped read-only, unmapped on destruction.
class ReadMapping {
 public:
  static Result<ReadMapping> map(int fd, uint64_t size, const std::string& path);
  ReadMapping(ReadMapping&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(o.n_) {}
  ReadMapping& operator=(ReadMapping&&) = delete;
  ~ReadMapping();
  const char* data() const { return p_; }

 private:
  ReadMapping(const char* p, uint64_t n) : p_(p), n_(n) {}
  const char* p_;
  uint64_t n_;
};

}  // namespace forkd::store

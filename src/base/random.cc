#include "base/random.h"

#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

namespace forkd {

std::string random_bytes(size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::getrandom(out.data() + got, n - got, 0);
    if (r > 0) {
      got += static_cast<size_t>(r);
    } else if (r < 0 && errno != EINTR) {
      break;  // no getrandom (a seccomp filter, an old kernel): the device below
    }
  }
  if (got < n) {
    int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    while (fd >= 0 && got < n) {
      ssize_t r = ::read(fd, out.data() + got, n - got);
      if (r > 0) {
        got += static_cast<size_t>(r);
      } else if (r == 0 || errno != EINTR) {
        break;
      }
    }
    if (fd >= 0) ::close(fd);
  }
  // Names and tokens must never be predictable; without randomness there is no safe answer.
  if (got < n) std::abort();
  return out;
}

std::string random_hex(size_t n_bytes) {
  static const char kHex[] = "0123456789abcdef";
  std::string raw = random_bytes(n_bytes);
  std::string out;
  out.reserve(2 * n_bytes);
  for (unsigned char c : raw) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

}  // namespace forkd

#include "base/random.h"

#include <sys/random.h>

#include <cerrno>

namespace forkd {

std::string random_bytes(size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::getrandom(out.data() + got, n - got, 0);
    if (r > 0) got += static_cast<size_t>(r);
  }
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

#include "base/xxh3.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "base/files.h"  // to_hex

namespace forkd {

struct Xxh3::State {
  XXH3_state_t st;
};

Xxh3::Xxh3() : s_(std::make_unique<State>()) { XXH3_128bits_reset(&s_->st); }
Xxh3::~Xxh3() = default;

void Xxh3::update(const void* data, size_t n) { XXH3_128bits_update(&s_->st, data, n); }

std::string Xxh3::hex() {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits_digest(&s_->st));
  return to_hex(c.digest, sizeof c.digest);
}

std::string xxh3_hex(std::string_view data) {
  Xxh3 h;
  h.update(data.data(), data.size());
  return h.hex();
}

}  // namespace forkd

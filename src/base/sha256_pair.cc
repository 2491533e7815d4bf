#include "base/sha256_pair.h"

#include <algorithm>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace forkd {
namespace {

constexpr uint32_t kInit[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

#if defined(__x86_64__)
// FIPS 180-4's round constants (a wrong entry fails every digest the tests compare with OpenSSL).
alignas(16) constexpr uint32_t kRound[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define FORKD_SHA_TARGET __attribute__((target("sha,ssse3,sse4.1")))

// One message's state as the SHA instructions hold it: words A, B, E, F in one register and
// C, D, G, H in the other.
struct Lane {
  __m128i abef;
  __m128i cdgh;
};

FORKD_SHA_TARGET inline __attribute__((always_inline)) Lane load_state(const uint32_t* h) {
  __m128i dcba = _mm_shuffle_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)), 0xB1);
  __m128i efgh = _mm_shuffle_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + 4)), 0x1B);
  return Lane{_mm_alignr_epi8(dcba, efgh, 8), _mm_blend_epi16(efgh, dcba, 0xF0)};
}

FORKD_SHA_TARGET inline __attribute__((always_inline)) void store_state(const Lane& s,
                                                                        uint32_t* h) {
  __m128i feba = _mm_shuffle_epi32(s.abef, 0x1B);
  __m128i dchg = _mm_shuffle_epi32(s.cdgh, 0xB1);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(h), _mm_blend_epi16(feba, dchg, 0xF0));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(h + 4), _mm_alignr_epi8(dchg, feba, 8));
}

// Four rounds with message words w (big-endian order already) and the constants of group g.
FORKD_SHA_TARGET inline __attribute__((always_inline)) void rounds4(Lane& s, __m128i w, int g) {
  __m128i m = _mm_add_epi32(w, _mm_load_si128(reinterpret_cast<const __m128i*>(kRound + 4 * g)));
  s.cdgh = _mm_sha256rnds2_epu32(s.cdgh, s.abef, m);
  s.abef = _mm_sha256rnds2_epu32(s.abef, s.cdgh, _mm_shuffle_epi32(m, 0x0E));
}

// The next four schedule words from the four before them (oldest first).
FORKD_SHA_TARGET inline __attribute__((always_inline)) __m128i schedule(__m128i w4, __m128i w3,
                                                                        __m128i w2, __m128i w1) {
  __m128i t = _mm_add_epi32(_mm_sha256msg1_epu32(w4, w3), _mm_alignr_epi8(w1, w2, 4));
  return _mm_sha256msg2_epu32(t, w1);
}

FORKD_SHA_TARGET inline __attribute__((always_inline)) __m128i load_words(const uint8_t* p) {
  const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  return _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), swap);
}

// Both messages' blocks, their rounds side by side so that one's wait on a round's result is
// the other's turn.
FORKD_SHA_TARGET void compress_two(uint32_t* ha, uint32_t* hb, const uint8_t* a, const uint8_t* b,
                                   size_t blocks) {
  Lane sa = load_state(ha);
  Lane sb = load_state(hb);
  for (; blocks > 0; --blocks, a += 64, b += 64) {
    const Lane sa0 = sa;
    const Lane sb0 = sb;
    __m128i wa[4];
    __m128i wb[4];
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) {
      wa[g] = load_words(a + 16 * g);
      wb[g] = load_words(b + 16 * g);
      rounds4(sa, wa[g], g);
      rounds4(sb, wb[g], g);
    }
#pragma GCC unroll 12
    for (int g = 4; g < 16; ++g) {
      const int i = g % 4;  // holds the words of group g - 4, replaced by group g's
      wa[i] = schedule(wa[i], wa[(g + 1) % 4], wa[(g + 2) % 4], wa[(g + 3) % 4]);
      wb[i] = schedule(wb[i], wb[(g + 1) % 4], wb[(g + 2) % 4], wb[(g + 3) % 4]);
      rounds4(sa, wa[i], g);
      rounds4(sb, wb[i], g);
    }
    sa = Lane{_mm_add_epi32(sa.abef, sa0.abef), _mm_add_epi32(sa.cdgh, sa0.cdgh)};
    sb = Lane{_mm_add_epi32(sb.abef, sb0.abef), _mm_add_epi32(sb.cdgh, sb0.cdgh)};
  }
  store_state(sa, ha);
  store_state(sb, hb);
}
#undef FORKD_SHA_TARGET

bool cpu_has_sha() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0) return false;
  const bool ssse3 = (c & (1u << 9)) != 0;
  const bool sse41 = (c & (1u << 19)) != 0;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return false;
  const bool sha = (b & (1u << 29)) != 0;
  return ssse3 && sse41 && sha;
}
#else
bool cpu_has_sha() { return false; }
void compress_two(uint32_t*, uint32_t*, const uint8_t*, const uint8_t*, size_t) {}
#endif

std::string to_hex(const uint32_t* h) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out(64, '0');
  for (int i = 0; i < 8; ++i) {
    for (int nib = 0; nib < 8; ++nib) {
      out[static_cast<size_t>(i * 8 + nib)] = kDigits[(h[i] >> (28 - 4 * nib)) & 0xF];
    }
  }
  return out;
}

}  // namespace

bool Sha256Pair::accelerated() {
  static const bool has = cpu_has_sha();
  return has;
}

Sha256Pair::Sha256Pair(bool force_portable) : fast_(!force_portable && accelerated()) {
  std::memcpy(state_a_, kInit, sizeof kInit);
  std::memcpy(state_b_, kInit, sizeof kInit);
  if (!fast_) {
    slow_a_ = std::make_unique<Sha256>();
    slow_b_ = std::make_unique<Sha256>();
  }
}

void Sha256Pair::compress(const uint8_t* a, const uint8_t* b, size_t blocks) {
  compress_two(state_a_, state_b_, a, b, blocks);
}

void Sha256Pair::update(const void* a, const void* b, size_t n) {
  if (!fast_) {
    slow_a_->update(a, n);
    slow_b_->update(b, n);
    return;
  }
  const auto* pa = static_cast<const uint8_t*>(a);
  const auto* pb = static_cast<const uint8_t*>(b);
  total_ += n;
  if (buffered_ > 0) {
    const size_t take = std::min(n, kBlock - buffered_);
    std::memcpy(buf_a_ + buffered_, pa, take);
    std::memcpy(buf_b_ + buffered_, pb, take);
    buffered_ += take;
    pa += take;
    pb += take;
    n -= take;
    if (buffered_ < kBlock) return;
    compress(buf_a_, buf_b_, 1);
    buffered_ = 0;
  }
  const size_t blocks = n / kBlock;
  if (blocks > 0) compress(pa, pb, blocks);
  const size_t rest = n % kBlock;
  std::memcpy(buf_a_, pa + blocks * kBlock, rest);
  std::memcpy(buf_b_, pb + blocks * kBlock, rest);
  buffered_ = rest;
}

std::pair<std::string, std::string> Sha256Pair::hex() {
  if (!fast_) return {slow_a_->hex(), slow_b_->hex()};
  // The same padding for both: a one bit, zeros, the length in bits (big-endian), to a block's end.
  uint8_t pad[2 * kBlock] = {0x80};
  const size_t pad_len = (buffered_ < 56 ? 56 : 120) - buffered_;
  const uint64_t bits = total_ * 8;
  for (int i = 0; i < 8; ++i) pad[pad_len + static_cast<size_t>(i)] = uint8_t(bits >> (56 - 8 * i));
  const uint64_t bytes_before = total_;
  update(pad, pad, pad_len + 8);
  total_ = bytes_before;
  return {to_hex(state_a_), to_hex(state_b_)};
}

}  // namespace forkd

// libFuzzer target: arbitrary bytes, split into arbitrary feeds, through the frame decoder. The
// decoder must never crash, loop forever or buffer more than one maximal frame; every frame it
// yields must re-encode to the same bytes.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "proto/frame.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace forkd::proto;
  FrameDecoder decoder;
  size_t pos = 0;
  while (pos < size) {
    // The first byte of each piece picks the piece length, so feeds split frames anywhere.
    size_t len = 1 + data[pos] % 64;
    ++pos;
    if (pos + len > size) len = size - pos;
    decoder.feed(std::string_view(reinterpret_cast<const char*>(data + pos), len));
    pos += len;
    int guard = 0;
    while (auto f = decoder.next()) {
      if (++guard > 1 << 20) std::abort();
      if (f->has_value()) {
        auto again = encode_frame((*f)->json, (*f)->bin);
        if (!again) std::abort();
        FrameDecoder check;
        check.feed(*again);
        auto back = check.next();
        if (!back || !back->has_value() || (*back)->json != (*f)->json ||
            (*back)->bin != (*f)->bin) {
          std::abort();
        }
      }
    }
    if (decoder.buffered() > kHeaderLen + kMaxJsonLen + kMaxBinLen) std::abort();
  }
  return 0;
}

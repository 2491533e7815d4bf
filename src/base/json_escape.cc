#include "base/json_escape.h"

#include <cstdint>

namespace forkd {

namespace {

constexpr char kHex[] = "0123456789abcdef";
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the valid UTF-8 sequence starting at s[i] (RFC 3629), 0 if there is none. Then
// *bad is how many bytes one U+FFFD stands for: the longest start of a sequence that is still
// possible (as nlohmann's decoder reads it), at least one byte.
size_t utf8_length(std::string_view s, size_t i, size_t* bad) {
  *bad = 1;
  auto b = [&](size_t k) { return static_cast<uint8_t>(s[i + k]); };
  auto cont = [&](size_t k, uint8_t lo = 0x80, uint8_t hi = 0xBF) {
    bool ok = i + k < s.size() && b(k) >= lo && b(k) <= hi;
    if (ok) *bad = k + 1;
    return ok;
  };
  uint8_t c = b(0);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
  if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return cont(1) && cont(2) ? 3 : 0;
  if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
  if (c == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

// Walks s one character at a time: emit(raw bytes consumed, escaped text) until it returns
// false. An invalid byte is consumed alone and emitted as U+FFFD.
template <typename Emit>
void walk(std::string_view s, Emit&& emit) {
  char esc[6] = {'\\', 'u', '0', '0', 0, 0};
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<uint8_t>(s[i]);
    std::string_view text;
    size_t n = 1;
    switch (c) {
      case '"':
        text = "\\\"";
        break;
      case '\\':
        text = "\\\\";
        break;
      case '\b':
        text = "\\b";
        break;
      case '\f':
        text = "\\f";
        break;
      case '\n':
        text = "\\n";
        break;
      case '\r':
        text = "\\r";
        break;
      case '\t':
        text = "\\t";
        break;
      default:
        if (c < 0x20) {
          esc[4] = kHex[c >> 4];
          esc[5] = kHex[c & 15];
          text = std::string_view(esc, 6);
        } else {
          size_t bad = 1;
          n = utf8_length(s, i, &bad);
          text = n ? s.substr(i, n) : kReplacement;
          if (n == 0) n = bad;
        }
    }
    if (!emit(n, text)) return;
    i += n;
  }
}

}  // namespace

size_t json_escaped_size(std::string_view s) {
  size_t size = 0;
  walk(s, [&](size_t, std::string_view text) {
    size += text.size();
    return true;
  });
  return size;
}

size_t json_escaped_prefix(std::string_view s, size_t max) {
  size_t raw = 0, size = 0;
  walk(s, [&](size_t n, std::string_view text) {
    if (size + text.size() > max) return false;
    size += text.size();
    raw += n;
    return true;
  });
  return raw;
}

void append_json_escaped(std::string& out, std::string_view s) {
  walk(s, [&](size_t, std::string_view text) {
    out.append(text);
    return true;
  });
}

}  // namespace forkd

// JSON string bodies of untrusted bytes, with their size known before they are built.
//
// Guest output is arbitrary bytes: a NUL becomes six bytes in JSON ("\u0000"), so 16 MiB of it
// is a 96 MiB answer. The daemon charges what it will hold (the escaped size) to its output
// budget, trims to what was granted, and builds the body once at its final size.
//
// The escaping is nlohmann::json's with error_handler_t::replace and ensure_ascii off: valid
// UTF-8 is copied, '"' '\\' and control characters are escaped, and an invalid sequence (its
// longest still possible start, or one byte) becomes U+FFFD.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace forkd {

// Bytes s takes inside a JSON string (without the quotes).
size_t json_escaped_size(std::string_view s);

// The longest prefix of s (ending on a character boundary) whose escaped size is at most max.
size_t json_escaped_prefix(std::string_view s, size_t max);

// Appends s, escaped, without quotes.
void append_json_escaped(std::string& out, std::string_view s);

}  // namespace forkd

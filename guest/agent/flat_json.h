#pragma once
// A JSON object of plain scalars, read and written without nlohmann's parser and serializer.
//
// Why: a restored child translates every guest instruction it runs afresh under TCG, and its
// first request (`resumed`) ran ~1,300 blocks of nlohmann's parser, DOM and serializer, about 8 ms
// of each child's ready time. This reader takes only the simple case that request always is; it
// refuses anything else (nesting, escapes, non-ASCII, fractions, duplicate keys, ...) and the
// caller then takes the full parser, so accepting here never changes what a request means.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace forkd::agent {

struct FlatValue {
  enum class Kind { kString, kUnsigned, kNegative, kBool, kNull };
  Kind kind = Kind::kNull;
  std::string_view text;  // kString: the characters (printable ASCII, no backslash)
  uint64_t number = 0;    // kUnsigned: the value; kNegative: its magnitude
  bool boolean = false;   // kBool
};

struct FlatField {
  std::string_view key;
  FlatValue value;
};

// At most this many fields; a larger object is refused.
inline constexpr size_t kMaxFlatFields = 32;

// The fields of `json` when it is one object whose keys are distinct strings and whose values
// are strings, integers that fit 64 bits, true, false or null, with nothing but whitespace
// around it; every string printable ASCII without escapes. Otherwise nullopt. The views point
// into `json`.
std::optional<std::vector<FlatField>> scan_flat_object(std::string_view json);

// The field named key, or nullptr.
const FlatValue* find_flat(const std::vector<FlatField>& fields, std::string_view key);

// Appends s as a JSON string ("..."); false (out unchanged) when s holds a byte that needs an
// escape or is not ASCII: '"', '\\', control characters, DEL or bytes >= 0x80.
bool append_plain_json_string(std::string* out, std::string_view s);

}  // namespace forkd::agent

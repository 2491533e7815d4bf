#pragma once
// Non-throwing typed reads of untrusted JSON: an agent reply, a QMP message, a record on disk.
// nlohmann's value()/get() throw on a wrong type, and an exception on a worker thread ends the
// whole process; these return nullopt (or the default) for a missing key, a wrong type or a
// number out of the target's range. `j` need not be an object.
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace forkd::json {

using Json = nlohmann::json;

// Nesting allowed in untrusted JSON; far more than any message forkd exchanges needs.
inline constexpr int kMaxUntrustedDepth = 64;

// Parses untrusted text; discarded when it is not JSON or nests deeper than max_depth. The
// parser itself copes with depth, but copying or printing a value recurses once per level, and a
// 1 MiB message of '[' would overflow a thread's stack: such input never becomes a value.
// Out of line (json_get.cc): nlohmann's parser is a large template, compiled here once instead
// of in every file that reads JSON.
Json parse_untrusted(std::string_view text, int max_depth = kMaxUntrustedDepth);

// The member key of j, or nullptr when j is not an object or has no such member.
inline const Json* member(const Json& j, std::string_view key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

inline std::optional<std::string> get_string(const Json& j, std::string_view key) {
  const Json* v = member(j, key);
  if (!v || !v->is_string()) return std::nullopt;
  return v->get_ref<const std::string&>();
}

inline std::optional<bool> get_bool(const Json& j, std::string_view key) {
  const Json* v = member(j, key);
  if (!v || !v->is_boolean()) return std::nullopt;
  return v->get<bool>();
}

// An integer member that fits T (floats such as 1.5 are refused; 2.0 is not an integer either).
template <typename T>
std::optional<T> get_int(const Json& j, std::string_view key) {
  static_assert(std::is_integral_v<T>);
  const Json* v = member(j, key);
  if (!v) return std::nullopt;
  if (v->is_number_unsigned()) {
    uint64_t u = v->get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<T>::max())) return std::nullopt;
    return static_cast<T>(u);
  }
  if (v->is_number_integer()) {
    int64_t s = v->get<int64_t>();
    if constexpr (std::is_unsigned_v<T>) {
      if (s < 0 || static_cast<uint64_t>(s) > std::numeric_limits<T>::max()) return std::nullopt;
    } else {
      if (s < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
          s > static_cast<int64_t>(std::numeric_limits<T>::max())) {
        return std::nullopt;
      }
    }
    return static_cast<T>(s);
  }
  return std::nullopt;
}

// Any finite JSON number as a double.
inline std::optional<double> get_number(const Json& j, std::string_view key) {
  const Json* v = member(j, key);
  if (!v || !v->is_number()) return std::nullopt;
  return v->get<double>();
}

inline std::string string_or(const Json& j, std::string_view key, std::string def) {
  auto v = get_string(j, key);
  return v ? *v : std::move(def);
}

inline bool bool_or(const Json& j, std::string_view key, bool def) {
  return get_bool(j, key).value_or(def);
}

template <typename T>
T int_or(const Json& j, std::string_view key, T def) {
  return get_int<T>(j, key).value_or(def);
}

inline double number_or(const Json& j, std::string_view key, double def) {
  return get_number(j, key).value_or(def);
}

}  // namespace forkd::json

// libFuzzer target: arbitrary bytes through the guest agent's flat JSON reader. It must never
// crash, and whatever it accepts nlohmann's parser must read as the same object: the agent's
// fast `resumed` path relies on that (guest/agent/flat_json.h).
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string_view>

#include "../guest/agent/flat_json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using forkd::agent::FlatValue;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto fields = forkd::agent::scan_flat_object(text);
  if (!fields) return 0;
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.size() != fields->size()) std::abort();
  for (const auto& f : *fields) {
    auto it = j.find(std::string(f.key));
    if (it == j.end()) std::abort();
    const nlohmann::json& v = *it;
    bool same = false;
    switch (f.value.kind) {
      case FlatValue::Kind::kString:
        same = v.is_string() && v.get<std::string>() == f.value.text;
        break;
      case FlatValue::Kind::kUnsigned:
        same = v.is_number_unsigned() && v.get<uint64_t>() == f.value.number;
        break;
      case FlatValue::Kind::kNegative:
        // nlohmann reads -0 as an unsigned 0 and values below INT64_MIN as floats.
        same = (v.is_number_integer() && !v.is_number_unsigned() &&
                static_cast<uint64_t>(-(v.get<int64_t>() + 1)) + 1 == f.value.number) ||
               (f.value.number == 0 && v.is_number() && v.get<double>() == 0) ||
               (v.is_number_float() && f.value.number > static_cast<uint64_t>(INT64_MAX));
        break;
      case FlatValue::Kind::kBool:
        same = v.is_boolean() && v.get<bool>() == f.value.boolean;
        break;
      case FlatValue::Kind::kNull:
        same = v.is_null();
        break;
    }
    if (!same) std::abort();
  }
  return 0;
}

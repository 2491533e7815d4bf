#include "flat_json.h"

namespace forkd::agent {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bool is_plain(char c) { return c >= 0x20 && c <= 0x7e && c != '"' && c != '\\'; }

class Scanner {
 public:
  explicit Scanner(std::string_view s) : s_(s) {}

  void skip_space() {
    while (i_ < s_.size() && is_space(s_[i_])) ++i_;
  }
  bool at_end() const { return i_ >= s_.size(); }
  bool eat(char c) {
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  bool eat_word(std::string_view w) {
    if (s_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }

  // A string of plain characters; its opening quote is next.
  std::optional<std::string_view> string() {
    if (!eat('"')) return std::nullopt;
    size_t start = i_;
    while (i_ < s_.size() && is_plain(s_[i_])) ++i_;
    if (!eat('"')) return std::nullopt;  // the end, an escape or a byte not taken here
    return s_.substr(start, i_ - 1 - start);
  }

  // An integer as JSON writes one (no leading zeros, no fraction or exponent) within 64 bits.
  std::optional<FlatValue> integer() {
    FlatValue v;
    v.kind = eat('-') ? FlatValue::Kind::kNegative : FlatValue::Kind::kUnsigned;
    size_t start = i_;
    uint64_t n = 0;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
      uint64_t d = static_cast<uint64_t>(s_[i_] - '0');
      if (n > (UINT64_MAX - d) / 10) return std::nullopt;
      n = n * 10 + d;
      ++i_;
    }
    size_t digits = i_ - start;
    if (digits == 0 || (digits > 1 && s_[start] == '0')) return std::nullopt;
    if (i_ < s_.size() && (s_[i_] == '.' || s_[i_] == 'e' || s_[i_] == 'E')) return std::nullopt;
    v.number = n;
    return v;
  }

  std::optional<FlatValue> value() {
    if (i_ >= s_.size()) return std::nullopt;
    FlatValue v;
    char c = s_[i_];
    if (c == '"') {
      auto s = string();
      if (!s) return std::nullopt;
      v.kind = FlatValue::Kind::kString;
      v.text = *s;
      return v;
    }
    if (c == '-' || (c >= '0' && c <= '9')) return integer();
    if (eat_word("true") || eat_word("false")) {
      v.kind = FlatValue::Kind::kBool;
      v.boolean = c == 't';
      return v;
    }
    if (eat_word("null")) return v;
    return std::nullopt;  // an object, an array or not JSON
  }

 private:
  std::string_view s_;
  size_t i_ = 0;
};

}  // namespace

std::optional<std::vector<FlatField>> scan_flat_object(std::string_view json) {
  Scanner sc(json);
  std::vector<FlatField> fields;
  sc.skip_space();
  if (!sc.eat('{')) return std::nullopt;
  sc.skip_space();
  if (!sc.eat('}')) {
    for (;;) {
      sc.skip_space();
      auto key = sc.string();
      if (!key || find_flat(fields, *key) != nullptr || fields.size() >= kMaxFlatFields) {
        return std::nullopt;
      }
      sc.skip_space();
      if (!sc.eat(':')) return std::nullopt;
      sc.skip_space();
      auto value = sc.value();
      if (!value) return std::nullopt;
      fields.push_back(FlatField{*key, *value});
      sc.skip_space();
      if (sc.eat('}')) break;
      if (!sc.eat(',')) return std::nullopt;
    }
  }
  sc.skip_space();
  if (!sc.at_end()) return std::nullopt;
  return fields;
}

const FlatValue* find_flat(const std::vector<FlatField>& fields, std::string_view key) {
  for (const auto& f : fields) {
    if (f.key == key) return &f.value;
  }
  return nullptr;
}

bool append_plain_json_string(std::string* out, std::string_view s) {
  for (char c : s) {
    if (!is_plain(c)) return false;
  }
  out->push_back('"');
  out->append(s);
  out->push_back('"');
  return true;
}

}  // namespace forkd::agent

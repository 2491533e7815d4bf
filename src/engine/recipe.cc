#include "engine/recipe.h"

#include <algorithm>

#include "base/files.h"

namespace forkd::engine {

namespace {

constexpr size_t kMaxPackages = 1000;
constexpr size_t kMaxChecks = 32;
constexpr size_t kMaxCheckBytes = 1024;

bool is_package_name(std::string_view p) {
  if (p.size() < 2 || p.size() > 100) return false;
  auto lower_or_digit = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!lower_or_digit(p[0])) return false;
  return std::all_of(p.begin(), p.end(),
                     [&](char c) { return lower_or_digit(c) || c == '+' || c == '-' || c == '.'; });
}

bool is_suite(std::string_view s) {
  return !s.empty() && s.size() <= 32 &&
         std::all_of(s.begin(), s.end(), [](char c) { return (c >= 'a' && c <= 'z') || c == '-'; });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

std::vector<std::string_view> words(std::string_view s) {
  std::vector<std::string_view> out;
  while (!(s = trim(s)).empty()) {
    size_t end = s.find_first_of(" \t");
    out.push_back(s.substr(0, end));
    if (end == std::string_view::npos) break;
    s.remove_prefix(end);
  }
  return out;
}

}  // namespace

Result<Recipe> parse_recipe(std::string_view text) {
  Recipe r;
  if (text.size() > kMaxRecipeBytes) {
    return make_error(ErrorCode::kInvalidArgument, "recipe larger than 64 KiB");
  }
  r.text = std::string(text);
  size_t line_no = 0;
  bool have_variant = false;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = trim(text.substr(0, nl));
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    ++line_no;
    auto bad = [&](const std::string& why) {
      return make_error(ErrorCode::kInvalidArgument,
                        "recipe line " + std::to_string(line_no) + ": " + why);
    };
    if (line.empty() || line[0] == '#') continue;
    if (std::any_of(line.begin(), line.end(),
                    [](char c) { return static_cast<unsigned char>(c) < 0x20 && c != '\t'; })) {
      return bad("control characters");
    }
    size_t sp = line.find_first_of(" \t");
    std::string_view key = line.substr(0, sp);
    std::string_view rest = sp == std::string_view::npos ? "" : trim(line.substr(sp));
    if (key == "suite") {
      if (!r.suite.empty()) return bad("a second suite");
      if (!is_suite(rest)) return bad("bad suite '" + std::string(rest.substr(0, 40)) + "'");
      r.suite = rest;
    } else if (key == "variant") {
      if (have_variant) return bad("a second variant");
      if (rest != "minbase" && rest != "buildd" && rest != "default") {
        return bad("variant must be minbase, buildd or default");
      }
      r.variant = rest;
      have_variant = true;
    } else if (key == "packages") {
      auto ws = words(rest);
      if (ws.empty()) return bad("packages without names");
      for (auto w : ws) {
        if (!is_package_name(w)) {
          return bad("bad package name '" + std::string(w.substr(0, 100)) + "'");
        }
        if (std::find(r.packages.begin(), r.packages.end(), w) == r.packages.end()) {
          r.packages.emplace_back(w);
        }
      }
      if (r.packages.size() > kMaxPackages) return bad("more than 1000 packages");
    } else if (key == "check") {
      if (rest.empty() || rest.size() > kMaxCheckBytes) return bad("check needs a command");
      if (r.checks.size() >= kMaxChecks) return bad("more than 32 checks");
      r.checks.emplace_back(rest);
    } else {
      return bad("unknown keyword '" + std::string(key.substr(0, 40)) +
                 "' (suite, variant, packages, check)");
    }
  }
  if (r.suite.empty()) return make_error(ErrorCode::kInvalidArgument, "recipe without a suite");
  if (r.packages.empty()) {
    return make_error(ErrorCode::kInvalidArgument, "recipe without packages");
  }
  return r;
}

Result<Recipe> load_recipe(const std::string& path) {
  auto text = read_file(path, kMaxRecipeBytes);
  if (!text) return tl::unexpected(text.error().wrap("recipe"));
  auto r = parse_recipe(*text);
  if (!r) return tl::unexpected(r.error().wrap(path));
  r->path = path;
  std::string base = path.substr(path.rfind('/') + 1);
  if (base.size() > 7 && base.compare(base.size() - 7, 7, ".recipe") == 0) {
    base.resize(base.size() - 7);
  }
  r->name = base;
  return r;
}

}  // namespace forkd::engine

#pragma once
// Small summary statistics for benchmarks.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <vector>

namespace forkd::bench {

struct Summary {
  double min = 0, median = 0, p90 = 0, p99 = 0, max = 0;
  size_t n = 0;
  nlohmann::json to_json() const {
    return {{"min", min}, {"median", median}, {"p90", p90}, {"p99", p99}, {"max", max}, {"n", n}};
  }
};

inline Summary summarize(std::vector<double> v) {
  Summary s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.n = v.size();
  s.min = v.front();
  s.max = v.back();
  s.median = v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  auto rank = [&v](double q) {
    return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
  };
  s.p90 = rank(0.9);
  s.p99 = rank(0.99);
  return s;
}

}  // namespace forkd::bench

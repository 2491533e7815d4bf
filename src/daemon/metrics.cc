#include "daemon/metrics.h"

#include <fmt/format.h>

namespace forkd::daemon {

void Metrics::count_request(const std::string& route, int status) {
  std::lock_guard lock(mu_);
  ++requests_[{route, status}];
}

void Metrics::Histogram::observe(double v) {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < kBounds.size(); ++i) {
    if (v <= kBounds[i]) ++buckets_[i];
  }
  ++count_;
  sum_ += v;
}

std::string Metrics::Histogram::render(const std::string& name, const std::string& help) const {
  std::lock_guard lock(mu_);
  std::string out = fmt::format("# HELP {0} {1}\n# TYPE {0} histogram\n", name, help);
  for (size_t i = 0; i < kBounds.size(); ++i) {
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, kBounds[i], buckets_[i]);
  }
  out += fmt::format("{0}_bucket{{le=\"+Inf\"}} {1}\n{0}_sum {2}\n{0}_count {1}\n", name, count_,
                     sum_);
  return out;
}

std::string Metrics::render() const {
  std::string out =
      "# HELP forkd_requests_total HTTP requests by route pattern and status.\n"
      "# TYPE forkd_requests_total counter\n";
  {
    std::lock_guard lock(mu_);
    for (const auto& [key, n] : requests_) {
      out += fmt::format("forkd_requests_total{{route=\"{}\",status=\"{}\"}} {}\n", key.first,
                         key.second, n);
    }
  }
  out += spawn_.render("forkd_spawn_seconds",
                       "POST /v1/sandboxes latency, until every child's agent answered.");
  out += exec_.render("forkd_exec_seconds", "POST /v1/sandboxes/:id/exec latency.");
  out += branch_.render("forkd_branch_seconds",
                        "POST /v1/sandboxes/:id/branch latency (until the tag is ready, or until "
                        "the source runs again with wait:false).");
  out += branch_pause_.render("forkd_branch_pause_seconds",
                              "Time a branch's source vCPUs were stopped.");
  return out;
}

}  // namespace forkd::daemon

#pragma once
// Prometheus counters and histograms kept by the daemon. Thread-safe.
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace forkd::daemon {

class Metrics {
 public:
  // route is the route's pattern (bounded set), never the raw path.
  void count_request(const std::string& route, int status);
  void observe_spawn(double seconds) { spawn_.observe(seconds); }
  void observe_exec(double seconds) { exec_.observe(seconds); }
  // A branch: the request's latency, and how long the source's vCPUs were stopped.
  void observe_branch(double seconds, double pause_seconds) {
    branch_.observe(seconds);
    branch_pause_.observe(pause_seconds);
  }

  // Counters and histograms in Prometheus text format (the gauges are added by the caller).
  std::string render() const;

 private:
  class Histogram {
   public:
    static constexpr std::array<double, 14> kBounds = {0.001, 0.0025, 0.005, 0.01, 0.025,
                                                       0.05,  0.1,    0.25,  0.5,  1,
                                                       2.5,   5,      10,    30};
    void observe(double v);
    std::string render(const std::string& name, const std::string& help) const;

   private:
    mutable std::mutex mu_;
    std::array<uint64_t, kBounds.size()> buckets_{};
    uint64_t count_ = 0;
    double sum_ = 0;
  };

  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  Histogram spawn_;
  Histogram exec_;
  Histogram branch_;
  Histogram branch_pause_;
};

}  // namespace forkd::daemon

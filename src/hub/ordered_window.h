#pragma once
// Runs jobs on up to `width` threads at once and hands their results to a sink in the order the
// jobs were pushed: chunks are compressed or decoded in parallel but written or hashed in order.
// Memory stays bounded by width results. A job's exception becomes an error; none escapes.
#include <deque>
#include <functional>
#include <future>
#include <string>

#include "base/error.h"

namespace forkd::hub {

template <typename T>
class OrderedWindow {
 public:
  using Job = std::function<Result<T>()>;
  using Sink = std::function<Status(T&)>;

  OrderedWindow(size_t width, Sink sink) : width_(width ? width : 1), sink_(std::move(sink)) {}
  // Waits for jobs still running (their results are dropped).
  ~OrderedWindow() {
    for (auto& f : inflight_) f.wait();
  }

  // Starts job; first, while width jobs are in flight, sinks the oldest. The first error (of a
  // job or the sink) is returned, here or by a later call.
  Status push(Job job) {
    while (inflight_.size() >= width_) FORKD_TRY(pop());
    try {
      inflight_.push_back(std::async(std::launch::async, [job = std::move(job)]() -> Result<T> {
        try {
          return job();
        } catch (const std::exception& e) {
          return make_error(ErrorCode::kInternal, std::string("worker: ") + e.what());
        }
      }));
    } catch (const std::exception& e) {
      return make_error(ErrorCode::kInternal, std::string("start worker: ") + e.what());
    }
    return {};
  }

  // Sinks every remaining result.
  Status drain() {
    while (!inflight_.empty()) FORKD_TRY(pop());
    return {};
  }

 private:
  Status pop() {
    auto f = std::move(inflight_.front());
    inflight_.pop_front();
    auto r = f.get();
    if (!r) return tl::unexpected(r.error());
    return sink_(*r);
  }

  size_t width_;
  Sink sink_;
  std::deque<std::future<Result<T>>> inflight_;
};

}  // namespace forkd::hub

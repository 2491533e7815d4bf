#pragma once
// Objects made once and lent out again and again: chunk buffers and zstd contexts, whose
// allocation (page faults over 16 MiB) would otherwise cost more than the work done with them.
// Thread-safe. The pool must outlive every lease.
#include <memory>
#include <mutex>
#include <vector>

namespace forkd::hub {

template <typename T>
class ObjectPool {
 public:
  struct Return {
    ObjectPool* pool;
    void operator()(T* p) const { pool->put(p); }
  };
  using Lease = std::unique_ptr<T, Return>;

  Lease get() {
    std::lock_guard lock(mu_);
    if (free_.empty()) return Lease(new T(), Return{this});
    T* p = free_.back().release();
    free_.pop_back();
    return Lease(p, Return{this});
  }

 private:
  void put(T* p) {
    std::lock_guard lock(mu_);
    free_.emplace_back(p);
  }
  std::mutex mu_;
  std::vector<std::unique_ptr<T>> free_;
};

}  // namespace forkd::hub

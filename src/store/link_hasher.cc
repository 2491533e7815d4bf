#include "store/link_hasher.h"

#include <algorithm>
#include <system_error>

namespace forkd::store {
namespace {
const char kZeros[LinkHasher::kMaxChunk] = {};
}  // namespace

LinkHasher::LinkHasher() {
  try {
    thread_ = std::thread([this] { run(); });
  } catch (const std::system_error&) {
    // No second thread: add() hashes on the caller's.
  }
}

LinkHasher::~LinkHasher() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void LinkHasher::hash(const char* data, size_t n, const std::vector<bool>& changed) {
  content_.update(data, n);
  // Runs of changed pages come from data, runs of unchanged ones from the zero buffer.
  const size_t pages = n / kPage;
  for (size_t p = 0; p < pages;) {
    size_t q = p + 1;
    while (q < pages && changed[q] == changed[p]) ++q;
    if (changed[p]) {
      diff_.update(data + p * kPage, (q - p) * kPage);
    } else {
      for (size_t left = (q - p) * kPage; left > 0;) {  // the zero buffer is kMaxChunk long
        size_t step = std::min(left, kMaxChunk);
        diff_.update(kZeros, step);
        left -= step;
      }
    }
    p = q;
  }
}

void LinkHasher::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || data_ != nullptr; });
    if (data_ == nullptr) return;  // stopped, nothing pending
    lock.unlock();
    hash(data_, n_, changed_);
    lock.lock();
    data_ = nullptr;
    cv_.notify_all();
  }
}

void LinkHasher::add(const char* data, size_t n, const std::vector<bool>& changed) {
  if (!thread_.joinable()) {
    hash(data, n, changed);
    return;
  }
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return data_ == nullptr; });
  changed_ = changed;
  n_ = n;
  data_ = data;
  cv_.notify_all();
}

LinkHasher::Hashes LinkHasher::finish() {
  if (thread_.joinable()) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return data_ == nullptr; });
  }
  return Hashes{content_.hex(), diff_.hex()};
}

}  // namespace forkd::store

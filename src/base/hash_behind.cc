#include "base/hash_behind.h"

#include <system_error>

namespace forkd {

HashBehind::HashBehind(size_t buffers, size_t buffer_bytes, bool threaded)
    : bytes_(buffer_bytes), pool_(new char[(buffers < 1 ? 1 : buffers) * buffer_bytes]) {
  for (size_t i = 0; i < (buffers < 1 ? 1 : buffers); ++i)
    free_.push_back(pool_.get() + i * bytes_);
  if (!threaded) return;
  try {
    thread_ = std::thread(&HashBehind::run, this);
  } catch (const std::system_error&) {  // hashed inline by give()
  }
}

HashBehind::~HashBehind() { stop(); }

void HashBehind::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

char* HashBehind::take() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !free_.empty(); });
  char* b = free_.back();
  free_.pop_back();
  return b;
}

void HashBehind::give(char* buf, size_t n) {
  if (!thread_.joinable()) {
    sha_.update(buf, n);
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(buf);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.emplace_back(buf, n);
  }
  cv_.notify_all();
}

void HashBehind::run() {
  for (;;) {
    std::pair<char*, size_t> next;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return done_ || !queue_.empty(); });
      if (queue_.empty()) return;  // done, and nothing left
      next = queue_.front();
      queue_.pop_front();
    }
    sha_.update(next.first, next.second);
    {
      std::lock_guard<std::mutex> lock(mu_);
      free_.push_back(next.first);
    }
    cv_.notify_all();
  }
}

std::string HashBehind::finish() {
  stop();  // the thread drains the queue before it returns
  return sha_.hex();
}

}  // namespace forkd

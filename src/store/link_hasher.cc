#include "store/link_hasher.h"

#include <algorithm>
#include <cstring>
#include <system_error>

namespace forkd::store {
namespace {
const char kZeros[LinkHasher::kMaxChunk] = {};

std::thread start(void (LinkHasher::*fn)(), LinkHasher* self) {
  try {
    return std::thread(fn, self);
  } catch (const std::system_error&) {
    return std::thread();
  }
}
}  // namespace

LinkHasher::LinkHasher(const char* full, const char* parent, size_t n)
    : full_(full), parent_(parent), n_(n) {
  content_thread_ = start(&LinkHasher::hash_content, this);
  diff_thread_ = start(&LinkHasher::hash_diff, this);
}

LinkHasher::~LinkHasher() { join(); }

void LinkHasher::join() {
  if (content_thread_.joinable()) content_thread_.join();
  if (diff_thread_.joinable()) diff_thread_.join();
}

void LinkHasher::hash_content() {
  for (size_t off = 0; off < n_; off += kMaxChunk) {
    content_.update(full_ + off, std::min(kMaxChunk, n_ - off));
  }
}

void LinkHasher::hash_diff() {
  // Runs of changed pages come from full, runs of unchanged ones from the zero buffer.
  auto flush = [&](size_t from, size_t to, bool changed) {
    if (changed) {
      diff_.update(full_ + from * kPage, (to - from) * kPage);
      return;
    }
    for (size_t left = (to - from) * kPage; left > 0;) {  // the zero buffer is kMaxChunk long
      size_t step = std::min(left, kMaxChunk);
      diff_.update(kZeros, step);
      left -= step;
    }
  };
  const size_t pages = n_ / kPage;
  size_t run = 0;
  bool run_changed = false;
  for (size_t p = 0; p < pages; ++p) {
    const bool c = page_changed(full_, parent_, p);
    if (p == 0) run_changed = c;
    if (c != run_changed) {
      flush(run, p, run_changed);
      run = p;
      run_changed = c;
    }
  }
  if (pages > 0) flush(run, pages, run_changed);
}

bool LinkHasher::page_changed(const char* full, const char* parent, size_t p) {
  return std::memcmp(full + p * kPage, parent + p * kPage, kPage) != 0;
}

LinkHasher::Hashes LinkHasher::finish() {
  const bool content_inline = !content_thread_.joinable();
  const bool diff_inline = !diff_thread_.joinable();
  join();
  if (content_inline) hash_content();
  if (diff_inline) hash_diff();
  return Hashes{content_.hex(), diff_.hex()};
}

}  // namespace forkd::store

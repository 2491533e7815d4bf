#include "store/link_hasher.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "store/mem_io.h"

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

// Feeds `bytes` zeros to h.
template <typename Hash>
void hash_zeros(Hash& h, size_t bytes) {
  while (bytes > 0) {
    size_t step = std::min(bytes, LinkHasher::kMaxChunk);
    h.update(kZeros, step);
    bytes -= step;
  }
}

// Hashes pages [0, pages) of `data` in runs: a page for which `from_data` says true comes from
// data (in the largest runs it can), the others are zeros.
template <typename Hash, typename FromData>
void hash_runs(Hash& h, const char* data, size_t pages, FromData from_data) {
  const size_t page = LinkHasher::kPage;
  size_t run = 0;
  bool run_data = pages > 0 && from_data(0);
  auto flush = [&](size_t to) {
    if (run_data) {
      for (size_t off = run * page; off < to * page;) {
        size_t step = std::min(LinkHasher::kMaxChunk, to * page - off);
        h.update(data + off, step);
        off += step;
      }
    } else {
      hash_zeros(h, (to - run) * page);
    }
  };
  for (size_t p = 1; p < pages; ++p) {
    const bool d = from_data(p);
    if (d != run_data) {
      flush(p);
      run = p;
      run_data = d;
    }
  }
  if (pages > 0) flush(pages);
}
}  // namespace

std::vector<uint8_t> hole_pages(int fd, uint64_t bytes) {
  const uint64_t page = LinkHasher::kPage;
  std::vector<uint8_t> holes(bytes / page, 1);
  off_t pos = 0;
  bool any_hole = false;
  while (static_cast<uint64_t>(pos) < bytes) {
    off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole from pos to the end
      return {};                  // cannot tell: all data
    }
    if (static_cast<uint64_t>(data) > static_cast<uint64_t>(pos)) any_hole = true;
    off_t end = ::lseek(fd, data, SEEK_HOLE);
    if (end < 0) return {};
    uint64_t first = static_cast<uint64_t>(data) / page;
    uint64_t last =
        std::min<uint64_t>((static_cast<uint64_t>(end) + page - 1) / page, holes.size());
    std::fill(holes.begin() + static_cast<std::ptrdiff_t>(std::min<uint64_t>(first, holes.size())),
              holes.begin() + static_cast<std::ptrdiff_t>(last), 0);
    pos = end;
  }
  if (static_cast<uint64_t>(pos) < bytes) any_hole = true;
  if (!any_hole) return {};
  return holes;
}

LinkHasher::LinkHasher(const MemView& full, const MemView& parent, size_t n)
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
  hash_runs(content_, full_.data, n_ / kPage, [&](size_t p) { return !full_.is_hole(p); });
}

void LinkHasher::hash_diff() {
  // A changed page comes from full (a hole in full is zeros either way), the others are zeros.
  hash_runs(diff_, full_.data, n_ / kPage,
            [&](size_t p) { return !full_.is_hole(p) && page_changed(full_, parent_, p); });
}

bool LinkHasher::page_changed(const MemView& full, const MemView& parent, size_t p) {
  const bool full_hole = full.is_hole(p);
  const bool parent_hole = parent.is_hole(p);
  if (full_hole && parent_hole) return false;
  if (full_hole) return !all_zero(parent.data + p * kPage, kPage);
  if (parent_hole) return !all_zero(full.data + p * kPage, kPage);
  return std::memcmp(full.data + p * kPage, parent.data + p * kPage, kPage) != 0;
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

#include "store/link_receiver.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <future>
#include <system_error>

#include "base/files.h"
#include "base/xxh3.h"

namespace forkd::store {

namespace {

constexpr uint64_t kRunPages = 256;  // changed pages written at once, at most (1 MiB)
constexpr uint64_t kRunBytes = kRunPages * kPageSize;
constexpr int kBuffers = 8;  // runs in flight to the disk, and read ahead when hashing
// A stretch of fewer changed pages than this in a run goes through the page cache, the rest
// straight to the disk. A live copy sends pages again, one here and one there, after the guest
// wrote them: straight to the disk each was a write of its own, ~50 us here, and the stream's
// reader waited for those (the first pass's runs are long).
constexpr uint64_t kDirectPages = 16;

// Zeros to hash and write from. Not const, so that it sits in .bss (the kernel's zero page)
// rather than as 1 MiB of the binary; nothing writes it.
const uint8_t* zero_chunk() {
  alignas(4096) static uint8_t zeros[kRunBytes];
  return zeros;
}

}  // namespace

Result<std::unique_ptr<LinkReceiver>> LinkReceiver::open(const std::string& parent_path,
                                                         const std::string& dir, uint64_t size) {
  auto parent = open_file(parent_path, O_RDONLY);
  if (!parent) return tl::unexpected(parent.error());
  auto psize = file_size(parent->get(), parent_path);
  if (!psize) return tl::unexpected(psize.error());
  if (*psize != size || size % kPageSize != 0 || size == 0) {
    return make_error(ErrorCode::kInvalidArgument, "memory of " + std::to_string(size) +
                                                       " bytes cannot be a link of a " +
                                                       std::to_string(*psize) + "-byte parent");
  }
  auto map = ReadMapping::map(parent->get(), size, parent_path);
  if (!map) return tl::unexpected(map.error());
  MemView view{map->data(), hole_pages(parent->get(), size)};
  std::string diff_path = dir + "/" + snapshot_file_name("memory_diff");
  std::string pages_path = dir + "/" + snapshot_file_name("memory_pages");
  // Straight to the disk, as write_link does (no new page cache per changed page), but for
  // short stretches (kDirectPages), which go through a second descriptor.
  auto diff = open_file(diff_path, O_RDWR | O_CREAT | O_TRUNC | O_DIRECT, 0600);
  if (!diff) diff = open_file(diff_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (!diff) return tl::unexpected(diff.error());
  if (::ftruncate(diff->get(), static_cast<off_t>(size)) != 0) {
    return errno_error(errno, "truncate " + diff_path);
  }
  auto cached = open_file(diff_path, O_WRONLY);
  if (!cached) return tl::unexpected(cached.error());
  std::unique_ptr<LinkReceiver> r(new LinkReceiver(std::move(*map), std::move(view),
                                                   std::move(*diff), diff_path, pages_path, size));
  r->diff_cached_ = std::move(*cached);
  r->slots_.resize(kRunPages * kBuffers);
  void* buf = nullptr;
  if (::posix_memalign(&buf, kPageSize, kRunBytes * kBuffers) != 0) {
    return make_error(ErrorCode::kNoSpace, "link receiver: no memory for its buffers");
  }
  r->pool_ = static_cast<char*>(buf);
  for (int i = kBuffers - 1; i >= 0; --i) r->free_.push_back(i);
  try {
    r->writer_ = std::thread([p = r.get()] { p->writer_loop(); });
  } catch (const std::system_error&) {
    // No thread: the writes happen inline.
  }
  return r;
}

LinkReceiver::LinkReceiver(ReadMapping parent_map, MemView parent, UniqueFd diff,
                           std::string diff_path, std::string pages_path, uint64_t size)
    : parent_map_(std::move(parent_map)),
      parent_(std::move(parent)),
      diff_(std::move(diff)),
      diff_path_(std::move(diff_path)),
      pages_path_(std::move(pages_path)),
      size_(size),
      pages_(size / kPageSize),
      changed_(pages_, 0),
      written_(pages_, 0),
      seen_(pages_, 0) {}

LinkReceiver::~LinkReceiver() {
  (void)stop_writer();
  std::free(pool_);
}

int LinkReceiver::take_buffer() {
  std::unique_lock<std::mutex> lock(mu_);
  if (free_.empty()) {
    auto t = std::chrono::steady_clock::now();
    cv_.wait(lock, [&] { return !free_.empty(); });
    timing_.buffer_wait_ms +=
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
    ++timing_.buffer_waits;
  }
  int b = free_.back();
  free_.pop_back();
  return b;
}

Status LinkReceiver::do_op(const Op& op) {
  if (op.buf >= 0) {
    // The run's pages in the order they came, each stretch of consecutive pages in one write.
    const uint64_t* slot = slots_.data() + static_cast<size_t>(op.buf) * kRunPages;
    const char* data = pool_ + static_cast<size_t>(op.buf) * kRunBytes;
    for (uint64_t i = 0, n = 0; i < op.pages; i += n) {
      n = 1;
      while (i + n < op.pages && slot[i + n] == slot[i] + n) ++n;
      const int fd = n >= kDirectPages ? diff_.get() : diff_cached_.get();
      FORKD_TRY(pwrite_full(fd, data + i * kPageSize, n * kPageSize,
                            static_cast<off_t>(slot[i] * kPageSize), diff_path_));
    }
    return {};
  }
  const off_t off = static_cast<off_t>(op.first * kPageSize);
  if (::fallocate(diff_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off,
                  static_cast<off_t>(kPageSize)) == 0) {
    return {};
  }
  return pwrite_full(diff_.get(), reinterpret_cast<const char*>(zero_chunk()), kPageSize, off,
                     diff_path_);
}

void LinkReceiver::writer_loop() {
  for (;;) {
    Op op;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !ops_.empty(); });
      if (ops_.empty()) return;
      op = ops_.front();
      ops_.pop_front();
    }
    Status st = do_op(op);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!st && disk_error_) disk_error_ = st;
      if (op.buf >= 0) free_.push_back(op.buf);
    }
    cv_.notify_all();
  }
}

Status LinkReceiver::submit(Op op) {
  if (!writer_.joinable()) {
    Status st = do_op(op);
    if (op.buf >= 0) free_.push_back(op.buf);
    return st;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!disk_error_) return disk_error_;
    ops_.push_back(op);
  }
  cv_.notify_all();
  return {};
}

// Waits until every write and punch asked for is done; the writer's first error.
Status LinkReceiver::stop_writer() {
  if (writer_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    writer_.join();
  }
  std::lock_guard<std::mutex> lock(mu_);
  return disk_error_;
}

bool LinkReceiver::parent_page_equals(uint64_t p, const uint8_t* data) const {
  if (parent_.is_hole(p)) return data == nullptr || all_zero(data, kPageSize);
  const auto* old = reinterpret_cast<const uint8_t*>(parent_.data + p * kPageSize);
  if (data == nullptr) return all_zero(old, kPageSize);
  return std::memcmp(old, data, kPageSize) == 0;
}

Status LinkReceiver::flush_run() {
  if (run_pages_ == 0) return {};
  Op op{0, run_pages_, run_};
  run_ = -1;
  run_pages_ = 0;
  return submit(op);
}

// The diff must read as zeros at a page it no longer holds. The run being gathered may hold the
// page: it goes to the disk first.
Status LinkReceiver::clear_page(uint64_t p) {
  if (!written_[p]) return {};
  written_[p] = 0;
  FORKD_TRY(flush_run());
  return submit(Op{p, 1, -1});
}

Status LinkReceiver::page(uint64_t offset, const uint8_t* data) {
  if (offset % kPageSize != 0 || offset >= size_) {
    return make_error(ErrorCode::kQemuFailed,
                      "link receiver: page offset " + std::to_string(offset) + " out of range");
  }
  const uint64_t p = offset / kPageSize;
  if (!seen_[p]) {
    seen_[p] = 1;
    ++seen_count_;
  }
  if (parent_page_equals(p, data)) {
    changed_[p] = 0;
    return clear_page(p);
  }
  changed_[p] = 1;
  if (data == nullptr || all_zero(data, kPageSize)) return clear_page(p);  // a hole reads as zeros
  if (run_pages_ == kRunPages) FORKD_TRY(flush_run());
  if (run_pages_ == 0) run_ = take_buffer();
  // A page sent again while the run still holds it is written twice, in order: the last counts.
  slots_[static_cast<size_t>(run_) * kRunPages + run_pages_] = p;
  std::memcpy(pool_ + static_cast<size_t>(run_) * kRunBytes + run_pages_ * kPageSize, data,
              kPageSize);
  ++run_pages_;
  written_[p] = 1;
  return {};
}

// Feeds pages [first, first+count) of the link's memory (part 0) or of its diff (part 1) to
// `feed` in runs whose bytes are contiguous. buf: the diff's bytes of those pages (null when the
// diff holds none of them).
template <typename Feed>
void LinkReceiver::feed_chunk(uint64_t first, uint64_t count, int part, const char* buf,
                              Feed&& feed) const {
  const char* zeros = reinterpret_cast<const char*>(zero_chunk());
  const char* start = nullptr;
  size_t len = 0;
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t p = first + i;
    const char* zero = zeros + i * kPageSize;
    const char* src;
    if (changed_[p]) {
      src = written_[p] ? buf + i * kPageSize : zero;
    } else if (part == 1) {
      src = zero;
    } else {
      src = parent_.is_hole(p) ? zero : parent_.data + p * kPageSize;
    }
    if (len > 0 && src == start + len) {
      len += kPageSize;
      continue;
    }
    if (len > 0) feed(start, len);
    start = src;
    len = kPageSize;
  }
  if (len > 0) feed(start, len);
}

// The digests over the whole memory, in order: the diff's XXH3-128, and with content_hash the
// content's SHA-256 (~0.65 s per GiB here), on two threads. The changed pages are read back from
// the diff (they went to the disk, not the page cache) by another, a few chunks ahead. Without
// threads: all inline. Without content_hash the first digest is empty.
Result<std::pair<std::string, std::string>> LinkReceiver::hash_all(bool content_hash) {
  const uint64_t chunks = (pages_ + kRunPages - 1) / kRunPages;
  auto buffer = [&](int b) { return b < 0 ? nullptr : pool_ + static_cast<size_t>(b) * kRunBytes; };

  // Chunk c is ready[c - base]; each is taken by both digests, then its buffer is free again.
  struct Ready {
    int buf = -1;  // -1: nothing read for it
    Status st;
    int left = 0;  // the digests still to take it
  };
  std::deque<Ready> ready;
  uint64_t base = 0;
  bool abort = false;
  auto produce = [&] {
    for (uint64_t c = 0; c < chunks; ++c) {
      Ready r;
      r.left = content_hash ? 2 : 1;
      if (chunk_written(c)) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return abort || !free_.empty(); });
        if (abort) return;
        r.buf = free_.back();
        free_.pop_back();
        lock.unlock();
        r.st = read_chunk(c, r.buf);
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        ready.push_back(r);
      }
      cv_.notify_all();
    }
  };
  // One digest's pass: waits for each chunk, feeds it, hands it back.
  auto consume = [&](int part, auto& h) -> Status {
    for (uint64_t c = 0; c < chunks; ++c) {
      Ready r;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return abort || c - base < ready.size(); });
        if (abort) return make_error(ErrorCode::kInternal, "link hash stopped");
        r = ready[c - base];
      }
      if (!r.st) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          abort = true;
        }
        cv_.notify_all();
        return r.st;
      }
      feed_chunk(c * kRunPages, chunk_pages(c), part, buffer(r.buf),
                 [&](const char* d, size_t n) { h.update(d, n); });
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (--ready[c - base].left == 0) {
          while (!ready.empty() && ready.front().left == 0) {
            if (ready.front().buf >= 0) free_.push_back(ready.front().buf);
            ready.pop_front();
            ++base;
          }
        }
      }
      cv_.notify_all();
    }
    return {};
  };

  Sha256 content;
  Xxh3 diff;
  std::thread reader, diff_thread;
  Status diff_st;
  try {
    reader = std::thread(produce);
    if (content_hash) diff_thread = std::thread([&] { diff_st = consume(1, diff); });
  } catch (const std::system_error&) {
  }
  const bool threaded = reader.joinable() && (!content_hash || diff_thread.joinable());
  auto stop_all = [&] {
    {
      std::lock_guard<std::mutex> lock(mu_);
      abort = true;  // waiters for a chunk or a buffer give up
    }
    cv_.notify_all();
  };
  Status content_st;  // this thread's pass: the content's, or without it the diff's
  if (threaded) content_st = content_hash ? consume(0, content) : consume(1, diff);
  if (!threaded || !content_st) stop_all();
  if (diff_thread.joinable()) diff_thread.join();
  stop_all();  // the reader may wait for a buffer nobody will free
  if (reader.joinable()) reader.join();
  if (threaded) {
    if (!content_st) return tl::unexpected(content_st.error());
    if (!diff_st) return tl::unexpected(diff_st.error());
    return std::make_pair(content_hash ? content.hex() : std::string(), diff.hex());
  }
  for (const Ready& r : ready) {
    if (r.buf >= 0) free_.push_back(r.buf);
  }
  return hash_inline(content_hash);
}

// hash_all on this thread alone: the digests, chunk by chunk.
Result<std::pair<std::string, std::string>> LinkReceiver::hash_inline(bool content_hash) {
  Sha256 content;
  Xxh3 diff;
  const int b = free_.back();
  for (uint64_t c = 0; c * kRunPages < pages_; ++c) {
    const bool read = chunk_written(c);
    if (read) FORKD_TRY(read_chunk(c, b));
    const char* buf = read ? pool_ + static_cast<size_t>(b) * kRunBytes : nullptr;
    if (content_hash) {
      feed_chunk(c * kRunPages, chunk_pages(c), 0, buf,
                 [&](const char* d, size_t n) { content.update(d, n); });
    }
    feed_chunk(c * kRunPages, chunk_pages(c), 1, buf,
               [&](const char* d, size_t n) { diff.update(d, n); });
  }
  return std::make_pair(content_hash ? content.hex() : std::string(), diff.hex());
}

uint64_t LinkReceiver::chunk_pages(uint64_t c) const {
  return std::min(kRunPages, pages_ - c * kRunPages);
}

bool LinkReceiver::chunk_written(uint64_t c) const {
  for (uint64_t p = c * kRunPages; p < c * kRunPages + chunk_pages(c); ++p) {
    if (written_[p]) return true;
  }
  return false;
}

// The diff's bytes of chunk c into buffer b.
Status LinkReceiver::read_chunk(uint64_t c, int b) {
  return pread_full(diff_.get(), pool_ + static_cast<size_t>(b) * kRunBytes,
                    chunk_pages(c) * kPageSize, static_cast<off_t>(c * kRunPages * kPageSize),
                    diff_path_);
}

Result<LinkWrite> LinkReceiver::finish(bool content_hash) {
  using Clock = std::chrono::steady_clock;
  auto ms = [](Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
  };
  auto t_drain = Clock::now();
  FORKD_TRY(flush_run());
  FORKD_TRY(stop_writer());
  timing_.drain_ms = ms(t_drain);
  if (const uint64_t missing = pages_ - seen_count_; missing > 0) {
    return make_error(ErrorCode::kQemuFailed, "link receiver: " + std::to_string(missing) +
                                                  " pages of the memory never arrived");
  }
  LinkWrite out;
  std::string bitmap((pages_ + 7) / 8, '\0');
  for (uint64_t p = 0; p < pages_; ++p) {
    if (!changed_[p]) continue;
    bitmap[p / 8] = static_cast<char>(bitmap[p / 8] | (1 << (p % 8)));
    ++out.pages_changed;
  }
  // The diff's flush (its data went out with O_DIRECT; what is left is the file's block map)
  // beside the hashing.
  auto t_hash = Clock::now();
  std::future<Status> synced;
  try {
    synced = std::async(std::launch::async, [&] { return fsync_fd(diff_.get(), diff_path_); });
  } catch (const std::system_error&) {  // no thread: flushed after the hashes
  }
  auto hashes = hash_all(content_hash);
  timing_.hash_ms = ms(t_hash);
  Status sync_st = synced.valid() ? synced.get() : fsync_fd(diff_.get(), diff_path_);
  timing_.sync_ms = ms(t_hash);
  if (!hashes) return tl::unexpected(hashes.error());
  if (!sync_st) return tl::unexpected(sync_st.error());
  FORKD_TRY(
      finish_link(diff_.get(), size_, hashes->first, hashes->second, bitmap, pages_path_, out));
  return out;
}

}  // namespace forkd::store

#pragma once
// Builds a chain link (memory.diff and memory.pages, as write_link does) from the pages of a
// migration stream as they arrive, without a whole new memory file: each page is compared with
// the parent's page at once, and only the ones that differ are written. A page may arrive more
// than once (a live copy sends a page again after the guest wrote it); the last one counts.
// finish() checks that every page arrived, then hashes the diff and (unless asked not to) the
// memory the link stands for (the parent's pages with the diff's over them), in one pass.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/error.h"
#include "store/chain.h"
#include "store/link_hasher.h"
#include "store/mem_io.h"

namespace forkd::store {

class LinkReceiver {
 public:
  // parent_path: the parent's whole memory (a base's memory file or a link's assembled one),
  // size bytes; dir: where the link's two files are written (created anew).
  static Result<std::unique_ptr<LinkReceiver>> open(const std::string& parent_path,
                                                    const std::string& dir, uint64_t size);
  ~LinkReceiver();
  LinkReceiver(const LinkReceiver&) = delete;
  LinkReceiver& operator=(const LinkReceiver&) = delete;

  // The page at byte offset (page-aligned, inside the memory); data: kPageSize bytes, or null
  // for a zero page.
  Status page(uint64_t offset, const uint8_t* data);

  // Whether every page arrived at least once (a live copy's first pass is over).
  bool all_seen() const { return seen_count_ == pages_; }

  // Flushes and syncs the diff, writes the bitmap, computes the diff's hash and, with
  // content_hash, the memory's (otherwise LinkWrite::content_sha256 stays empty: the link is
  // committed with its content hash pending, SnapshotMeta::content_pending). kQemuFailed when a
  // page never arrived.
  Result<LinkWrite> finish(bool content_hash = true);

  // Where finish() spent its time: the writes still queued, the two hashes, and the diff's flush
  // (beside the hashes; from their start).
  struct Timing {
    double drain_ms = 0, hash_ms = 0, sync_ms = 0;
    // How long and how often page() waited for a buffer the disk had not given back yet.
    double buffer_wait_ms = 0;
    uint64_t buffer_waits = 0;
  };
  const Timing& timing() const { return timing_; }

 private:
  LinkReceiver(ReadMapping parent_map, MemView parent, UniqueFd diff, std::string diff_path,
               std::string pages_path, uint64_t size);

  // The disk work runs on a thread of its own (inline when none can start), in the order it
  // was asked for: a run of changed pages written, or a page punched out again.
  struct Op {
    uint64_t first = 0, pages = 0;
    int buf = -1;  // a run's buffer (its pages: slots_); -1: punch page `first`
  };
  bool parent_page_equals(uint64_t p, const uint8_t* data) const;
  Status flush_run();
  Status clear_page(uint64_t p);
  Status submit(Op op);
  Status do_op(const Op& op);
  void writer_loop();
  Status stop_writer();
  int take_buffer();
  Result<std::pair<std::string, std::string>> hash_all(bool content_hash);
  Result<std::pair<std::string, std::string>> hash_inline(bool content_hash);
  // Hashing goes by chunks of one buffer (a run's size): their pages, whether the diff holds
  // any of them, and reading the diff's bytes of one into buffer b.
  uint64_t chunk_pages(uint64_t c) const;
  bool chunk_written(uint64_t c) const;
  Status read_chunk(uint64_t c, int b);
  template <typename Feed>
  void feed_chunk(uint64_t first, uint64_t count, int part, const char* buf, Feed&& feed) const;

  ReadMapping parent_map_;
  MemView parent_;
  UniqueFd diff_;
  UniqueFd diff_cached_;  // the same file without O_DIRECT, for short stretches
  std::string diff_path_, pages_path_;
  uint64_t size_, pages_;
  std::vector<uint8_t> changed_;  // per page: differs from the parent
  std::vector<uint8_t> written_;  // per page: the diff file holds data there
  std::vector<uint8_t> seen_;     // per page: arrived at least once
  uint64_t seen_count_ = 0;       // pages with seen_ set
  char* pool_ = nullptr;          // kBuffers page-aligned buffers of a run each
  std::vector<int> free_;
  // The run being gathered: changed pages in the order they came, in buffer run_, the page
  // number of each in slots_ (kRunPages per buffer).
  int run_ = -1;
  uint64_t run_pages_ = 0;
  std::vector<uint64_t> slots_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Op> ops_;
  bool stopping_ = false;
  Status disk_error_;  // the writer's first error
  std::thread writer_;
  Timing timing_;
};

}  // namespace forkd::store

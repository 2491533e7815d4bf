#pragma once
// Reads a QEMU pre-copy migration stream (what `migrate` sends, one channel) and splits it in
// two: the pages of the guest's main RAM block go to a sink, and everything else (the header,
// the configuration, the other RAM blocks' pages such as the firmware's, and the device state)
// is written unchanged to a device-state file. That file is what a QEMU saves with
// x-ignore-shared for a VM whose main RAM is a shared memory file: children load it over the
// tag's memory. A live branch of a link uses it instead of a second QEMU that would write the
// whole memory into a file only to have it compared with the parent's.
//
// The stream comes from a jailed QEMU, so it is untrusted input: every length and offset is
// checked, the device-state part is bounded, and anything this reader does not know (a section
// other than RAM before the device state, a RAM flag such as XBZRLE, a page of an unknown
// block or outside its block) fails the read with kQemuFailed. A return path (capability
// return-path, which a branch turns on for the switch-over's gate, engine/switchover_gate.h) is
// accepted only when asked for; its commands are dropped from the file, which a QEMU loads
// without one. The layout read here is QEMU's savevm and RAM migration format
// (migration/savevm.c, migration/ram.c, since 2.x; checked against 7.2 and 10.0).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/error.h"

namespace forkd::engine {

inline constexpr size_t kStreamPage = 4096;

struct StreamStats {
  uint64_t bytes_in = 0;      // bytes read from the stream
  uint64_t main_pages = 0;    // page records of the main block (a page sent twice counts twice)
  uint64_t other_pages = 0;   // page records of other blocks (passed through)
  uint64_t device_bytes = 0;  // the device-state part, from its first section to the end
  bool return_path = false;   // the source opened its return path (and waits for its messages)
};

class MigrationStreamSplitter {
 public:
  // A page of the main block at byte offset `offset`: data points to kStreamPage bytes, or is
  // null for a zero page. An error stops the read.
  using PageFn = std::function<Status(uint64_t offset, const uint8_t* data)>;
  // Called before each read from the stream, with the figures so far: what was read before is
  // parsed then (but for the first bytes of a record). An error stops the read.
  using ReadFn = std::function<Status(const StreamStats&)>;

  // in_fd: the stream (read until its end). out_fd: the device-state file (written from its
  // current position). main_block: the main RAM block's id; main_bytes: its size, which the
  // stream must announce. max_device_bytes bounds everything but the main block's pages.
  MigrationStreamSplitter(int in_fd, int out_fd, std::string main_block, uint64_t main_bytes,
                          PageFn on_page, uint64_t max_device_bytes = 256u << 20);

  // Reads the whole stream. kQemuFailed for a malformed or unexpected stream, kIo for a read or
  // write error, or the sink's error.
  Status run();

  // Before run(): accept the commands of a return path (OPEN_RETURN_PATH, PING), which are
  // refused otherwise; and call before_read before each read.
  void expect_return_path() { return_path_ok_ = true; }
  void set_before_read(ReadFn before_read) { before_read_ = std::move(before_read); }

  const StreamStats& stats() const { return stats_; }

 private:
  struct Block {
    std::string name;
    uint64_t length = 0;
  };

  Status fill();
  Status need(size_t n);
  Result<uint8_t> u8();
  Result<uint64_t> big_endian(int n);  // the next n bytes (n <= 8) as a big-endian number
  Result<uint16_t> be16();
  Result<uint32_t> be32();
  Result<uint64_t> be64();
  Result<std::string> bytes(size_t n);
  Result<std::string> short_string();  // one length byte, then that many bytes

  Status emit(const void* p, size_t n);
  Status emit_u8(uint8_t v) { return emit(&v, 1); }
  Status emit_be32(uint32_t v);
  Status emit_be64(uint64_t v);
  Status emit_string(const std::string& s);
  Status flush_out();

  Status configuration();
  Status section_header(uint8_t type, uint32_t* id, std::string* idstr);
  Status footer(uint32_t id);
  Status ram_payload(bool setup);
  Status block_list(uint64_t total);
  Status page_record(uint64_t flags, uint64_t offset);
  Status command();
  Status pass_rest();

  int in_fd_;
  int out_fd_;
  std::string main_name_;
  uint64_t main_bytes_;
  PageFn on_page_;
  ReadFn before_read_;
  uint64_t max_out_;
  bool return_path_ok_ = false;

  std::vector<uint8_t> in_;
  size_t in_pos_ = 0, in_len_ = 0;
  bool eof_ = false;
  std::vector<uint8_t> out_;
  uint64_t out_total_ = 0;

  std::vector<Block> blocks_;
  bool have_blocks_ = false;
  int last_in_ = -1;   // block of the last page record read (the stream's CONTINUE)
  int last_out_ = -1;  // block of the last page record written
  uint32_t ram_section_ = 0;
  bool have_ram_section_ = false;
  StreamStats stats_;
};

}  // namespace forkd::engine

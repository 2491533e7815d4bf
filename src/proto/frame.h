#pragma once
// forkd agent wire protocol, version 1: length-prefixed frames over a byte stream (virtio-serial
// in the guest, a unix socket on the host). Shared by the engine and the guest agent.
//
// Frame = 16-byte header + JSON body + optional binary body.
//   offset 0  u8[4] magic "FKD1"
//   offset 4  u8    version (kProtocolVersion)
//   offset 5  u8    flags (0; reserved)
//   offset 6  u16   reserved (0)
//   offset 8  u32   json_len, little-endian, 1..kMaxJsonLen
//   offset 12 u32   bin_len, little-endian, 0..kMaxBinLen
// The JSON body is an object; see proto/PROTOCOL.md for the messages. The binary body carries raw
// bytes (file chunks, exec output, stdin) so that no data is ever base64-encoded.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/error.h"

namespace forkd::proto {

inline constexpr char kMagic[4] = {'F', 'K', 'D', '1'};
inline constexpr uint8_t kProtocolVersion = 1;
inline constexpr size_t kHeaderLen = 16;
inline constexpr uint32_t kMaxJsonLen = 1u << 20;  // 1 MiB
inline constexpr uint32_t kMaxBinLen = 4u << 20;   // 4 MiB
// File and output chunks are cut to this size by both sides.
inline constexpr size_t kChunkLen = 1u << 20;

struct Frame {
  std::string json;
  std::string bin;
};

// Appends an encoded frame to out. Fails (kInvalidArgument) when a body exceeds its limit.
Status encode_frame(std::string_view json, std::string_view bin, std::string* out);
Result<std::string> encode_frame(std::string_view json, std::string_view bin = {});

// Incremental decoder. Feed it bytes as they arrive; call next() until it returns nullopt.
// A bad header (wrong magic, unknown version, oversized or zero length) yields a kProtocol error
// once, after which the decoder skips bytes until the next magic, so one garbled frame costs
// only itself. Buffered bytes are bounded by one maximal frame.
class FrameDecoder {
 public:
  void feed(std::string_view bytes);
  // A complete frame, an error for a malformed one, or nullopt when more bytes are needed.
  std::optional<Result<Frame>> next();
  size_t buffered() const { return buf_.size() - pos_; }

 private:
  void compact();
  std::string buf_;
  size_t pos_ = 0;
  bool resyncing_ = false;
};

}  // namespace forkd::proto

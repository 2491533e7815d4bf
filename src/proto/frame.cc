#include "proto/frame.h"

#include <cstring>

namespace forkd::proto {

namespace {

void put_u32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

}  // namespace

Status encode_frame(std::string_view json, std::string_view bin, std::string* out) {
  if (json.empty() || json.size() > kMaxJsonLen) {
    return make_error(ErrorCode::kInvalidArgument,
                      "frame json body of " + std::to_string(json.size()) + " bytes out of range");
  }
  if (bin.size() > kMaxBinLen) {
    return make_error(ErrorCode::kInvalidArgument,
                      "frame binary body of " + std::to_string(bin.size()) + " bytes too large");
  }
  out->append(kMagic, sizeof kMagic);
  out->push_back(static_cast<char>(kProtocolVersion));
  out->push_back(0);
  out->push_back(0);
  out->push_back(0);
  put_u32(out, static_cast<uint32_t>(json.size()));
  put_u32(out, static_cast<uint32_t>(bin.size()));
  out->append(json);
  out->append(bin);
  return {};
}

Result<std::string> encode_frame(std::string_view json, std::string_view bin) {
  std::string out;
  FORKD_TRY(encode_frame(json, bin, &out));
  return out;
}

void FrameDecoder::feed(std::string_view bytes) {
  compact();
  buf_.append(bytes);
}

void FrameDecoder::compact() {
  if (pos_ > 0 && (pos_ >= buf_.size() / 2 || pos_ > (1u << 20))) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
}

std::optional<Result<Frame>> FrameDecoder::next() {
  const std::string_view magic(kMagic, sizeof kMagic);
  if (resyncing_) {
    size_t found = buf_.find(magic, pos_);
    if (found == std::string::npos) {
      // Keep a tail that could be the start of a magic split across reads.
      size_t tail = buf_.size() >= magic.size() ? buf_.size() - (magic.size() - 1) : 0;
      if (tail > pos_) pos_ = tail;
      compact();
      return std::nullopt;
    }
    pos_ = found;
    resyncing_ = false;
  }
  size_t avail = buf_.size() - pos_;
  const char* h = buf_.data() + pos_;
  size_t prefix = avail < magic.size() ? avail : magic.size();
  std::string problem;
  uint32_t json_len = 0, bin_len = 0;
  if (std::memcmp(h, kMagic, prefix) != 0) {
    problem = "bad frame magic";
  } else if (avail < kHeaderLen) {
    return std::nullopt;
  } else if (static_cast<uint8_t>(h[4]) != kProtocolVersion) {
    problem = "unsupported protocol version " + std::to_string(static_cast<uint8_t>(h[4]));
  } else {
    json_len = get_u32(h + 8);
    bin_len = get_u32(h + 12);
    if (json_len == 0 || json_len > kMaxJsonLen) {
      problem = "frame json length " + std::to_string(json_len) + " out of range";
    } else if (bin_len > kMaxBinLen) {
      problem = "frame binary length " + std::to_string(bin_len) + " too large";
    }
  }
  if (!problem.empty()) {
    // Report once, then skip silently up to the next magic.
    pos_ += 1;
    resyncing_ = true;
    compact();
    return Result<Frame>(tl::unexpected(Error(ErrorCode::kProtocol, problem)));
  }
  size_t total = kHeaderLen + json_len + bin_len;
  if (avail < total) return std::nullopt;
  Frame f;
  f.json.assign(h + kHeaderLen, json_len);
  f.bin.assign(h + kHeaderLen + json_len, bin_len);
  pos_ += total;
  compact();
  return Result<Frame>(std::move(f));
}

}  // namespace forkd::proto

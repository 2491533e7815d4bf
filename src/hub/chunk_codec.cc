#include "hub/chunk_codec.h"

#include <zstd.h>

#include <cstring>

namespace forkd::hub {

namespace {

constexpr char kChunkMagic[4] = {'F', 'K', 'C', '1'};
constexpr size_t kHeader = 16;

uint64_t page_count(uint64_t length) { return (length + kChunkPage - 1) / kChunkPage; }

void put_u64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; i++) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t get_u64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

Error corrupt_chunk(const std::string& what) {
  return Error(ErrorCode::kChecksumMismatch, "corrupt chunk: " + what);
}

}  // namespace

struct ChunkCodec::State {
  int level;
  ZSTD_CCtx* cctx = nullptr;
  ZSTD_DCtx* dctx = nullptr;
  std::string head;               // magic, length, bitmap
  std::unique_ptr<char[]> frame;  // compressBound(kChunkBytes)
};

ChunkCodec::ChunkCodec(int level) : s_(std::make_unique<State>()) { s_->level = level; }

ChunkCodec::~ChunkCodec() {
  ZSTD_freeCCtx(s_->cctx);
  ZSTD_freeDCtx(s_->dctx);
}

uint64_t max_chunk_blob_bytes() {
  return kHeader + page_count(kChunkBytes) / 8 + ZSTD_compressBound(kChunkBytes);
}

bool all_zero(const char* p, size_t n) {
  size_t i = 0;
  // Word at a time; the compiler vectorizes the OR loop.
  for (; i + 64 <= n; i += 64) {
    uint64_t acc = 0;
    uint64_t w[8];
    std::memcpy(w, p + i, 64);
    for (uint64_t x : w) acc |= x;
    if (acc) return false;
  }
  for (; i < n; i++) {
    if (p[i]) return false;
  }
  return true;
}

Status ChunkCodec::encode(std::string_view data, std::string* blob, uint64_t* zero_pages) {
  if (data.size() > kChunkBytes) {
    return make_error(ErrorCode::kInternal, "chunk larger than the chunk size");
  }
  if (!s_->cctx) s_->cctx = ZSTD_createCCtx();
  if (!s_->cctx) return make_error(ErrorCode::kInternal, "zstd: out of memory");
  uint64_t pages = page_count(data.size());
  std::string& out = s_->head;
  out.assign(kChunkMagic, 4);
  out.append(4, '\0');  // reserved
  put_u64(&out, data.size());
  size_t bitmap_at = out.size();
  out.append((pages + 7) / 8, '\0');
  uint64_t zeros = 0, stored = 0;
  for (uint64_t i = 0; i < pages; i++) {
    size_t off = i * kChunkPage;
    size_t len = std::min<size_t>(kChunkPage, data.size() - off);
    if (all_zero(data.data() + off, len)) {
      zeros++;
      continue;
    }
    out[bitmap_at + i / 8] = static_cast<char>(out[bitmap_at + i / 8] | (1 << (i % 8)));
    stored += len;
  }
  if (zero_pages) *zero_pages = zeros;
  // Stream the stored pages straight from data (no gathering copy); the pledged size puts the
  // content size in the frame header, which decode checks against the bitmap.
  ZSTD_CCtx_reset(s_->cctx, ZSTD_reset_session_only);
  ZSTD_CCtx_setParameter(s_->cctx, ZSTD_c_compressionLevel, s_->level);
  ZSTD_CCtx_setParameter(s_->cctx, ZSTD_c_contentSizeFlag, 1);
  ZSTD_CCtx_setPledgedSrcSize(s_->cctx, stored);
  // The frame goes to a buffer allocated once: its pages stay mapped from chunk to chunk.
  size_t cap = ZSTD_compressBound(kChunkBytes);
  if (!s_->frame) s_->frame.reset(new char[cap]);
  ZSTD_outBuffer ob{s_->frame.get(), cap, 0};
  for (uint64_t i = 0; i < pages; i++) {
    if (!(out[bitmap_at + i / 8] & (1 << (i % 8)))) continue;
    size_t off = i * kChunkPage;
    ZSTD_inBuffer ib{data.data() + off, std::min<size_t>(kChunkPage, data.size() - off), 0};
    while (ib.pos < ib.size) {
      size_t r = ZSTD_compressStream2(s_->cctx, &ob, &ib, ZSTD_e_continue);
      if (ZSTD_isError(r)) {
        return make_error(ErrorCode::kInternal, std::string("zstd: ") + ZSTD_getErrorName(r));
      }
    }
  }
  ZSTD_inBuffer none{nullptr, 0, 0};
  for (;;) {
    size_t r = ZSTD_compressStream2(s_->cctx, &ob, &none, ZSTD_e_end);
    if (ZSTD_isError(r)) {
      return make_error(ErrorCode::kInternal, std::string("zstd: ") + ZSTD_getErrorName(r));
    }
    if (r == 0) break;
  }
  blob->reserve(out.size() + ob.pos);
  blob->assign(out);
  blob->append(s_->frame.get(), ob.pos);
  return {};
}

Status ChunkCodec::decode(std::string_view blob, uint64_t expected_length, DecodedChunk* out) {
  if (blob.size() < kHeader) return tl::unexpected(corrupt_chunk("shorter than its header"));
  if (std::memcmp(blob.data(), kChunkMagic, 4) != 0)
    return tl::unexpected(corrupt_chunk("bad magic"));
  if (get_u64(blob.data() + 4) & 0xffffffffu)
    return tl::unexpected(corrupt_chunk("reserved bits set"));
  uint64_t length = get_u64(blob.data() + 8);
  if (length != expected_length || length > kChunkBytes) {
    return tl::unexpected(corrupt_chunk("length " + std::to_string(length) + ", expected " +
                                        std::to_string(expected_length)));
  }
  uint64_t pages = page_count(length);
  size_t bitmap_len = (pages + 7) / 8;
  if (blob.size() < kHeader + bitmap_len) return tl::unexpected(corrupt_chunk("bitmap cut short"));
  const char* bitmap = blob.data() + kHeader;
  out->length = length;
  out->present.assign(pages, '\0');
  uint64_t stored_bytes = 0;
  for (uint64_t i = 0; i < pages; i++) {
    if (bitmap[i / 8] & (1 << (i % 8))) {
      out->present[i] = 1;
      stored_bytes += out->page_len(i);
    }
  }
  // Bits past the last page must be clear: one blob per content.
  if (pages % 8 && (static_cast<unsigned char>(bitmap[bitmap_len - 1]) >> (pages % 8)) != 0) {
    return tl::unexpected(corrupt_chunk("bits set past the last page"));
  }
  std::string_view frame = blob.substr(kHeader + bitmap_len);
  if (ZSTD_findFrameCompressedSize(frame.data(), frame.size()) != frame.size()) {
    return tl::unexpected(corrupt_chunk("not exactly one zstd frame"));
  }
  unsigned long long content = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (content != stored_bytes)
    return tl::unexpected(corrupt_chunk("frame size does not match the bitmap"));
  if (!s_->dctx) s_->dctx = ZSTD_createDCtx();
  if (!s_->dctx) return make_error(ErrorCode::kInternal, "zstd: out of memory");
  out->stored = stored_bytes;
  size_t n =
      ZSTD_decompressDCtx(s_->dctx, out->data.data(), stored_bytes, frame.data(), frame.size());
  if (ZSTD_isError(n))
    return tl::unexpected(corrupt_chunk(std::string("zstd: ") + ZSTD_getErrorName(n)));
  if (n != stored_bytes) return tl::unexpected(corrupt_chunk("frame decodes short"));
  return {};
}

}  // namespace forkd::hub

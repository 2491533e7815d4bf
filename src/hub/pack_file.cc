#include "hub/pack_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>

#include "base/clock.h"
#include "base/files.h"
#include "base/json_get.h"
#include "base/random.h"
#include "hub/chunk_codec.h"

namespace forkd::hub {

namespace {

constexpr char kPackMagic[8] = {'F', 'O', 'R', 'K', 'D', 'P', 'K', '\n'};
constexpr size_t kHeaderBytes = 8 + 4 + 4 + 8 + 64;
constexpr size_t kFrameBytes = 8 + 64;

void put_le(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t get_le(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; i--) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// Reads exactly n bytes; false at a clean end of file before the first byte.
Result<bool> read_exact(int fd, char* buf, size_t n, const std::string& what) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno_error(errno, "read " + what);
    if (r == 0) {
      if (got == 0) return false;
      return make_error(ErrorCode::kIo, "the pack is truncated (in " + what + ")");
    }
    got += static_cast<size_t>(r);
  }
  return true;
}

Status need(int fd, char* buf, size_t n, const std::string& what) {
  auto r = read_exact(fd, buf, n, what);
  if (!r) return tl::unexpected(r.error());
  if (!*r) return make_error(ErrorCode::kIo, "the pack is truncated (before " + what + ")");
  return {};
}

Result<UniqueFd> open_input(const std::string& input) {
  if (input == "-") return UniqueFd(::dup(STDIN_FILENO));
  auto fd = open_file(input, O_RDONLY);
  if (!fd) return tl::unexpected(fd.error().wrap("open pack"));
  return fd;
}

Result<PackManifest> read_header(int fd, uint64_t* consumed) {
  char h[kHeaderBytes];
  FORKD_TRY(need(fd, h, sizeof h, "the header"));
  if (std::memcmp(h, kPackMagic, 8) != 0) {
    return make_error(ErrorCode::kInvalidArgument, "not a forkd pack (bad magic)");
  }
  uint64_t format = get_le(h + 8, 4);
  if (format > static_cast<uint64_t>(kPackFormat)) {
    return make_error(ErrorCode::kInvalidArgument, "the pack has format " + std::to_string(format) +
                                                       ", newer than this forkd reads (" +
                                                       std::to_string(kPackFormat) +
                                                       "); upgrade forkd to unpack it");
  }
  uint64_t len = get_le(h + 16, 8);
  if (len == 0 || len > kMaxManifestBytes) {
    return make_error(ErrorCode::kInvalidArgument,
                      "bad pack: manifest of " + std::to_string(len) + " bytes");
  }
  std::string text(len, '\0');
  FORKD_TRY(need(fd, text.data(), len, "the manifest"));
  if (sha256_hex(text) != std::string(h + 24, 64)) {
    return make_error(ErrorCode::kChecksumMismatch, "bad pack: the manifest's checksum differs");
  }
  *consumed = kHeaderBytes + len;
  auto j = json::parse_untrusted(text);
  if (j.is_discarded())
    return make_error(ErrorCode::kInvalidArgument, "bad pack: manifest is not JSON");
  return PackManifest::from_json(j);
}

}  // namespace

Result<PackResult> pack_tag(const store::SnapshotStore& store, const PackOptions& opts) {
  auto t0 = std::chrono::steady_clock::now();
  auto m = build_manifest(store, opts.tag, opts.since, opts.without_image);
  if (!m) return tl::unexpected(m.error());
  UniqueFd out;
  std::string staged;
  if (opts.output == "-") {
    out = UniqueFd(::dup(STDOUT_FILENO));
  } else {
    staged = std::filesystem::absolute(opts.output).string() + ".partial-" + random_hex(6);
    auto fd = open_file(staged, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (!fd) return tl::unexpected(fd.error().wrap("pack"));
    out = std::move(*fd);
  }
  TreeGuard cleanup(staged);  // removes a staged file that never got its name
  if (staged.empty()) cleanup.release();
  std::string text = m->to_json().dump();
  std::string head(kPackMagic, 8);
  put_le(&head, kPackFormat, 4);
  put_le(&head, 0, 4);
  put_le(&head, text.size(), 8);
  head += sha256_hex(text);
  PackResult res;
  FORKD_TRY(write_all(out.get(), head));
  FORKD_TRY(write_all(out.get(), text));
  res.pack_bytes = head.size() + text.size();
  auto stats = encode_chunks(
      store, *m, opts.threads,
      [&](const ChunkPos&, const std::string& blob, const std::string& sha) -> Status {
        std::string frame;
        put_le(&frame, blob.size(), 8);
        frame += sha;
        FORKD_TRY(write_all(out.get(), frame));
        FORKD_TRY(write_all(out.get(), blob));
        res.pack_bytes += frame.size() + blob.size();
        return {};
      },
      opts.progress);
  if (!stats) return tl::unexpected(stats.error().wrap("pack " + opts.tag));
  if (!staged.empty()) {
    if (::fsync(out.get()) != 0) return errno_error(errno, "fsync " + staged);
    FORKD_TRY(rename_durable(staged, opts.output));
    cleanup.release();
  }
  res.stats = *stats;
  res.logical_bytes = m->data_bytes();
  res.manifest = std::move(*m);
  res.ms = ms_since(t0);
  return res;
}

Result<UnpackResult> unpack_file(const store::SnapshotStore& store, const UnpackOptions& opts) {
  auto t0 = std::chrono::steady_clock::now();
  auto in = open_input(opts.input);
  if (!in) return tl::unexpected(in.error());
  UnpackResult res;
  auto m = read_header(in->get(), &res.pack_bytes);
  if (!m) return tl::unexpected(m.error());
  auto as = TagAssembler::begin(store, std::move(*m), opts.new_tag, opts.threads, opts.progress);
  if (!as) return tl::unexpected(as.error());
  size_t chunks = (*as)->plan().size();
  const uint64_t max_blob = max_chunk_blob_bytes();
  for (size_t i = 0; i < chunks; i++) {
    char frame[kFrameBytes];
    std::string what = "chunk " + std::to_string(i + 1) + " of " + std::to_string(chunks);
    FORKD_TRY(need(in->get(), frame, sizeof frame, what));
    uint64_t len = get_le(frame, 8);
    if (len > max_blob) {
      return make_error(ErrorCode::kInvalidArgument,
                        "bad pack: " + what + " claims " + std::to_string(len) + " bytes");
    }
    std::string blob(len, '\0');
    FORKD_TRY(need(in->get(), blob.data(), len, what));
    FORKD_TRY((*as)->add_chunk(std::move(blob), std::string(frame + 8, 64)));
    res.pack_bytes += kFrameBytes + len;
  }
  char extra;
  auto more = read_exact(in->get(), &extra, 1, "the end");
  if (!more) return tl::unexpected(more.error());
  if (*more) return make_error(ErrorCode::kInvalidArgument, "bad pack: data after the last chunk");
  auto done = (*as)->finish();
  if (!done) return tl::unexpected(done.error());
  res.tags = std::move(*done);
  res.ms = ms_since(t0);
  return res;
}

Result<PackManifest> read_pack_manifest(const std::string& path) {
  auto in = open_input(path);
  if (!in) return tl::unexpected(in.error());
  uint64_t consumed = 0;
  return read_header(in->get(), &consumed);
}

}  // namespace forkd::hub

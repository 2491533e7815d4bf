#include "engine/migration_stream.h"

#include <errno.h>
#include <unistd.h>

#include <cstring>

#include "base/files.h"

namespace forkd::engine {

namespace {

// QEMU's savevm framing (migration/savevm.h).
constexpr uint32_t kMagic = 0x5145564d;  // "QEVM"
constexpr uint32_t kVersion = 3;
constexpr uint8_t kEof = 0x00;
constexpr uint8_t kSectionStart = 0x01;
constexpr uint8_t kSectionPart = 0x02;
constexpr uint8_t kSectionEnd = 0x03;
constexpr uint8_t kSectionFull = 0x04;
constexpr uint8_t kSubsection = 0x05;
constexpr uint8_t kConfiguration = 0x07;
constexpr uint8_t kCommand = 0x08;
constexpr uint8_t kFooter = 0x7e;
// The return path's commands (QEMU_VM_COMMAND): the source opens it at the stream's start and
// pings it once (a PONG nobody waits for in pre-copy). Neither goes into the file.
constexpr uint16_t kCmdOpenReturnPath = 1;
constexpr uint16_t kCmdPing = 2;
// MIG_CMD_SWITCHOVER_START (QEMU 10.0+): a notice without data for the receiving QEMU's devices
// that the switch-over begins. A file saved from a VM never holds it, so it is dropped.
constexpr uint16_t kCmdSwitchoverStart = 11;

// RAM record flags (migration/ram.h): the low bits of each record's first 8 bytes.
constexpr uint64_t kFlagZero = 0x02;
constexpr uint64_t kFlagMemSize = 0x04;
constexpr uint64_t kFlagPage = 0x08;
constexpr uint64_t kFlagEos = 0x10;
constexpr uint64_t kFlagContinue = 0x20;
constexpr uint64_t kFlagMask = kStreamPage - 1;

constexpr size_t kInBuffer = 1 << 20;
constexpr size_t kOutBuffer = 256 << 10;
constexpr size_t kMaxBlocks = 64;
constexpr uint32_t kMaxConfigName = 256;
constexpr uint32_t kMaxCapabilities = 64;

Error malformed(const std::string& what) {
  return Error(ErrorCode::kQemuFailed, "migration stream: " + what);
}

}  // namespace

MigrationStreamSplitter::MigrationStreamSplitter(int in_fd, int out_fd, std::string main_block,
                                                 uint64_t main_bytes, PageFn on_page,
                                                 uint64_t max_device_bytes)
    : in_fd_(in_fd),
      out_fd_(out_fd),
      main_name_(std::move(main_block)),
      main_bytes_(main_bytes),
      on_page_(std::move(on_page)),
      max_out_(max_device_bytes),
      in_(kInBuffer) {
  out_.reserve(kOutBuffer);
}

Status MigrationStreamSplitter::fill() {
  if (in_pos_ > 0 && in_pos_ < in_len_)
    std::memmove(in_.data(), in_.data() + in_pos_, in_len_ - in_pos_);
  in_len_ -= in_pos_;
  in_pos_ = 0;
  if (before_read_ && !eof_) FORKD_TRY(before_read_(stats_));
  while (!eof_ && in_len_ < in_.size()) {
    ssize_t n = ::read(in_fd_, in_.data() + in_len_, in_.size() - in_len_);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(errno, "read the migration stream");
    }
    if (n == 0) {
      eof_ = true;
      break;
    }
    in_len_ += static_cast<size_t>(n);
    stats_.bytes_in += static_cast<uint64_t>(n);
    break;  // parse what came; read more when it is used up
  }
  return {};
}

Status MigrationStreamSplitter::need(size_t n) {
  while (in_len_ - in_pos_ < n) {
    if (eof_) return tl::unexpected(malformed("ends in the middle of a record"));
    FORKD_TRY(fill());
  }
  return {};
}

Result<uint8_t> MigrationStreamSplitter::u8() {
  FORKD_TRY(need(1));
  return in_[in_pos_++];
}

Result<uint64_t> MigrationStreamSplitter::big_endian(int n) {
  FORKD_TRY(need(static_cast<size_t>(n)));
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | in_[in_pos_++];
  return v;
}

Result<uint16_t> MigrationStreamSplitter::be16() {
  return big_endian(2).map([](uint64_t v) { return static_cast<uint16_t>(v); });
}

Result<uint32_t> MigrationStreamSplitter::be32() {
  return big_endian(4).map([](uint64_t v) { return static_cast<uint32_t>(v); });
}

Result<uint64_t> MigrationStreamSplitter::be64() { return big_endian(8); }

Result<std::string> MigrationStreamSplitter::bytes(size_t n) {
  FORKD_TRY(need(n));
  std::string s(reinterpret_cast<const char*>(in_.data() + in_pos_), n);
  in_pos_ += n;
  return s;
}

Result<std::string> MigrationStreamSplitter::short_string() {
  auto len = u8();
  if (!len) return tl::unexpected(len.error());
  return bytes(*len);
}

Status MigrationStreamSplitter::emit(const void* p, size_t n) {
  out_total_ += n;
  if (out_total_ > max_out_) {
    return tl::unexpected(
        malformed("more than " + std::to_string(max_out_ >> 20) + " MiB besides the main memory"));
  }
  const auto* b = static_cast<const uint8_t*>(p);
  if (out_.size() + n > kOutBuffer) FORKD_TRY(flush_out());
  if (n >= kOutBuffer) {
    return write_all(out_fd_, std::string_view(reinterpret_cast<const char*>(b), n));
  }
  out_.insert(out_.end(), b, b + n);
  return {};
}

Status MigrationStreamSplitter::emit_be32(uint32_t v) {
  uint8_t b[4] = {static_cast<uint8_t>(v >> 24), static_cast<uint8_t>(v >> 16),
                  static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)};
  return emit(b, 4);
}

Status MigrationStreamSplitter::emit_be64(uint64_t v) {
  FORKD_TRY(emit_be32(static_cast<uint32_t>(v >> 32)));
  return emit_be32(static_cast<uint32_t>(v));
}

Status MigrationStreamSplitter::emit_string(const std::string& s) {
  FORKD_TRY(emit_u8(static_cast<uint8_t>(s.size())));
  return emit(s.data(), s.size());
}

Status MigrationStreamSplitter::flush_out() {
  if (out_.empty()) return {};
  auto st =
      write_all(out_fd_, std::string_view(reinterpret_cast<const char*>(out_.data()), out_.size()));
  out_.clear();
  return st;
}

Status MigrationStreamSplitter::run() {
  auto magic = be32();
  if (!magic) return tl::unexpected(magic.error());
  auto version = be32();
  if (!version) return tl::unexpected(version.error());
  if (*magic != kMagic || *version != kVersion) {
    return tl::unexpected(malformed("not a QEMU migration stream of version 3"));
  }
  FORKD_TRY(emit_be32(*magic));
  FORKD_TRY(emit_be32(*version));
  bool configured = false;
  for (;;) {
    auto type = u8();
    if (!type) return tl::unexpected(type.error());
    if (*type == kConfiguration && !configured) {
      configured = true;
      FORKD_TRY(emit_u8(*type));
      FORKD_TRY(configuration());
      continue;
    }
    if (*type == kCommand) {
      FORKD_TRY(command());
      continue;
    }
    if (*type == kSectionStart || *type == kSectionPart || *type == kSectionEnd) {
      uint32_t id = 0;
      std::string idstr;
      FORKD_TRY(section_header(*type, &id, &idstr));
      if (*type == kSectionStart) {
        if (idstr != "ram" || have_ram_section_) {
          return tl::unexpected(malformed("unexpected live section '" + idstr + "'"));
        }
        have_ram_section_ = true;
        ram_section_ = id;
      } else if (!have_ram_section_ || id != ram_section_) {
        return tl::unexpected(malformed("a section part of an unknown section"));
      }
      FORKD_TRY(ram_payload(*type == kSectionStart));
      FORKD_TRY(footer(id));
      continue;
    }
    if (*type == kSectionFull || *type == kEof) {
      // The device state (or the end): passed on as it is, to the end of the stream.
      if (!have_blocks_) return tl::unexpected(malformed("device state before any memory"));
      uint64_t before = out_total_;
      FORKD_TRY(emit_u8(*type));
      FORKD_TRY(pass_rest());
      stats_.device_bytes = out_total_ - before;
      return flush_out();
    }
    return tl::unexpected(malformed("unknown section type " + std::to_string(*type)));
  }
}

// vmstate_configuration: the machine type's name, then its optional subsections.
Status MigrationStreamSplitter::configuration() {
  auto len = be32();
  if (!len) return tl::unexpected(len.error());
  if (*len > kMaxConfigName) return tl::unexpected(malformed("machine name too long"));
  auto name = bytes(*len);
  if (!name) return tl::unexpected(name.error());
  FORKD_TRY(emit_be32(*len));
  FORKD_TRY(emit(name->data(), name->size()));
  for (;;) {
    FORKD_TRY(need(1));
    if (in_[in_pos_] != kSubsection) return {};
    ++in_pos_;
    auto sub = short_string();
    if (!sub) return tl::unexpected(sub.error());
    auto ver = be32();
    if (!ver) return tl::unexpected(ver.error());
    FORKD_TRY(emit_u8(kSubsection));
    FORKD_TRY(emit_string(*sub));
    FORKD_TRY(emit_be32(*ver));
    if (*sub == "configuration/target-page-bits") {
      auto bits = be32();
      if (!bits) return tl::unexpected(bits.error());
      FORKD_TRY(emit_be32(*bits));
    } else if (*sub == "configuration/capabilities") {
      auto count = be32();
      if (!count) return tl::unexpected(count.error());
      if (*count > kMaxCapabilities) return tl::unexpected(malformed("too many capabilities"));
      FORKD_TRY(emit_be32(*count));
      for (uint32_t i = 0; i < *count; ++i) {
        auto cap = short_string();
        if (!cap) return tl::unexpected(cap.error());
        FORKD_TRY(emit_string(*cap));
      }
    } else if (*sub == "configuration/uuid") {
      auto uuid = bytes(16);
      if (!uuid) return tl::unexpected(uuid.error());
      FORKD_TRY(emit(uuid->data(), uuid->size()));
    } else {
      return tl::unexpected(malformed("unknown configuration part '" + *sub + "'"));
    }
  }
}

Status MigrationStreamSplitter::section_header(uint8_t type, uint32_t* id, std::string* idstr) {
  auto sid = be32();
  if (!sid) return tl::unexpected(sid.error());
  *id = *sid;
  FORKD_TRY(emit_u8(type));
  FORKD_TRY(emit_be32(*sid));
  if (type != kSectionStart) return {};
  auto name = short_string();
  if (!name) return tl::unexpected(name.error());
  auto instance = be32();
  if (!instance) return tl::unexpected(instance.error());
  auto version = be32();
  if (!version) return tl::unexpected(version.error());
  *idstr = *name;
  FORKD_TRY(emit_string(*name));
  FORKD_TRY(emit_be32(*instance));
  return emit_be32(*version);
}

Status MigrationStreamSplitter::footer(uint32_t id) {
  auto mark = u8();
  if (!mark) return tl::unexpected(mark.error());
  auto sid = be32();
  if (!sid) return tl::unexpected(sid.error());
  if (*mark != kFooter || *sid != id) return tl::unexpected(malformed("bad section footer"));
  FORKD_TRY(emit_u8(*mark));
  return emit_be32(*sid);
}

Status MigrationStreamSplitter::command() {
  auto code = be16();
  if (!code) return tl::unexpected(code.error());
  auto size = be16();
  if (!size) return tl::unexpected(size.error());
  if (*code == kCmdSwitchoverStart && *size == 0) return {};
  if (return_path_ok_ && *code == kCmdOpenReturnPath && *size == 0 && !stats_.return_path) {
    stats_.return_path = true;
    return {};
  }
  if (stats_.return_path && *code == kCmdPing && *size == 4) {
    FORKD_TRY(need(4));
    in_pos_ += 4;
    return {};
  }
  return tl::unexpected(malformed("unexpected command " + std::to_string(*code)));
}

// A RAM section's records up to its end-of-section flag.
Status MigrationStreamSplitter::ram_payload(bool setup) {
  for (;;) {
    auto head = be64();
    if (!head) return tl::unexpected(head.error());
    const uint64_t flags = *head & kFlagMask;
    const uint64_t addr = *head & ~kFlagMask;
    if (flags == kFlagEos) return emit_be64(*head);
    if (flags == kFlagMemSize) {
      if (!setup || have_blocks_) return tl::unexpected(malformed("a second block list"));
      FORKD_TRY(emit_be64(*head));
      FORKD_TRY(block_list(addr));
      continue;
    }
    if (flags & (kFlagZero | kFlagPage)) {
      if (!have_blocks_) return tl::unexpected(malformed("a page before the block list"));
      FORKD_TRY(page_record(flags, addr));
      continue;
    }
    return tl::unexpected(malformed("unsupported RAM record flags " + std::to_string(flags)));
  }
}

// The blocks: name, size and (with x-ignore-shared, which the caller set on the source) the
// block's guest address; as many as add up to the announced total.
Status MigrationStreamSplitter::block_list(uint64_t total) {
  uint64_t left = total;
  bool main_seen = false;
  while (left > 0) {
    if (blocks_.size() >= kMaxBlocks) return tl::unexpected(malformed("too many RAM blocks"));
    auto name = short_string();
    if (!name) return tl::unexpected(name.error());
    auto length = be64();
    if (!length) return tl::unexpected(length.error());
    auto gaddr = be64();
    if (!gaddr) return tl::unexpected(gaddr.error());
    if (name->empty() || *length == 0 || *length > left || *length % kStreamPage != 0) {
      return tl::unexpected(malformed("bad RAM block list"));
    }
    for (const auto& b : blocks_) {
      if (b.name == *name) return tl::unexpected(malformed("RAM block listed twice"));
    }
    if (*name == main_name_) {
      if (*length != main_bytes_) {
        return tl::unexpected(malformed("main memory of " + std::to_string(*length) +
                                        " bytes, expected " + std::to_string(main_bytes_)));
      }
      main_seen = true;
    }
    blocks_.push_back({*name, *length});
    left -= *length;
    FORKD_TRY(emit_string(*name));
    FORKD_TRY(emit_be64(*length));
    FORKD_TRY(emit_be64(*gaddr));
  }
  if (!main_seen) return tl::unexpected(malformed("no RAM block '" + main_name_ + "'"));
  have_blocks_ = true;
  return {};
}

Status MigrationStreamSplitter::page_record(uint64_t flags, uint64_t offset) {
  if ((flags & kFlagZero) && (flags & kFlagPage))
    return tl::unexpected(malformed("bad page flags"));
  if (flags & ~(kFlagZero | kFlagPage | kFlagContinue)) {
    return tl::unexpected(malformed("unsupported page flags " + std::to_string(flags)));
  }
  int block = last_in_;
  if (!(flags & kFlagContinue)) {
    auto name = short_string();
    if (!name) return tl::unexpected(name.error());
    block = -1;
    for (size_t i = 0; i < blocks_.size(); ++i) {
      if (blocks_[i].name == *name) block = static_cast<int>(i);
    }
    if (block < 0) return tl::unexpected(malformed("a page of unknown block '" + *name + "'"));
  } else if (block < 0) {
    return tl::unexpected(malformed("a continued page with no block before it"));
  }
  last_in_ = block;
  const Block& b = blocks_[static_cast<size_t>(block)];
  if (offset >= b.length) return tl::unexpected(malformed("a page outside its block"));
  const uint8_t* data = nullptr;
  if (flags & kFlagZero) {
    auto fill = u8();
    if (!fill) return tl::unexpected(fill.error());
    if (*fill != 0) return tl::unexpected(malformed("a zero page that is not zero"));
  } else {
    FORKD_TRY(need(kStreamPage));
    data = in_.data() + in_pos_;
    in_pos_ += kStreamPage;
  }
  if (b.name == main_name_) {
    ++stats_.main_pages;
    return on_page_(offset, data);
  }
  // Another block's page (firmware, option ROMs): into the file, named whenever the file's
  // previous page record was of another block (the loader's CONTINUE means "same block").
  ++stats_.other_pages;
  uint64_t head = offset | (flags & (kFlagZero | kFlagPage));
  if (last_out_ == block) head |= kFlagContinue;
  FORKD_TRY(emit_be64(head));
  if (last_out_ != block) FORKD_TRY(emit_string(b.name));
  last_out_ = block;
  if (data == nullptr) return emit_u8(0);
  return emit(data, kStreamPage);
}

Status MigrationStreamSplitter::pass_rest() {
  for (;;) {
    if (in_pos_ < in_len_) {
      FORKD_TRY(emit(in_.data() + in_pos_, in_len_ - in_pos_));
      in_pos_ = in_len_;
    }
    if (eof_) return {};
    FORKD_TRY(fill());
  }
}

}  // namespace forkd::engine

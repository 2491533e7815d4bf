#include "engine/migration_stream.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <map>
#include <string>

#include "base/files.h"

namespace forkd::engine {
namespace {

constexpr uint64_t kMain = 16 * kStreamPage;
constexpr uint64_t kRom = 2 * kStreamPage;

// Builds streams the way QEMU's savevm and RAM code lay them out.
struct Bytes {
  std::string s;
  Bytes& u8(uint8_t v) {
    s.push_back(static_cast<char>(v));
    return *this;
  }
  Bytes& be16(uint16_t v) { return u8(v >> 8).u8(v & 0xff); }
  Bytes& be32(uint32_t v) { return be16(v >> 16).be16(v & 0xffff); }
  Bytes& be64(uint64_t v) { return be32(v >> 32).be32(v & 0xffffffff); }
  Bytes& str(const std::string& v) {
    u8(static_cast<uint8_t>(v.size()));
    s += v;
    return *this;
  }
  Bytes& raw(const std::string& v) {
    s += v;
    return *this;
  }
};

std::string page_of(char c) { return std::string(kStreamPage, c); }

Bytes header() {
  Bytes b;
  b.be32(0x5145564d).be32(3);
  // configuration: machine name, then the capabilities subsection.
  b.u8(0x07).be32(7).raw("microvm");
  b.u8(0x05).str("configuration/capabilities").be32(1).be32(1).str("x-ignore-shared");
  return b;
}

Bytes ram_start() {
  Bytes b;
  b.u8(0x01).be32(2).str("ram").be32(0).be32(4);
  b.be64((kMain + kRom) | 0x04);
  b.str("mem").be64(kMain).be64(0);
  b.str("rom").be64(kRom).be64(0xfffe0000);
  b.be64(0x10);        // end of section
  b.u8(0x7e).be32(2);  // footer
  return b;
}

struct SplitRun {
  std::map<uint64_t, std::string> pages;  // main block: offset -> content ("" for a zero page)
  int calls = 0;
  std::string out;
  Status status;
};

SplitRun split(const std::string& stream, uint64_t max_out = 1 << 20) {
  SplitRun run;
  auto dir = TempDir::create("forkd-stream-test");
  EXPECT_TRUE(dir);
  std::string in_path = dir->path() + "/in", out_path = dir->path() + "/out";
  EXPECT_TRUE(write_file_atomic(in_path, stream));
  auto in = open_file(in_path, O_RDONLY);
  auto out = open_file(out_path, O_WRONLY | O_CREAT | O_TRUNC);
  MigrationStreamSplitter s(
      in->get(), out->get(), "mem", kMain,
      [&](uint64_t off, const uint8_t* data) -> Status {
        ++run.calls;
        run.pages[off] = data ? std::string(reinterpret_cast<const char*>(data), kStreamPage) : "";
        return {};
      },
      max_out);
  run.status = s.run();
  run.out = *read_file(out_path);
  return run;
}

TEST(MigrationStream, MainPagesGoToTheSinkAndTheRestToTheFile) {
  const std::string a = page_of('a'), b = page_of('b'), r = page_of('r');
  Bytes in = header();
  in.raw(ram_start().s);
  // A part: main pages (named, then continued), a ROM page, a main page again, a zero page.
  in.u8(0x02).be32(2);
  in.be64(0 | 0x08).str("mem").raw(a);
  in.be64(kStreamPage | 0x08 | 0x20).raw(b);
  in.be64(0 | 0x08).str("rom").raw(r);
  in.be64(kStreamPage | 0x02 | 0x20).u8(0);  // ROM zero page, continued
  in.be64(2 * kStreamPage | 0x02).str("mem").u8(0);
  in.be64(0x10).u8(0x7e).be32(2);
  in.u8(0x08).be16(11).be16(0);  // switchover start: dropped
  // The end: main page 0 again, then a ROM page right after a main page (named again).
  in.u8(0x03).be32(2);
  in.be64(0 | 0x08).str("mem").raw(b);
  in.be64(kStreamPage | 0x08).str("rom").raw(a);
  in.be64(0x10).u8(0x7e).be32(2);
  const std::string devices = std::string("\x04\0\0\0\x05", 5) + "device bytes of any shape" +
                              std::string("\0", 1) + "\x06trailer";
  in.raw(devices);

  SplitRun run = split(in.s);
  ASSERT_TRUE(run.status) << run.status.error().message();
  EXPECT_EQ(run.calls, 4);
  EXPECT_EQ(run.pages[0], b);  // the last one sent counts
  EXPECT_EQ(run.pages[kStreamPage], b);
  EXPECT_EQ(run.pages[2 * kStreamPage], "");

  // The file: the same stream without the main block's pages and the command; ROM records are
  // named wherever the file's previous page record was of another block.
  Bytes want = header();
  want.raw(ram_start().s);
  want.u8(0x02).be32(2);
  want.be64(0 | 0x08).str("rom").raw(r);
  want.be64(kStreamPage | 0x02 | 0x20).u8(0);
  want.be64(0x10).u8(0x7e).be32(2);
  want.u8(0x03).be32(2);
  want.be64(kStreamPage | 0x08 | 0x20).raw(a);  // the file's previous record was ROM's too
  want.be64(0x10).u8(0x7e).be32(2);
  want.raw(devices);
  EXPECT_EQ(run.out, want.s);
}

TEST(MigrationStream, MalformedStreamsAreRefused) {
  const std::string a = page_of('a');
  auto with_part = [&](const Bytes& part) {
    Bytes in = header();
    in.raw(ram_start().s);
    in.u8(0x02).be32(2).raw(part.s).be64(0x10).u8(0x7e).be32(2);
    in.u8(0x04).raw("dev");
    return in.s;
  };
  auto refused = [&](const std::string& stream, const std::string& why) {
    SplitRun run = split(stream);
    ASSERT_FALSE(run.status) << why;
    EXPECT_EQ(run.status.error().code(), ErrorCode::kQemuFailed) << why;
  };
  refused(Bytes().be32(0x12345678).be32(3).s, "bad magic");
  refused(header().s, "ends after the configuration");
  refused(with_part(Bytes().be64(kMain | 0x08).str("mem").raw(a)), "page outside its block");
  refused(with_part(Bytes().be64(0 | 0x08).str("nope").raw(a)), "unknown block");
  refused(with_part(Bytes().be64(0 | 0x08 | 0x20).raw(a)), "continued page with no block");
  refused(with_part(Bytes().be64(0 | 0x40).str("mem")), "XBZRLE");
  refused(with_part(Bytes().be64(0 | 0x02).str("mem").u8(7)), "zero page that is not zero");
  refused(with_part(Bytes().be64(0 | 0x08).str("mem").raw("short")), "truncated page");
  Bytes wrong_size = header();
  wrong_size.u8(0x01).be32(2).str("ram").be32(0).be32(4).be64(kMain | 0x04);
  wrong_size.str("mem").be64(kMain / 2).be64(0).str("x").be64(kMain / 2).be64(0);
  refused(wrong_size.s, "main block of another size");
  Bytes other = header();
  other.u8(0x01).be32(3).str("block").be32(0).be32(1);
  refused(other.s, "a live section other than RAM");
  Bytes cmd = header();
  cmd.u8(0x08).be16(1).be16(0);
  refused(cmd.s, "a command that needs an answer (return path)");
  refused(header().u8(0x04).s, "device state before the memory");
  // The part besides the main memory is bounded.
  Bytes big = header();
  big.raw(ram_start().s).u8(0x02).be32(2);
  for (int i = 0; i < 8; ++i) big.be64(0 | 0x08).str("rom").raw(a);
  big.be64(0x10).u8(0x7e).be32(2).u8(0x04);
  SplitRun run = split(big.s, 4 * kStreamPage);
  ASSERT_FALSE(run.status);
  EXPECT_NE(run.status.error().message().find("besides the main memory"), std::string::npos);
}

// A source with a return path (capability return-path): it opens it after the header and pings
// it once. Neither command goes into the file, which a QEMU loads without a return path; the
// hook before each read learns that the path is open.
TEST(MigrationStream, AReturnPathIsTakenOnlyWhenAskedAndKeptOutOfTheFile) {
  const std::string a = page_of('a');
  auto stream = [&](bool with_path) {
    Bytes in = header();
    if (with_path) in.u8(0x08).be16(1).be16(0).u8(0x08).be16(2).be16(4).be32(1);
    in.raw(ram_start().s);
    in.u8(0x02).be32(2).be64(0 | 0x08).str("mem").raw(a).be64(0x10).u8(0x7e).be32(2);
    in.u8(0x04).raw("dev");
    return in.s;
  };
  auto dir = TempDir::create("forkd-stream-test");
  ASSERT_TRUE(dir);
  auto run = [&](const std::string& stream, bool expect) {
    EXPECT_TRUE(write_file_atomic(dir->path() + "/in", stream));
    auto in = open_file(dir->path() + "/in", O_RDONLY);
    auto out = open_file(dir->path() + "/out", O_WRONLY | O_CREAT | O_TRUNC);
    MigrationStreamSplitter s(in->get(), out->get(), "mem", kMain,
                              [](uint64_t, const uint8_t*) -> Status { return {}; });
    int reads = 0;
    bool saw_path = false;
    if (expect) s.expect_return_path();
    s.set_before_read([&](const StreamStats& st) -> Status {
      ++reads;
      saw_path = saw_path || st.return_path;
      return {};
    });
    Status st = s.run();
    EXPECT_GE(reads, 1);
    if (st) EXPECT_EQ(saw_path, s.stats().return_path) << "seen by the hook";
    return std::make_pair(st, s.stats().return_path);
  };
  auto [plain, plain_path] = run(stream(false), true);
  ASSERT_TRUE(plain) << plain.error().message();
  EXPECT_FALSE(plain_path);
  const std::string plain_file = *read_file(dir->path() + "/out");

  auto [gated, gated_path] = run(stream(true), true);
  ASSERT_TRUE(gated) << gated.error().message();
  EXPECT_TRUE(gated_path);
  EXPECT_EQ(*read_file(dir->path() + "/out"), plain_file) << "the commands are dropped";

  auto [refused, refused_path] = run(stream(true), false);
  ASSERT_FALSE(refused) << "a return path nobody asked for";
  EXPECT_EQ(refused.error().code(), ErrorCode::kQemuFailed);

  Bytes twice = header();
  twice.u8(0x08).be16(1).be16(0).u8(0x08).be16(1).be16(0);
  auto [again, again_path] = run(twice.s, true);
  EXPECT_FALSE(again) << "opened twice";
  Bytes ping_first = header();
  ping_first.u8(0x08).be16(2).be16(4).be32(1);
  auto [ping, ping_path] = run(ping_first.s, true);
  EXPECT_FALSE(ping) << "a ping before the path is open";
}

TEST(MigrationStream, TheSinksErrorStopsTheRead) {
  Bytes in = header();
  in.raw(ram_start().s).u8(0x02).be32(2).be64(0 | 0x08).str("mem").raw(page_of('a'));
  auto dir = TempDir::create("forkd-stream-test");
  ASSERT_TRUE(dir);
  ASSERT_TRUE(write_file_atomic(dir->path() + "/in", in.s));
  auto fd = open_file(dir->path() + "/in", O_RDONLY);
  auto out = open_file(dir->path() + "/out", O_WRONLY | O_CREAT);
  MigrationStreamSplitter s(
      fd->get(), out->get(), "mem", kMain,
      [](uint64_t, const uint8_t*) -> Status { return make_error(ErrorCode::kIo, "disk full"); });
  auto st = s.run();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().message(), "disk full");
}

}  // namespace
}  // namespace forkd::engine

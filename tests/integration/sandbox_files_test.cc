// File operations through a real minimal-image VM.
#include <gtest/gtest.h>

#include <random>

#include "base/files.h"
#include "integration/vm_fixture.h"

namespace forkd::test {
namespace {

struct SandboxFilesTraits {
  static constexpr const char* kImage = "minimal";
  static constexpr int kMemoryMib = 512;
};
class SandboxFiles : public SharedSandboxTest<SandboxFilesTraits> {};

TEST_F(SandboxFiles, FiftyMegabyteRoundTripWithChecksum) {
  auto dir = TempDir::create("forkd-files-it");
  ASSERT_TRUE(dir);
  std::string src = dir->path() + "/in.bin", back = dir->path() + "/out.bin";
  std::string data(50u << 20, '\0');
  std::mt19937_64 rng(7);
  for (size_t i = 0; i + 8 <= data.size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(&data[i], &v, 8);
  }
  ASSERT_TRUE(write_file_atomic(src, data));
  std::string want = sha256_hex(data);
  ASSERT_TRUE(sb_->put_file(src, "/tmp/big.bin"));
  engine::ExecOptions o;
  o.argv = {"sha256sum", "/tmp/big.bin"};
  auto r = sb_->exec(o);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->stdout_data.substr(0, 64), want) << "guest saw different bytes";
  ASSERT_TRUE(sb_->get_file("/tmp/big.bin", back));
  auto got = sha256_file(back);
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, want);
  ASSERT_TRUE(sb_->remove("/tmp/big.bin", false));
}

TEST_F(SandboxFiles, BinarySafeSmallWriteAndRead) {
  std::string data("\0\x01\x02\xff\xfe binary\n\0", 14);
  ASSERT_TRUE(sb_->write_file("/tmp/bin", data));
  auto back = sb_->read_file("/tmp/bin");
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, data);
  auto st = sb_->stat("/tmp/bin");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->type, "file");
  EXPECT_EQ(st->size, data.size());
}

TEST_F(SandboxFiles, EmptyFile) {
  ASSERT_TRUE(sb_->write_file("/tmp/empty", ""));
  auto back = sb_->read_file("/tmp/empty");
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, "");
}

TEST_F(SandboxFiles, MkdirListRemove) {
  ASSERT_TRUE(sb_->mkdir("/tmp/a/b/c", true));
  ASSERT_TRUE(sb_->write_file("/tmp/a/b/c/f.txt", "x"));
  ASSERT_TRUE(sb_->write_file("/tmp/a/g.txt", "yy"));
  auto entries = sb_->list_dir("/tmp/a");
  ASSERT_TRUE(entries);
  std::set<std::string> names;
  for (const auto& e : *entries)
    names.insert(e["name"].get<std::string>() + ":" + e["type"].get<std::string>());
  EXPECT_EQ(names, (std::set<std::string>{"b:dir", "g.txt:file"}));
  EXPECT_FALSE(sb_->remove("/tmp/a", false)) << "non-recursive remove of a full dir must fail";
  ASSERT_TRUE(sb_->remove("/tmp/a", true));
  auto gone = sb_->stat("/tmp/a");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code(), ErrorCode::kNotFound);
}

TEST_F(SandboxFiles, MissingFileIsNotFound) {
  auto r = sb_->read_file("/no/such/file");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound);
  auto dir = TempDir::create("forkd-files-it");
  ASSERT_TRUE(dir);
  auto g = sb_->get_file("/no/such/file", dir->path() + "/x");
  ASSERT_FALSE(g);
  EXPECT_FALSE(path_exists(dir->path() + "/x"));
  EXPECT_FALSE(path_exists(dir->path() + "/x.forkd-partial"));
}

}  // namespace
}  // namespace forkd::test

#include "hub/layer_flatten.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <locale.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace forkd::hub {
namespace {

namespace fs = std::filesystem;

constexpr time_t kMtime = 1700000000;

struct Ent {
  std::string path;
  char kind;         // f file, d dir, l symlink, h hard link, c/b char/block device, p fifo
  std::string data;  // file content, or the link target
  mode_t perm = 0644;
  unsigned major = 0, minor = 0;
  int64_t uid = -1, gid = -1;  // -1: the test's own
};
Ent F(std::string p, std::string data, mode_t perm = 0644) { return {p, 'f', data, perm}; }
Ent D(std::string p, mode_t perm = 0755) { return {p, 'd', "", perm}; }
Ent L(std::string p, std::string target) { return {p, 'l', target, 0777}; }
Ent H(std::string p, std::string target) { return {p, 'h', target}; }
Ent Dev(std::string p, char kind, unsigned ma, unsigned mi) { return {p, kind, "", 0600, ma, mi}; }

enum class Filter { kNone, kGzip, kZstd };

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void spit(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) out.push_back(e.path().filename());
  std::sort(out.begin(), out.end());
  return out;
}

bool lexists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(gen() & 0xff);
  return s;
}

class LayerFlattenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/forkd-layer-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    root_ = base_ + "/root";
    outside_ = base_ + "/outside";
    layers_ = base_ + "/layers";
    ASSERT_EQ(::mkdir(root_.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(outside_.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(layers_.c_str(), 0755), 0);
    spit(outside_ + "/sentinel", "keep");
  }

  // Every test: nothing appeared, vanished or changed outside the root.
  void TearDown() override {
    EXPECT_EQ(names_in(outside_), std::vector<std::string>{"sentinel"});
    EXPECT_EQ(slurp(outside_ + "/sentinel"), "keep");
    struct stat st;
    ASSERT_EQ(::stat((outside_ + "/sentinel").c_str(), &st), 0);
    EXPECT_EQ(st.st_nlink, 1u);
    EXPECT_EQ(names_in(base_), (std::vector<std::string>{"layers", "outside", "root"}));
    std::error_code ec;
    fs::remove_all(base_, ec);
  }

  std::string layer(const std::string& name, const std::vector<Ent>& ents,
                    Filter filter = Filter::kNone) {
    std::string path = layers_ + "/" + name;
    archive* a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    if (filter == Filter::kGzip) archive_write_add_filter_gzip(a);
    if (filter == Filter::kZstd) archive_write_add_filter_zstd(a);
    EXPECT_EQ(archive_write_open_filename(a, path.c_str()), ARCHIVE_OK);
    for (const Ent& en : ents) {
      archive_entry* e = archive_entry_new();
      archive_entry_set_pathname(e, en.path.c_str());
      archive_entry_set_perm(e, en.perm);
      archive_entry_set_uid(e, en.uid >= 0 ? en.uid : ::geteuid());
      archive_entry_set_gid(e, en.gid >= 0 ? en.gid : ::getegid());
      archive_entry_set_mtime(e, kMtime, 0);
      archive_entry_set_size(e, 0);
      switch (en.kind) {
        case 'f':
          archive_entry_set_filetype(e, AE_IFREG);
          archive_entry_set_size(e, static_cast<la_int64_t>(en.data.size()));
          break;
        case 'd':
          archive_entry_set_filetype(e, AE_IFDIR);
          break;
        case 'l':
          archive_entry_set_filetype(e, AE_IFLNK);
          archive_entry_set_symlink(e, en.data.c_str());
          break;
        case 'h':
          archive_entry_set_filetype(e, AE_IFREG);
          archive_entry_set_hardlink(e, en.data.c_str());
          break;
        case 'p':
          archive_entry_set_filetype(e, AE_IFIFO);
          break;
        default:
          archive_entry_set_filetype(e, en.kind == 'c' ? AE_IFCHR : AE_IFBLK);
          archive_entry_set_rdevmajor(e, en.major);
          archive_entry_set_rdevminor(e, en.minor);
      }
      EXPECT_EQ(archive_write_header(a, e), ARCHIVE_OK) << archive_error_string(a);
      if (en.kind == 'f' && !en.data.empty()) {
        EXPECT_EQ(archive_write_data(a, en.data.data(), en.data.size()),
                  static_cast<la_ssize_t>(en.data.size()));
      }
      archive_entry_free(e);
    }
    EXPECT_EQ(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
    return path;
  }

  Status apply(const std::string& layer_path) {
    return apply_layer(layer_path, root_, limits_, &stats_);
  }

  std::string in_root(const std::string& rel) { return root_ + "/" + rel; }

  std::string base_, root_, outside_, layers_;
  FlattenLimits limits_;
  FlattenStats stats_;
};

TEST_F(LayerFlattenTest, TwoLayersFilesDirsSymlinksHardlinks) {
  ASSERT_TRUE(apply(layer("l1", {D("./"), D("etc"), F("etc/hosts", "127.0.0.1 localhost\n"),
                                 D("bin"), F("./bin/su", "SU", 04755), L("bin/ash", "su"),
                                 L("usr/bin/python3", "/usr/bin/python3.11"),
                                 H("bin/su2", "bin/su"), F("a//b/./c", "deep")})));
  struct stat st;
  ASSERT_EQ(::stat(in_root("etc").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, kMtime);  // directory times are set after their content
  ASSERT_EQ(::stat(in_root("etc/hosts").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, kMtime);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  ASSERT_EQ(::stat(in_root("bin/su").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 04755u);  // setuid kept
  EXPECT_EQ(fs::read_symlink(in_root("usr/bin/python3")), "/usr/bin/python3.11");
  EXPECT_EQ(fs::read_symlink(in_root("bin/ash")), "su");
  EXPECT_EQ(slurp(in_root("a/b/c")), "deep");

  ASSERT_TRUE(apply(layer(
      "l2", {F("etc/hosts", "new"), H("etc/hosts2", "./etc/hosts"), H("bin/su3", "bin/su")})));
  EXPECT_EQ(slurp(in_root("etc/hosts")), "new");
  EXPECT_EQ(slurp(in_root("etc/hosts2")), "new");
  struct stat a, b;
  ASSERT_EQ(::stat(in_root("bin/su").c_str(), &a), 0);
  ASSERT_EQ(::stat(in_root("bin/su3").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_nlink, 3u);
  EXPECT_EQ(stats_.files, 4u);
  EXPECT_EQ(stats_.dirs, 3u);
  EXPECT_EQ(stats_.symlinks, 2u);
  EXPECT_EQ(stats_.hardlinks, 3u);
  EXPECT_EQ(stats_.entries, 12u);
  EXPECT_EQ(stats_.bytes, 20u + 2 + 4 + 3);
}

class LayerFlattenFilterTest : public LayerFlattenTest,
                               public ::testing::WithParamInterface<Filter> {};

TEST_P(LayerFlattenFilterTest, ReadsEachCompression) {
  std::string big = random_bytes(300000, 7);
  ASSERT_TRUE(apply(layer("l1", {F("x/big", big), L("x/link", "big")}, GetParam())));
  EXPECT_EQ(slurp(in_root("x/big")), big);
  EXPECT_EQ(fs::read_symlink(in_root("x/link")), "big");
}

INSTANTIATE_TEST_SUITE_P(All, LayerFlattenFilterTest,
                         ::testing::Values(Filter::kNone, Filter::kGzip, Filter::kZstd));

TEST_F(LayerFlattenTest, WhiteoutsRemoveFilesAndDirs) {
  ASSERT_TRUE(apply(layer("l1", {F("a/f", "1"), F("a/g", "2"), F("d/x", "3"), F("d/y/z", "4"),
                                 L("s", "/nonexistent"), F("dev_whited", "5")})));
  ASSERT_TRUE(
      apply(layer("l2", {F("a/.wh.f", ""), F(".wh.d", ""), F(".wh.s", ""), F("a/.wh.missing", ""),
                         F("nodir/.wh.x", ""), Dev("dev_whited", 'c', 0, 0)})));
  EXPECT_FALSE(lexists(in_root("a/f")));
  EXPECT_TRUE(lexists(in_root("a/g")));
  EXPECT_FALSE(lexists(in_root("d")));
  EXPECT_FALSE(lexists(in_root("s")));
  EXPECT_FALSE(lexists(in_root("dev_whited")));
  EXPECT_FALSE(lexists(in_root("a/.wh.f")));
  EXPECT_EQ(stats_.whiteouts, 6u);
}

TEST_F(LayerFlattenTest, OpaqueDirKeepsThisLayersContent) {
  ASSERT_TRUE(apply(layer("l1", {D("d"), F("d/old1", "o"), F("d/sub/old2", "o"), D("d/keep"),
                                 F("d/keep/lower", "o"), F("other", "o")})));
  ASSERT_TRUE(
      apply(layer("l2", {F("d/new_before", "n"), D("d/keep"), F("d/keep/upper", "n"),
                         F("d/fresh/f", "n"), F("d/.wh..wh..opq", ""), F("d/new_after", "n")})));
  EXPECT_EQ(names_in(in_root("d")),
            (std::vector<std::string>{"fresh", "keep", "new_after", "new_before"}));
  EXPECT_EQ(names_in(in_root("d/keep")), std::vector<std::string>{"upper"});
  EXPECT_TRUE(lexists(in_root("d/fresh/f")));
  EXPECT_TRUE(lexists(in_root("other")));
}

TEST_F(LayerFlattenTest, ReplacesAcrossTypes) {
  ASSERT_TRUE(apply(layer("l1", {F("x/inner", "i"), F("y", "file"), L("etc", "/")})));
  ASSERT_TRUE(apply(layer(
      "l2", {F("x", "now a file"), D("y"), F("y/z", "z"), D("etc"), F("etc/passwd", "root")})));
  EXPECT_EQ(slurp(in_root("x")), "now a file");
  EXPECT_TRUE(fs::is_directory(in_root("y")));
  EXPECT_FALSE(fs::is_symlink(in_root("etc")));
  EXPECT_EQ(slurp(in_root("etc/passwd")), "root");
}

TEST_F(LayerFlattenTest, DotDotRefused) {
  for (const char* p : {"../evil", "a/../../evil", "x/.."}) {
    auto st = apply(layer("l", {F(p, "evil")}));
    ASSERT_FALSE(st) << p;
    EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(st.error().message().find(p), std::string::npos) << st.error().message();
    EXPECT_NE(st.error().message().find(layers_ + "/l"), std::string::npos);
  }
  EXPECT_FALSE(lexists(base_ + "/evil"));
}

TEST_F(LayerFlattenTest, AbsolutePathRefused) {
  std::string target = outside_ + "/x";
  for (const std::string& p : {std::string("/etc/x"), target, std::string(".//etc/x")}) {
    auto st = apply(layer("l", {F(p, "evil")}));
    ASSERT_FALSE(st) << p;
    EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(st.error().message().find("absolute"), std::string::npos);
  }
}

TEST_F(LayerFlattenTest, LongPathRefused) {
  limits_.max_path = 100;
  auto st = apply(layer("l", {F(std::string(150, 'a'), "x")}));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument);
}

TEST_F(LayerFlattenTest, AbsoluteSymlinkCannotLeadOut) {
  // Same layer, then across layers: the link resolves inside the root, where there is no such
  // directory, so the write fails instead of landing in outside_.
  EXPECT_FALSE(apply(layer("l1", {L("etc", outside_), F("etc/passwd", "pwned")})));
  EXPECT_FALSE(apply(layer("l2", {F("etc/passwd", "pwned")})));
  EXPECT_FALSE(apply(layer("l3", {F("etc/.wh..wh..opq", "")})));
  ASSERT_TRUE(apply(layer("l4", {F("etc/.wh.sentinel", "")})));  // nothing there to hide
  EXPECT_FALSE(lexists(outside_ + "/passwd"));
}

TEST_F(LayerFlattenTest, SymlinkToRootResolvesInsideTheRoot) {
  struct stat before, after;
  ASSERT_EQ(::stat("/etc/passwd", &before), 0);
  ASSERT_TRUE(apply(layer("l1", {L("etc", "/")})));
  ASSERT_TRUE(apply(layer("l2", {F("etc/passwd", "pwned")})));
  ASSERT_EQ(::stat("/etc/passwd", &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);
  EXPECT_EQ(before.st_mtim.tv_sec, after.st_mtim.tv_sec);
  EXPECT_EQ(slurp(in_root("passwd")), "pwned");  // "/" is the root, as in the guest
}

TEST_F(LayerFlattenTest, SymlinkedParentsResolveInsideTheRoot) {
  // Merged /usr: later layers may name files through bin -> usr/bin or lib -> /usr/lib.
  ASSERT_TRUE(
      apply(layer("l1", {D("usr/bin"), D("usr/lib"), L("bin", "usr/bin"), L("lib", "/usr/lib")})));
  ASSERT_TRUE(
      apply(layer("l2", {F("bin/tool", "t"), F("lib/libx.so", "x"), F("bin/.wh.none", "")})));
  EXPECT_EQ(slurp(in_root("usr/bin/tool")), "t");
  EXPECT_EQ(slurp(in_root("usr/lib/libx.so")), "x");
  EXPECT_TRUE(fs::is_symlink(in_root("bin")));
}

TEST_F(LayerFlattenTest, RelativeSymlinkUpCannotLeadOut) {
  std::string probe = "forkd-escape-probe-" + std::to_string(::getpid());
  auto st1 = apply(layer("l1", {L("a", "../outside"), F("a/x", "pwned")}));
  EXPECT_FALSE(st1);
  auto st2 = apply(layer("l2", {L("b", "../../../../../../.."), F("b/" + probe, "p")}));
  if (st2) {
    EXPECT_EQ(slurp(in_root(probe)), "p");  // ".." stops at the root
  }
  EXPECT_FALSE(lexists("/" + probe));
  EXPECT_FALSE(lexists("/tmp/" + probe));
  EXPECT_FALSE(lexists(base_ + "/" + probe));
}

TEST_F(LayerFlattenTest, HardLinksLeavingTheTreeRefused) {
  ASSERT_TRUE(apply(layer("l1", {L("s", outside_ + "/sentinel"), L("d", outside_),
                                 L("up", "../outside"), F("real", "r")})));
  for (const std::string& t :
       {std::string("/etc/shadow"), std::string("../outside/sentinel"), outside_ + "/sentinel",
        std::string("s"), std::string("d/sentinel"), std::string("up/sentinel"),
        std::string("missing"), std::string("./")}) {
    auto st = apply(layer("l2", {H("h", t)}));
    ASSERT_FALSE(st) << t;
    EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument) << t;
    EXPECT_NE(st.error().message().find("hard link"), std::string::npos) << st.error().message();
    EXPECT_FALSE(lexists(in_root("h")));
  }
  EXPECT_TRUE(apply(layer("l3", {H("h", "real")})));
}

TEST_F(LayerFlattenTest, DeviceNodesSkippedAndListed) {
  ASSERT_TRUE(apply(layer("l1", {F("dev/null", "lower"), F("dev/keep", "k")})));
  ASSERT_TRUE(apply(layer(
      "l2", {Dev("dev/null", 'c', 1, 3), Dev("dev/sda", 'b', 8, 0), Dev("run/fifo", 'p', 0, 0)})));
  EXPECT_FALSE(lexists(in_root("dev/null")));
  EXPECT_FALSE(lexists(in_root("dev/sda")));
  EXPECT_FALSE(lexists(in_root("run/fifo")));
  EXPECT_TRUE(lexists(in_root("dev/keep")));
  ASSERT_EQ(stats_.skipped.size(), 3u);
  EXPECT_EQ(stats_.skipped_count, 3u);
  EXPECT_NE(stats_.skipped[0].find("dev/null"), std::string::npos);
  EXPECT_NE(stats_.skipped[0].find("character device 1/3"), std::string::npos);
  EXPECT_NE(stats_.skipped[1].find("block device 8/0"), std::string::npos);
  EXPECT_NE(stats_.skipped[2].find("fifo"), std::string::npos);
}

TEST_F(LayerFlattenTest, OwnersComeFromTheTar) {
  if (::geteuid() != 0) GTEST_SKIP() << "chown to other users needs root";
  Ent f = F("owned", "x", 0640);
  f.uid = 1234;
  f.gid = 5678;
  ASSERT_TRUE(apply(layer("l1", {f})));
  struct stat st;
  ASSERT_EQ(::stat(in_root("owned").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
}

TEST_F(LayerFlattenTest, SizeAndEntryLimits) {
  limits_.max_total_bytes = 3000;
  ASSERT_TRUE(apply(layer("l1", {F("a", std::string(2000, 'a'))})));
  auto st = apply(layer("l2", {F("b", std::string(2000, 'b'))}));  // over the image total
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), ErrorCode::kNoSpace);
  EXPECT_NE(st.error().message().find("max_total_bytes"), std::string::npos);

  FlattenStats fresh;
  stats_ = fresh;
  limits_ = FlattenLimits{};
  limits_.max_entries = 3;
  st = apply(layer("l3", {F("1", ""), F("2", ""), F("3", ""), F("4", ""), F("5", "")}));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(st.error().message().find("max_entries"), std::string::npos);
}

TEST_F(LayerFlattenTest, TruncatedGzipIsAnError) {
  std::string path = layer("l1", {F("big", random_bytes(200000, 3))}, Filter::kGzip);
  std::string data = slurp(path);
  spit(path, data.substr(0, data.size() / 2));
  auto st = apply(path);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message().find(path), std::string::npos);
  EXPECT_NE(st.error().message().find("big"), std::string::npos) << st.error().message();
}

TEST_F(LayerFlattenTest, HeaderSizeLongerThanDataIsAnError) {
  std::string path = layer("l1", {F("small", "0123456789")});
  std::string tar = slurp(path);
  ASSERT_GE(tar.size(), 1024u);
  ASSERT_EQ(tar.substr(0, 5), "small");
  // Rewrite the ustar size field (12 octal bytes at 124) to 1 MB and fix the checksum.
  std::snprintf(&tar[124], 12, "%011o", 1u << 20);
  std::memset(&tar[148], ' ', 8);
  unsigned sum = 0;
  for (int i = 0; i < 512; ++i) sum += static_cast<unsigned char>(tar[i]);
  std::snprintf(&tar[148], 8, "%06o", sum);
  spit(path, tar);
  auto st = apply(path);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message().find("small"), std::string::npos) << st.error().message();
}

TEST_F(LayerFlattenTest, GarbageIsAnError) {
  std::string junk = random_bytes(8192, 11);
  junk[0] = 'J';
  spit(layers_ + "/junk", junk);
  EXPECT_FALSE(apply(layers_ + "/junk"));
  spit(layers_ + "/fakegz", "\x1f\x8b" + junk);
  EXPECT_FALSE(apply(layers_ + "/fakegz"));
  spit(layers_ + "/fakezst", "\x28\xb5\x2f\xfd" + junk);
  EXPECT_FALSE(apply(layers_ + "/fakezst"));
  EXPECT_TRUE(names_in(root_).empty());
}

TEST_F(LayerFlattenTest, Utf8NamesSurviveTheCLocale) {
  // Registries' layers carry UTF-8 names in pax records; the daemon reads them in the C locale.
  locale_t utf8 = ::newlocale(LC_ALL_MASK, "C.UTF-8", nullptr);
  if (utf8 == nullptr) GTEST_SKIP() << "no C.UTF-8 locale to write the test layer";
  locale_t old = ::uselocale(utf8);
  std::string path = layer("l1", {F("usr/share/caf\xc3\xa9.txt", "x"), L("lnk", "caf\xc3\xa9")});
  ::uselocale(old);
  ::freelocale(utf8);
  ASSERT_TRUE(apply(path));
  EXPECT_EQ(slurp(in_root("usr/share/caf\xc3\xa9.txt")), "x");
  EXPECT_EQ(fs::read_symlink(in_root("lnk")), "caf\xc3\xa9");
}

}  // namespace
}  // namespace forkd::hub

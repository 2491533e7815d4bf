// Packs of real tag directories (made without a VM), unpacked into fresh stores; and packs that
// lie, cut short or tampered with, which must be refused with nothing left behind.
#include "hub/pack_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <random>

#include "base/files.h"
#include "store/chain.h"
#include "store/tag_write.h"

namespace forkd::hub {
namespace {

using Json = nlohmann::json;
using store::SnapshotMeta;

class PackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::create("forkd-pack-test");
    ASSERT_TRUE(d);
    dir_ = std::make_unique<TempDir>(std::move(*d));
    src_ = std::make_unique<store::SnapshotStore>(dir_->path() + "/src");
    dst_ = std::make_unique<store::SnapshotStore>(dir_->path() + "/dst");
  }
  // 20 MiB of memory, a third of its pages zero: more than one chunk.
  static std::string memory(uint32_t seed) {
    std::mt19937 rng(seed);
    std::string s(20u << 20, '\0');
    for (size_t p = 0; p < s.size(); p += 4096) {
      if (rng() % 3 == 0) continue;
      for (size_t i = p; i < p + 4096; i += 64) s[i] = static_cast<char>(rng());
    }
    return s;
  }
  static SnapshotMeta skeleton(const std::string& tag) {
    SnapshotMeta m;
    m.tag = tag;
    m.image = "minimal";
    m.machine = "microvm";
    m.memory_mib = 256;
    m.files["vmstate"] = {};
    m.files["kernel"] = {};
    return m;
  }
  void base(const std::string& tag, const std::string& mem) {
    auto w = store::TagWrite::begin(*src_, tag, false);
    ASSERT_TRUE(w);
    ASSERT_TRUE(write_file_atomic(w->staging() + "/vmstate", "VMSTATE-" + tag));
    ASSERT_TRUE(write_file_atomic(w->staging() + "/bzImage", std::string(5000, 'k')));
    ASSERT_TRUE(write_file_atomic(w->staging() + "/memory", mem));
    SnapshotMeta m = skeleton(tag);
    m.files["memory"] = {};
    ASSERT_TRUE(w->commit(m));
  }
  // pending: committed without its content hash, as a live branch commits a link.
  void link(const std::string& tag, const std::string& parent, const std::string& mem,
            bool pending = false) {
    auto pm = src_->load(parent);
    ASSERT_TRUE(pm);
    store::MemoryResolver resolver(*src_, dir_->path() + "/assembled");
    auto parent_mem = resolver.resolve(*pm);
    ASSERT_TRUE(parent_mem);
    auto w = store::TagWrite::begin(*src_, tag, false);
    ASSERT_TRUE(w);
    ASSERT_TRUE(write_file_atomic(w->staging() + "/vmstate", "VMSTATE-" + tag));
    ASSERT_TRUE(write_file_atomic(w->staging() + "/bzImage", std::string(5000, 'k')));
    ASSERT_TRUE(write_file_atomic(w->staging() + "/full", mem));
    auto lw = store::write_link(w->staging() + "/full", *parent_mem, w->staging());
    ASSERT_TRUE(lw);
    ::unlink((w->staging() + "/full").c_str());
    // As a branch commits a link: the diff's checksum (XXH3) and the bitmap's as write_link gave
    // them, the other files hashed here.
    SnapshotMeta m = skeleton(tag);
    m.parent_tag = parent;
    m.parent_content_hash = pm->content_hash();
    m.memory_sha256 = pending ? "" : lw->content_sha256;
    m.content_pending = pending;
    m.files["memory_diff"] = lw->diff;
    m.files["memory_pages"] = lw->pages;
    for (const char* role : {"vmstate", "kernel"}) {
      auto f = store::hash_file_entry(w->staging() + "/" + store::snapshot_file_name(role));
      ASSERT_TRUE(f);
      m.files[role] = *f;
    }
    ASSERT_TRUE(w->commit(m, /*hashes_known=*/true));
  }
  std::string pack(const std::string& tag, const std::string& since = "") {
    std::string out = dir_->path() + "/" + tag + (since.empty() ? "" : "-since") + ".fpk";
    auto r = pack_tag(*src_, {tag, since, out, 2, {}});
    EXPECT_TRUE(r) << (r ? "" : r.error().message());
    return out;
  }
  Result<UnpackResult> unpack(const std::string& file, const std::string& new_tag = "") {
    return unpack_file(*dst_, {file, new_tag, 2, {}});
  }
  // Names in the destination's snapshots dir other than tags and lock files: leftovers.
  std::vector<std::string> leftovers() const {
    std::vector<std::string> out;
    for (const auto& n : list_dir_names(dst_->root())) {
      if (n.rfind(".lock-", 0) != 0 && !dst_->exists(n)) out.push_back(n);
    }
    return out;
  }
  std::string write_bytes(const std::string& name, const std::string& bytes) {
    std::string p = dir_->path() + "/" + name;
    EXPECT_TRUE(write_file_atomic(p, bytes));
    return p;
  }
  // The pack at path with its manifest passed through fn (and its checksum made to match).
  std::string rewrite_manifest(const std::string& path, const std::function<void(Json&)>& fn) {
    std::string b = *read_file(path, 1u << 30);
    uint64_t len = 0;
    for (int i = 7; i >= 0; i--) len = (len << 8) | static_cast<unsigned char>(b[16 + i]);
    Json j = Json::parse(b.substr(88, len));
    fn(j);
    std::string text = j.dump();
    std::string out = b.substr(0, 16);
    for (int i = 0; i < 8; i++) out.push_back(static_cast<char>((text.size() >> (8 * i)) & 0xff));
    out += sha256_hex(text) + text + b.substr(88 + len);
    return write_bytes("rewritten.fpk", out);
  }

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<store::SnapshotStore> src_, dst_;
};

TEST_F(PackTest, BaseRoundTripsSparseAndVerified) {
  std::string mem = memory(1);
  base("a", mem);
  std::string file = pack("a");
  auto r = unpack(file);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->tags.created, std::vector<std::string>{"a"});
  auto m = dst_->load("a");
  ASSERT_TRUE(m);
  EXPECT_TRUE(dst_->verify(*m));
  EXPECT_EQ(*read_file(dst_->dir("a") + "/memory", 64u << 20), mem);
  struct stat st;
  ASSERT_EQ(::stat((dst_->dir("a") + "/memory").c_str(), &st), 0);
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, mem.size());  // zero pages are holes
  EXPECT_EQ(m->files.at("memory").sha256, src_->load("a")->files.at("memory").sha256);
  EXPECT_TRUE(leftovers().empty());
}

TEST_F(PackTest, ChainTravelsWholeOrSinceAnAncestor) {
  std::string mem = memory(2);
  base("a", mem);
  std::string mem_b = mem;
  mem_b[4096 * 10] ^= 1;
  link("b", "a", mem_b);
  std::string mem_c = mem_b;
  mem_c[4096 * 900] ^= 1;
  link("c", "b", mem_c);
  // Without the ancestors here, a --since pack is refused.
  std::string since = pack("c", "b");
  auto no = unpack(since);
  ASSERT_FALSE(no);
  EXPECT_NE(no.error().message().find("lacks"), std::string::npos) << no.error().message();
  EXPECT_TRUE(leftovers().empty());

  auto whole = unpack(pack("b"));
  ASSERT_TRUE(whole) << whole.error().message();
  EXPECT_EQ(whole->tags.created, (std::vector<std::string>{"a", "b"}));
  auto r = unpack(since);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->tags.created, std::vector<std::string>{"c"});
  // The link's memory assembles to the same bytes on this side.
  store::MemoryResolver resolver(*dst_, dir_->path() + "/dst-assembled");
  auto cm = dst_->load("c");
  ASSERT_TRUE(cm);
  auto full = resolver.resolve(*cm);
  ASSERT_TRUE(full) << full.error().message();
  EXPECT_EQ(*read_file(*full, 64u << 20), mem_c);
  // Its diff kept its XXH3 checksum, checked on this side too.
  EXPECT_EQ(cm->files.at("memory_diff").xxh3, src_->load("c")->files.at("memory_diff").xxh3);
  EXPECT_EQ(cm->files.at("memory_diff").xxh3.size(), 32u);
  EXPECT_TRUE(dst_->verify(*cm));
  // The kernel, equal in every link, travelled once: the since-pack is far smaller than a base.
  auto pm = read_pack_manifest(since);
  ASSERT_TRUE(pm);
  EXPECT_EQ(pm->tags.back().refs.count("kernel"), 1u);
}

TEST_F(PackTest, WholeChainAgainIntoAHostThatHasItsRoot) {
  base("a", memory(3));
  link("b", "a", memory(3).replace(0, 1, "x"));
  ASSERT_TRUE(unpack(pack("a")));
  auto r = unpack(pack("b"));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->tags.present, std::vector<std::string>{"a"});
  EXPECT_EQ(r->tags.created, std::vector<std::string>{"b"});
}

TEST_F(PackTest, AFileThisHostHasIsLinkedNotWritten) {
  std::string mem = memory(8);
  base("a", mem);
  base("z", mem);  // another tag, same memory bytes
  ASSERT_TRUE(unpack(pack("a")));
  auto r = unpack(pack("z"));
  ASSERT_TRUE(r) << r.error().message();
  struct stat sa, sz;
  ASSERT_EQ(::stat((dst_->dir("a") + "/memory").c_str(), &sa), 0);
  ASSERT_EQ(::stat((dst_->dir("z") + "/memory").c_str(), &sz), 0);
  EXPECT_EQ(sa.st_ino, sz.st_ino);
  EXPECT_TRUE(dst_->verify(*dst_->load("z")));
}

TEST_F(PackTest, WithoutImageNeedsTheImagesFilesHere) {
  base("a", memory(9));
  base("z", memory(10));  // the same kernel as a
  std::string out = dir_->path() + "/z-noimg.fpk";
  PackOptions po{"z", "", out, 2, {}, true};
  auto p = pack_tag(*src_, po);
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_TRUE(p->manifest.tags[0].refs.at("kernel").external());
  auto lacking = unpack(out);
  ASSERT_FALSE(lacking);
  EXPECT_EQ(lacking.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(lacking.error().message().find("without-image"), std::string::npos);
  EXPECT_TRUE(leftovers().empty());
  ASSERT_TRUE(unpack(pack("a")));  // now a tag here holds that kernel
  auto r = unpack(out);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(dst_->verify(*dst_->load("z")));
}

TEST_F(PackTest, NewNameAndClashes) {
  base("a", memory(4));
  std::string file = pack("a");
  ASSERT_TRUE(unpack(file));
  auto again = unpack(file);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_NE(again.error().message().find("--tag"), std::string::npos);
  ASSERT_TRUE(unpack(file, "a2"));
  EXPECT_TRUE(dst_->exists("a2"));
  EXPECT_FALSE(unpack(file, "../evil"));
  EXPECT_TRUE(leftovers().empty());
}

TEST_F(PackTest, EveryTruncationIsRefusedAndLeavesNothing) {
  base("a", memory(5));
  std::string bytes = *read_file(pack("a"), 1u << 30);
  std::mt19937 rng(9);
  std::vector<size_t> cuts = {0, 10, 87, 88, 200, bytes.size() - 1};
  for (int i = 0; i < 12; i++) cuts.push_back(rng() % bytes.size());
  for (size_t cut : cuts) {
    auto r = unpack(write_bytes("cut.fpk", bytes.substr(0, cut)));
    ASSERT_FALSE(r) << cut;
    EXPECT_FALSE(dst_->exists("a"));
    EXPECT_TRUE(leftovers().empty()) << cut;
  }
  auto extra = unpack(write_bytes("extra.fpk", bytes + "junk"));
  ASSERT_FALSE(extra);
  EXPECT_FALSE(dst_->exists("a"));
}

TEST_F(PackTest, TamperedBytesAreCaught) {
  base("a", memory(6));
  std::string bytes = *read_file(pack("a"), 1u << 30);
  std::string flipped = bytes;
  flipped[bytes.size() / 2] ^= 0x20;  // inside a memory blob
  auto r = unpack(write_bytes("flip.fpk", flipped));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kChecksumMismatch);
  std::string manifest_flip = bytes;
  manifest_flip[100] ^= 0x01;
  EXPECT_FALSE(unpack(write_bytes("mflip.fpk", manifest_flip)));
  EXPECT_FALSE(unpack(write_bytes("garbage.fpk", std::string(4096, 'g'))));
  EXPECT_TRUE(leftovers().empty());
}

// A link's diff travels with its XXH3 checksum, which the receiver checks against the bytes it
// assembled (each chunk's SHA-256 only says the chunk is what the sender sent).
TEST_F(PackTest, ALinksDiffIsCheckedByItsXxh3) {
  std::string mem = memory(9);
  base("a", mem);
  mem[4096 * 33] ^= 1;
  link("b", "a", mem);
  std::string file = rewrite_manifest(pack("b"), [](Json& j) {
    std::string& x = j["tags"][1]["meta"]["files"]["memory_diff"]["xxh3"].get_ref<std::string&>();
    x.back() = x.back() == '0' ? '1' : '0';
  });
  auto r = unpack(file);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kChecksumMismatch);
  EXPECT_NE(r.error().message().find("memory_diff does not match its checksum"), std::string::npos)
      << r.error().message();
  EXPECT_TRUE(leftovers().empty());
}

// A link whose content hash is pending is assembled (and so hashed) before it is packed: the
// pack carries the hash, and this host's record holds it too. A pack that leaves it out is
// refused.
TEST_F(PackTest, APendingLinkIsSettledBeforeItTravels) {
  std::string mem = memory(5);
  base("a", mem);
  mem[4096 * 12] ^= 1;
  link("b", "a", mem, /*pending=*/true);
  ASSERT_TRUE(src_->load("b")->content_pending);
  std::string file = pack("b");
  auto here = src_->load("b");
  ASSERT_TRUE(here);
  EXPECT_FALSE(here->content_pending);
  EXPECT_EQ(here->content_hash(), sha256_hex(mem));
  auto r = unpack(file);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(dst_->load("b")->content_hash(), sha256_hex(mem));

  std::string pending = rewrite_manifest(file, [](Json& j) {
    j["tags"][1]["meta"]["content_pending"] = true;
    j["tags"][1]["meta"]["memory_sha256"] = "";
  });
  ASSERT_TRUE(dst_->remove("b"));
  auto refused = unpack(pending);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("without its content hash"), std::string::npos)
      << refused.error().message();
  EXPECT_FALSE(dst_->exists("b"));
  EXPECT_TRUE(leftovers().empty());
}

TEST_F(PackTest, ManifestsThatLieAreRefused) {
  base("a", memory(7));
  link("b", "a", memory(7).replace(5, 1, "y"));
  std::string file = pack("b");
  auto refused = [&](const std::function<void(Json&)>& fn, const std::string& why) {
    auto r = unpack(rewrite_manifest(file, fn));
    EXPECT_FALSE(r) << why;
    if (!r) {
      EXPECT_FALSE(r.error().message().empty());
    }
    EXPECT_FALSE(dst_->exists("a")) << why;
    EXPECT_FALSE(dst_->exists("b")) << why;
    EXPECT_TRUE(leftovers().empty()) << why;
  };
  refused([](Json& j) { j["format"] = 99; }, "newer format");
  refused([](Json& j) { j["tags"][0]["meta"]["files"]["memory"]["size"] = 1u << 20; }, "size lies");
  refused([](Json& j) { j["tags"][0]["meta"]["files"]["memory"]["sha256"] = std::string(64, 'a'); },
          "hash lies");
  refused(
      [](Json& j) {
        j["tags"][0]["meta"]["files"]["../../x"] = {{"size", 1}, {"sha256", std::string(64, 'a')}};
      },
      "a path as a role");
  refused([](Json& j) { j["tags"][0]["meta"]["tag"] = "../../etc"; }, "a path as a tag");
  refused([](Json& j) { std::swap(j["tags"][0], j["tags"][1]); }, "link before its parent");
  refused([](Json& j) { j["tags"][1]["meta"]["parent_tag"] = "b"; },
          "a link that is its own parent");
  refused(
      [](Json& j) {
        j["tags"][1]["refs"]["vmstate"] = {{"tag", "nowhere"}, {"role", "vmstate"}};
      },
      "a reference to an unknown tag");
  refused(
      [](Json& j) {
        j["tags"][1]["refs"]["memory_pages"] = {{"tag", "a"}, {"role", "vmstate"}};
      },
      "a reference to a different file");
  refused([](Json& j) { j["tags"] = Json::array(); }, "no tags");
  std::string header_newer = *read_file(file, 1u << 30);
  header_newer[8] = 2;
  auto h = unpack(write_bytes("newer.fpk", header_newer));
  ASSERT_FALSE(h);
  EXPECT_NE(h.error().message().find("newer"), std::string::npos) << h.error().message();
  auto newer = rewrite_manifest(file, [](Json& j) { j["format"] = 99; });
  auto r = unpack(newer);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("newer"), std::string::npos) << r.error().message();
}

}  // namespace
}  // namespace forkd::hub

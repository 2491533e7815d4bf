#include "vmm/probe_cache.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <optional>

#include "base/files.h"
#include "base/scoped_env.h"

namespace forkd::vmm {
namespace {

class ProbeCache : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::create("probe-cache-test");
    ASSERT_TRUE(d);
    dir_.emplace(std::move(*d));
    bin_ = path() + "/qemu";
    lean_ = path() + "/lean";
    file_ = path() + "/qemu-probe.json";
    ASSERT_TRUE(write_file_atomic(bin_, "#!/bin/sh\necho 'QEMU emulator version 10.0.2'\n", 0755));
    ASSERT_EQ(::mkdir(lean_.c_str(), 0755), 0);
    ASSERT_TRUE(write_file_atomic(lean_ + "/libpmem.so.1", "stub", 0755));
  }
  static QemuProbe probe() {
    QemuProbe p;
    p.lean.dir = "/some/lean";
    p.lean.version = "10.0.2";
    p.lean.pmem_stub = true;
    p.lean.unused_reason = "why not";
    p.qemu_version = "10.0.2";
    return p;
  }
  const std::string& path() const { return dir_->path(); }
  std::optional<TempDir> dir_;
  std::string bin_, lean_, file_;
};

TEST_F(ProbeCache, AnswerComesBackForTheSameFilesOnly) {
  const std::string key = qemu_probe_key(bin_, lean_);
  ASSERT_FALSE(key.empty());
  EXPECT_EQ(qemu_probe_key(bin_, lean_), key) << "stable";
  EXPECT_FALSE(load_qemu_probe(file_, key)) << "nothing stored yet";
  store_qemu_probe(file_, key, probe());
  struct stat st {};
  ASSERT_EQ(::stat(file_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto got = load_qemu_probe(file_, key);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->lean.dir, "/some/lean");
  EXPECT_EQ(got->lean.version, "10.0.2");
  EXPECT_TRUE(got->lean.pmem_stub);
  EXPECT_FALSE(got->lean.unused_stubs);
  EXPECT_EQ(got->lean.unused_reason, "why not");
  EXPECT_EQ(got->qemu_version, "10.0.2");

  // A QEMU reinstalled in place (a new file renamed over it, as dpkg does) has another key.
  ASSERT_TRUE(write_file_atomic(bin_, "#!/bin/sh\necho 'QEMU emulator version 10.0.3'\n", 0755));
  const std::string after_qemu = qemu_probe_key(bin_, lean_);
  EXPECT_NE(after_qemu, key);
  EXPECT_FALSE(load_qemu_probe(file_, after_qemu));
  // So does a rebuilt or added stub.
  ASSERT_TRUE(write_file_atomic(lean_ + "/libcapstone.so.4", "stub", 0755));
  EXPECT_NE(qemu_probe_key(bin_, lean_), after_qemu);
  // Or one in the second set's directory.
  const std::string before_unused = qemu_probe_key(bin_, lean_);
  ASSERT_EQ(::mkdir((lean_ + "/unused").c_str(), 0755), 0);
  ASSERT_TRUE(write_file_atomic(lean_ + "/unused/libgnutls.so.30", "stub", 0755));
  const std::string with_unused = qemu_probe_key(bin_, lean_);
  EXPECT_NE(with_unused, before_unused);
  ASSERT_TRUE(write_file_atomic(lean_ + "/unused/libgnutls.so.30", "stub 2", 0755));
  EXPECT_NE(qemu_probe_key(bin_, lean_), with_unused);
  // And the modes of the directories above the stubs (the probe checks them).
  const std::string before_mode = qemu_probe_key(bin_, lean_);
  ASSERT_EQ(::chmod(path().c_str(), 0775), 0);
  EXPECT_NE(qemu_probe_key(bin_, lean_), before_mode);
  ASSERT_EQ(::chmod(path().c_str(), 0700), 0);
  EXPECT_EQ(qemu_probe_key(bin_, lean_), before_mode) << "the mode back, the key back";
  // A file added beside the stubs' directory changes nothing the probe looks at.
  ASSERT_TRUE(write_file_atomic(path() + "/unrelated", "x", 0600));
  EXPECT_EQ(qemu_probe_key(bin_, lean_), before_mode);
  // And the loader's environment.
  const std::string before_env = qemu_probe_key(bin_, lean_);
  ScopedEnv preload("LD_PRELOAD", "/nowhere.so");
  ASSERT_STREQ(std::getenv("LD_PRELOAD"), "/nowhere.so");
  EXPECT_NE(qemu_probe_key(bin_, lean_), before_env);
}

TEST_F(ProbeCache, NothingIsKeptForAMissingQemuOrAFailedProbe) {
  EXPECT_EQ(qemu_probe_key(path() + "/no-such-qemu", lean_), "");
  EXPECT_EQ(qemu_probe_key("no-such-qemu-anywhere-on-path", lean_), "");
  const std::string key = qemu_probe_key(bin_, lean_);
  QemuProbe failed = probe();
  failed.qemu_version.clear();
  store_qemu_probe(file_, key, failed);
  EXPECT_NE(::access(file_.c_str(), F_OK), 0) << "a QEMU that did not run is probed again";
}

TEST_F(ProbeCache, DamagedOrForeignFilesAreIgnored) {
  const std::string key = qemu_probe_key(bin_, lean_);
  for (const char* text :
       {"", "not json", "[]", "{\"key\": 1}",
        "{\"key\": \"other\", \"lean_dir\": \"\", \"lean_reason\": \"\","
        " \"lean_version\": \"\", \"pmem_stub\": false, \"qemu_version\": \"9\"}"}) {
    ASSERT_TRUE(write_file_atomic(file_, text, 0600));
    EXPECT_FALSE(load_qemu_probe(file_, key)) << text;
  }
  store_qemu_probe(file_, key, probe());
  auto text = read_file(file_);
  ASSERT_TRUE(text);
  // The same record with one field of the wrong type.
  std::string bad = *text;
  auto at = bad.find("\"pmem_stub\": true");
  ASSERT_NE(at, std::string::npos) << bad;
  bad.replace(at, 17, "\"pmem_stub\": \"yes\"");
  ASSERT_TRUE(write_file_atomic(file_, bad, 0600));
  EXPECT_FALSE(load_qemu_probe(file_, key));
}

}  // namespace
}  // namespace forkd::vmm

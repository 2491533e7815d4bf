#include "file_ops.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "proto/frame.h"

namespace forkd::agent {
namespace {

class FileOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/agent-file-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    (void)remove_op(req("remove", {{"path", dir_}, {"recursive", true}}));
  }

  static Request req(const char* op, Json args, std::string body = {}) {
    Request r;
    r.id = 1;
    r.op = op;
    r.args = std::move(args);
    r.body = std::move(body);
    return r;
  }
  std::string dir_;
};

TEST_F(FileOpsTest, WriteReadBinary) {
  std::string p = dir_ + "/f";
  std::string data("a\0b\xff", 4);
  auto w = file_write_op(req("file_write", {{"path", p}, {"truncate", true}}, data));
  ASSERT_TRUE(w) << w.error().message;
  EXPECT_EQ(w->result["size"], 4);
  auto w2 = file_write_op(req("file_write", {{"path", p}, {"offset", 4}}, "xyz"));
  ASSERT_TRUE(w2);
  EXPECT_EQ(w2->result["size"], 7);
  auto r = file_read_op(req("file_read", {{"path", p}, {"offset", 2}, {"length", 3}}));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, std::string("b\xffx", 3));
  EXPECT_EQ(r->result["size"], 7);
  EXPECT_EQ(r->result["eof"], false);
  auto tail = file_read_op(req("file_read", {{"path", p}, {"offset", 5}}));
  ASSERT_TRUE(tail);
  EXPECT_EQ(tail->body, "yz");
  EXPECT_EQ(tail->result["eof"], true);
}

TEST_F(FileOpsTest, ReadIsCappedAtOneChunk) {
  std::string p = dir_ + "/big";
  std::string data(proto::kChunkLen + 10, 'x');
  ASSERT_TRUE(file_write_op(req("file_write", {{"path", p}}, data)));
  auto r = file_read_op(req("file_read", {{"path", p}, {"length", 10u << 20}}));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body.size(), proto::kChunkLen);
  EXPECT_EQ(r->result["eof"], false);
}

TEST_F(FileOpsTest, ModeAndStat) {
  std::string p = dir_ + "/m";
  ASSERT_TRUE(file_write_op(req("file_write", {{"path", p}, {"mode", 0600}}, "1")));
  auto s = file_stat_op(req("file_stat", {{"path", p}}));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->result["type"], "file");
  EXPECT_EQ(s->result["mode"], 0600);
  EXPECT_EQ(s->result["size"], 1);
  EXPECT_GT(s->result["mtime"].get<int64_t>(), 0);
  auto missing = file_stat_op(req("file_stat", {{"path", dir_ + "/nope"}}));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, "not_found");
  EXPECT_FALSE(file_write_op(req("file_write", {{"path", p}, {"mode", 077777}}, "")));
}

TEST_F(FileOpsTest, MkdirListRemove) {
  ASSERT_TRUE(mkdir_op(req("mkdir", {{"path", dir_ + "/a/b/c"}, {"parents", true}})));
  ASSERT_TRUE(mkdir_op(req("mkdir", {{"path", dir_ + "/a/b/c"}, {"parents", true}})));
  auto again = mkdir_op(req("mkdir", {{"path", dir_ + "/a"}}));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, "io_error");
  EXPECT_EQ(mkdir_op(req("mkdir", {{"path", dir_ + "/x/y"}})).error().code, "not_found");
  ASSERT_TRUE(file_write_op(req("file_write", {{"path", dir_ + "/a/f"}}, "hello")));
  ASSERT_EQ(::symlink("f", (dir_ + "/a/l").c_str()), 0);
  auto l = file_list_op(req("file_list", {{"path", dir_ + "/a"}}));
  ASSERT_TRUE(l);
  const Json& e = l->result["entries"];
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(e[0]["name"], "b");
  EXPECT_EQ(e[0]["type"], "dir");
  EXPECT_EQ(e[1]["name"], "f");
  EXPECT_EQ(e[1]["size"], 5);
  EXPECT_EQ(e[2]["type"], "symlink");
  auto nonrec = remove_op(req("remove", {{"path", dir_ + "/a"}}));
  ASSERT_FALSE(nonrec);
  EXPECT_EQ(nonrec.error().code, "io_error");
  ASSERT_TRUE(remove_op(req("remove", {{"path", dir_ + "/a/f"}})));
  ASSERT_TRUE(remove_op(req("remove", {{"path", dir_ + "/a"}, {"recursive", true}})));
  EXPECT_EQ(file_stat_op(req("file_stat", {{"path", dir_ + "/a"}})).error().code, "not_found");
  EXPECT_EQ(remove_op(req("remove", {{"path", dir_ + "/a"}})).error().code, "not_found");
  EXPECT_EQ(remove_op(req("remove", {{"path", "/"}, {"recursive", true}})).error().code,
            "bad_request");
}

TEST_F(FileOpsTest, BadArgs) {
  EXPECT_EQ(file_read_op(req("file_read", {{"path", 1}})).error().code, "bad_request");
  EXPECT_EQ(file_read_op(req("file_read", {{"path", dir_}, {"offset", -1}})).error().code,
            "bad_request");
  EXPECT_EQ(file_write_op(req("file_write", {})).error().code, "bad_request");
  EXPECT_EQ(file_list_op(req("file_list", {{"path", dir_ + "/none"}})).error().code, "not_found");
  EXPECT_EQ(file_read_op(req("file_read", {{"path", dir_}})).error().code, "io_error");
}

}  // namespace
}  // namespace forkd::agent

#pragma once
// File helpers. Every write that must survive a crash goes through write_file_atomic: stage in the
// same directory, fsync, rename over the target, fsync the directory.
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX

namespace forkd {

// New files are the owner's alone unless a mode says otherwise ($FORKD_HOME holds guest memory).
Result<UniqueFd> open_file(const std::string& path, int flags, mode_t mode = 0600);

// Reads a whole file, refusing files larger than max_bytes.
Result<std::string> read_file(const std::string& path, size_t max_bytes = 64u << 20);

// Writes all of data to fd, retrying short writes and EINTR.
Status write_all(int fd, std::string_view data);

// Atomically replaces path with data (stage, fsync, rename, fsync dir).
Status write_file_atomic(const std::string& path, std::string_view data, mode_t mode = 0600);
// The same without the fsyncs: readers see the old or the new content, never part of it, but a
// crash may leave the old. For records that only report progress.
Status replace_file(const std::string& path, std::string_view data, mode_t mode = 0600);

// Writes value to a kernel control file (cgroupfs, sysfs) in one write(), as those files take
// a setting. Truncates and, when missing, creates a plain file (a fake tree in tests).
Status write_control_file(const std::string& path, std::string_view value);

// Renames staged to final and fsyncs the parent directory.
Status rename_durable(const std::string& staged, const std::string& final_path);

// mkdir -p: every directory it creates gets mode (as masked by the umask); existing ones are
// left alone. The default lets the directory's group traverse: under $FORKD_HOME that group is
// the QEMU jail's (engine/config.h), and the home itself admits nobody else.
Status make_dirs(const std::string& path, mode_t mode = 0710);

// rm -rf; a missing path is not an error. Refuses "", "/" and relative paths.
Status remove_tree(const std::string& path);

bool path_exists(const std::string& path);

// Creates path at its final size with its blocks allocated up front (posix_fallocate): on ext4,
// delayed allocation otherwise makes a snapshot's pause grow while the guest dirties pages.
// Where the filesystem cannot (tmpfs), logs once and only sets the size.
Status preallocate_file(const std::string& path, uint64_t bytes);

// Names in a directory (without "." and ".."), sorted; empty when it cannot be read.
std::vector<std::string> list_dir_names(const std::string& dir);

// Removes the entries of a cache directory whose names keep lacks; one whose name holds
// staging_marker is left until it is a minute old (its writer may be at it still). Returns the
// names removed.
std::vector<std::string> remove_files_except(const std::string& dir,
                                             const std::set<std::string>& keep,
                                             std::string_view staging_marker);

// The identity of one version of a file (device, inode, size, mtime, ctime): a rewrite,
// truncation or chmod changes it. Empty when the file is missing.
std::string file_identity(const std::string& path);

// Reads a whole file in pieces of up to 1 MiB, handing each to feed.
Status read_chunks(const std::string& path, const std::function<void(const char*, size_t)>& feed);

// Lowercase hex of len bytes.
std::string to_hex(const unsigned char* bytes, size_t len);
// Whether s is exactly n lowercase hex digits (as to_hex writes them).
bool is_lower_hex(std::string_view s, size_t n);

// Lowercase hex SHA-256 of a file's contents, or of a string.
Result<std::string> sha256_file(const std::string& path);
std::string sha256_hex(std::string_view data);

// Incremental SHA-256.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t n);
  std::string hex();  // finishes the digest; call once

 private:
  struct ::evp_md_ctx_st* ctx_;
};

// fsync(2) of a file by path.
Status fsync_path(const std::string& path);

// Pages of the file at path in the page cache now (mincore over a read-only mapping of it); 0
// for an empty or unreadable file.
size_t page_cache_pages(const std::string& path);

// Removes a directory tree on destruction unless release()d: the staging directory of a write
// that must leave nothing behind when it fails.
class TreeGuard {
 public:
  explicit TreeGuard(std::string path) : path_(std::move(path)) {}
  TreeGuard(const TreeGuard&) = delete;
  TreeGuard& operator=(const TreeGuard&) = delete;
  ~TreeGuard();
  void release() { path_.clear(); }

 private:
  std::string path_;
};

// A fresh directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  static Result<TempDir> create(std::string_view prefix);
  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&&) = delete;
  TempDir(const TempDir&) = delete;
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace forkd

#include "base/files.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <memory>

namespace forkd {

Result<UniqueFd> open_file(const std::string& path, int flags, mode_t mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) return errno_error(errno, "open " + path);
  return UniqueFd(fd);
}

Result<std::string> read_file(const std::string& path, size_t max_bytes) {
  auto fd = open_file(path, O_RDONLY);
  if (!fd) return tl::unexpected(fd.error());
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd->get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(errno, "read " + path);
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      return make_error(ErrorCode::kInvalidArgument,
                        "read " + path + ": file larger than " + std::to_string(max_bytes));
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Status write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(errno, "write");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

static Status fsync_dir_of(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  auto fd = open_file(dir, O_RDONLY | O_DIRECTORY);
  if (!fd) return tl::unexpected(fd.error());
  if (::fsync(fd->get()) != 0) return errno_error(errno, "fsync " + dir);
  return {};
}

Status rename_durable(const std::string& staged, const std::string& final_path) {
  if (::rename(staged.c_str(), final_path.c_str()) != 0) {
    return errno_error(errno, "rename " + staged + " -> " + final_path);
  }
  return fsync_dir_of(final_path);
}

Status write_file_atomic(const std::string& path, std::string_view data, mode_t mode) {
  std::string staged = path + ".staging." + std::to_string(::getpid());
  auto fd = open_file(staged, O_WRONLY | O_CREAT | O_TRUNC, mode);
  if (!fd) return tl::unexpected(fd.error().wrap("stage " + path));
  auto st = write_all(fd->get(), data);
  if (st && ::fsync(fd->get()) != 0) st = errno_error(errno, "fsync " + staged);
  if (!st) {
    ::unlink(staged.c_str());
    return tl::unexpected(st.error().wrap("write " + path));
  }
  fd->reset();
  auto renamed = rename_durable(staged, path);
  if (!renamed) ::unlink(staged.c_str());
  return renamed;
}

Status make_dirs(const std::string& path, mode_t mode) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return errno_error(ec.value(), "mkdir " + path);
  (void)mode;
  return {};
}

Status remove_tree(const std::string& path) {
  if (path.empty() || path == "/" || path[0] != '/') {
    return make_error(ErrorCode::kInternal, "refusing to remove '" + path + "'");
  }
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) return errno_error(ec.value(), "remove " + path);
  return {};
}

bool path_exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

namespace {
struct MdCtxFree {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;

std::string to_hex(const unsigned char* digest, unsigned len) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (unsigned i = 0; i < len; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 15]);
  }
  return out;
}
}  // namespace

std::string sha256_hex(std::string_view data) {
  MdCtx ctx(EVP_MD_CTX_new());
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  EVP_DigestUpdate(ctx.get(), data.data(), data.size());
  EVP_DigestFinal_ex(ctx.get(), digest, &len);
  return to_hex(digest, len);
}

Result<std::string> sha256_file(const std::string& path) {
  auto fd = open_file(path, O_RDONLY);
  if (!fd) return tl::unexpected(fd.error());
  MdCtx ctx(EVP_MD_CTX_new());
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  std::unique_ptr<char[]> buf(new char[1 << 20]);
  for (;;) {
    ssize_t n = ::read(fd->get(), buf.get(), 1 << 20);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(errno, "read " + path);
    }
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buf.get(), static_cast<size_t>(n));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &len);
  return to_hex(digest, len);
}

Result<TempDir> TempDir::create(std::string_view prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl =
      std::string(tmp && *tmp ? tmp : "/tmp") + "/" + std::string(prefix) + ".XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return errno_error(errno, "mkdtemp " + tmpl);
  return TempDir(tmpl);
}

TempDir::TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }

TempDir::~TempDir() {
  if (!path_.empty()) (void)remove_tree(path_);
}

}  // namespace forkd

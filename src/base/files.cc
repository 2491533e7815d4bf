#include "base/files.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <memory>

#include "base/log.h"
#include "base/random.h"

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

namespace {
Status write_staged(const std::string& path, std::string_view data, mode_t mode, bool durable) {
  // Unique per call: two threads of one process may replace the same file at once.
  std::string staged = path + ".staging." + std::to_string(::getpid()) + "." + random_hex(4);
  auto fd = open_file(staged, O_WRONLY | O_CREAT | O_TRUNC, mode);
  if (!fd) return tl::unexpected(fd.error().wrap("stage " + path));
  auto st = write_all(fd->get(), data);
  if (st && durable && ::fsync(fd->get()) != 0) st = errno_error(errno, "fsync " + staged);
  if (!st) {
    ::unlink(staged.c_str());
    return tl::unexpected(st.error().wrap("write " + path));
  }
  fd->reset();
  Status renamed = durable ? rename_durable(staged, path)
                   : ::rename(staged.c_str(), path.c_str()) == 0
                       ? Status{}
                       : errno_error(errno, "rename " + staged);
  if (!renamed) ::unlink(staged.c_str());
  return renamed;
}
}  // namespace

Status write_file_atomic(const std::string& path, std::string_view data, mode_t mode) {
  return write_staged(path, data, mode, /*durable=*/true);
}

Status replace_file(const std::string& path, std::string_view data, mode_t mode) {
  return write_staged(path, data, mode, /*durable=*/false);
}

Status write_control_file(const std::string& path, std::string_view value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_TRUNC | O_CREAT, 0644));
  if (!fd) return errno_error(errno, "open " + path);
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
    return errno_error(errno, "write '" + std::string(value) + "' to " + path);
  }
  return {};
}

Status make_dirs(const std::string& path, mode_t mode) {
  if (path.empty()) return make_error(ErrorCode::kInvalidArgument, "mkdir: empty path");
  // Parents first, each created with mode; EEXIST (also from a concurrent mkdir) is fine as long
  // as a directory is there.
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i != path.size() && path[i] != '/') continue;
    std::string prefix = path.substr(0, i);
    if (::mkdir(prefix.c_str(), mode) == 0) continue;
    int err = errno;
    struct stat st;
    if (err == EEXIST && ::stat(prefix.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) continue;
    return errno_error(err == EEXIST ? ENOTDIR : err, "mkdir " + prefix);
  }
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

std::string file_identity(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return "";
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" +
         std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec) + ":" + std::to_string(st.st_ctim.tv_sec) + "." +
         std::to_string(st.st_ctim.tv_nsec);
}

// Creates the memory file at its final size with its blocks allocated up front: on ext4,
// delayed allocation otherwise makes the pause grow while the guest dirties pages.
Status preallocate_file(const std::string& path, uint64_t bytes) {
  auto fd = open_file(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (!fd) return tl::unexpected(fd.error());
  int rc = ::posix_fallocate(fd->get(), 0, static_cast<off_t>(bytes));
  if (rc == EOPNOTSUPP || rc == EINVAL) {
    static bool logged = false;
    if (!logged) {
      logged = true;
      logger("files")->info("event=fallocate_unsupported path={}", path);
    }
    if (::ftruncate(fd->get(), static_cast<off_t>(bytes)) != 0) {
      return errno_error(errno, "truncate " + path);
    }
  } else if (rc != 0) {
    return errno_error(rc, "preallocate " + path);
  }
  return {};
}

std::vector<std::string> list_dir_names(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") out.push_back(std::move(name));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> remove_files_except(const std::string& dir,
                                             const std::set<std::string>& keep,
                                             std::string_view staging_marker) {
  std::vector<std::string> removed;
  const time_t now = std::time(nullptr);
  for (const auto& name : list_dir_names(dir)) {
    if (keep.count(name)) continue;
    std::string path = dir + "/" + name;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) continue;
    if (name.find(staging_marker) != std::string::npos && now - st.st_mtime < 60) continue;
    if (::unlink(path.c_str()) == 0) removed.push_back(name);
  }
  return removed;
}

bool path_exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

std::string to_hex(const unsigned char* digest, size_t len) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (size_t i = 0; i < len; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 15]);
  }
  return out;
}

bool is_lower_hex(std::string_view s, size_t n) {
  return s.size() == n && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }
void Sha256::update(const void* data, size_t n) { EVP_DigestUpdate(ctx_, data, n); }
std::string Sha256::hex() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  EVP_DigestFinal_ex(ctx_, digest, &len);
  return to_hex(digest, len);
}

std::string sha256_hex(std::string_view data) {
  Sha256 h;
  h.update(data.data(), data.size());
  return h.hex();
}

Status read_chunks(const std::string& path, const std::function<void(const char*, size_t)>& feed) {
  auto fd = open_file(path, O_RDONLY);
  if (!fd) return tl::unexpected(fd.error());
  std::unique_ptr<char[]> buf(new char[1 << 20]);
  for (;;) {
    ssize_t n = ::read(fd->get(), buf.get(), 1 << 20);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(errno, "read " + path);
    }
    if (n == 0) return {};
    feed(buf.get(), static_cast<size_t>(n));
  }
}

Result<std::string> sha256_file(const std::string& path) {
  Sha256 h;
  FORKD_TRY(read_chunks(path, [&](const char* d, size_t n) { h.update(d, n); }));
  return h.hex();
}

Status fsync_path(const std::string& path) {
  auto fd = open_file(path, O_RDONLY);
  if (!fd) return tl::unexpected(fd.error());
  if (::fsync(fd->get()) != 0) return errno_error(errno, "fsync " + path);
  return {};
}

TreeGuard::~TreeGuard() {
  if (!path_.empty()) (void)remove_tree(path_);
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

size_t page_cache_pages(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0 || st.st_size <= 0) return 0;
  const size_t len = static_cast<size_t>(st.st_size);
  void* p = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return 0;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> vec((len + page - 1) / page);
  size_t n = 0;
  if (::mincore(p, len, vec.data()) == 0) {
    for (unsigned char v : vec) n += v & 1;
  }
  ::munmap(p, len);
  return n;
}

}  // namespace forkd

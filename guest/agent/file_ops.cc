#include "file_ops.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>

#include "base/unique_fd.h"
#include "proto/frame.h"

namespace forkd::agent {

namespace {

// Offsets beyond this are refused up front rather than left to the kernel (off_t is signed).
constexpr uint64_t kMaxOffset = uint64_t{1} << 50;
constexpr int kNftwFds = 64;  // directory fds nftw may hold open at once

Json stat_json(const struct stat& st) {
  return Json{{"type", file_type_name(st.st_mode)},
              {"size", static_cast<uint64_t>(st.st_size)},
              {"mode", static_cast<unsigned>(st.st_mode & 07777)},
              {"mtime", static_cast<int64_t>(st.st_mtim.tv_sec)}};
}

thread_local int tl_remove_errno = 0;
thread_local std::string* tl_remove_failed_path = nullptr;

int remove_entry(const char* path, const struct stat*, int flag, struct FTW*) {
  int r = (flag == FTW_DP || flag == FTW_D) ? ::rmdir(path) : ::unlink(path);
  if (r != 0) {
    tl_remove_errno = errno;
    if (tl_remove_failed_path != nullptr) *tl_remove_failed_path = path;
    return 1;  // stop the walk
  }
  return 0;
}

}  // namespace

const char* file_type_name(unsigned mode) {
  if (S_ISREG(mode)) return "file";
  if (S_ISDIR(mode)) return "dir";
  if (S_ISLNK(mode)) return "symlink";
  return "other";
}

AgentResult<OpReply> file_write_op(const Request& req) {
  auto path = get_path(req.args, "path");
  if (!path) return tl::unexpected(path.error());
  auto offset = get_u64(req.args, "offset", 0, kMaxOffset);
  if (!offset) return tl::unexpected(offset.error());
  auto truncate = get_bool(req.args, "truncate", false);
  if (!truncate) return tl::unexpected(truncate.error());
  auto mode = get_u64(req.args, "mode", 0644, 07777);
  if (!mode) return tl::unexpected(mode.error());
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY | (*truncate ? O_TRUNC : 0);
  UniqueFd fd(::open(path->c_str(), flags, static_cast<mode_t>(*mode)));
  if (!fd) return errno_agent_error(errno, "open " + *path);
  size_t done = 0;
  while (done < req.body.size()) {
    ssize_t n = ::pwrite(fd.get(), req.body.data() + done, req.body.size() - done,
                         static_cast<off_t>(*offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return errno_agent_error(n < 0 ? errno : EIO, "write " + *path);
    done += static_cast<size_t>(n);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return errno_agent_error(errno, "stat " + *path);
  OpReply reply;
  reply.result = Json{{"size", static_cast<uint64_t>(st.st_size)}};
  return reply;
}

AgentResult<OpReply> file_read_op(const Request& req) {
  auto path = get_path(req.args, "path");
  if (!path) return tl::unexpected(path.error());
  auto offset = get_u64(req.args, "offset", 0, kMaxOffset);
  if (!offset) return tl::unexpected(offset.error());
  // Larger requests are clamped to one chunk; the caller sees eof=false and asks again.
  auto length = get_u64(req.args, "length", proto::kChunkLen, UINT64_MAX);
  if (!length) return tl::unexpected(length.error());
  const size_t want = static_cast<size_t>(std::min<uint64_t>(*length, proto::kChunkLen));
  // O_NONBLOCK so a FIFO cannot wedge the request thread.
  UniqueFd fd(::open(path->c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd) return errno_agent_error(errno, "open " + *path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return errno_agent_error(errno, "stat " + *path);
  if (S_ISDIR(st.st_mode)) return errno_agent_error(EISDIR, "read " + *path);
  OpReply reply;
  reply.body.resize(want);
  size_t got = 0;
  for (int guard = 0; got < want && guard < 4096; ++guard) {
    ssize_t n =
        ::pread(fd.get(), reply.body.data() + got, want - got, static_cast<off_t>(*offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n < 0) return errno_agent_error(errno, "read " + *path);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  reply.body.resize(got);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  const bool eof = got < want || *offset + got >= size;
  reply.result = Json{{"size", size}, {"eof", eof}};
  return reply;
}

AgentResult<OpReply> file_list_op(const Request& req) {
  auto path = get_path(req.args, "path");
  if (!path) return tl::unexpected(path.error());
  UniqueFd dfd(::open(path->c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dfd) return errno_agent_error(errno, "open " + *path);
  DIR* dir = ::fdopendir(dfd.get());
  if (dir == nullptr) return errno_agent_error(errno, "opendir " + *path);
  dfd.release();  // owned by dir now
  std::vector<std::pair<std::string, Json>> entries;
  bool truncated = false;
  while (dirent* e = ::readdir(dir)) {
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    if (entries.size() >= kMaxListEntries) {
      truncated = true;
      break;
    }
    struct stat st;
    Json entry;
    if (::fstatat(::dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
      entry = stat_json(st);
    } else {
      entry = Json{{"type", "other"}, {"size", 0}, {"mode", 0}, {"mtime", 0}};
    }
    entry["name"] = std::string(name);
    entries.emplace_back(std::string(name), std::move(entry));
  }
  ::closedir(dir);
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  Json list = Json::array();
  for (auto& [name, entry] : entries) list.push_back(std::move(entry));
  OpReply reply;
  reply.result = Json{{"entries", std::move(list)}};
  if (truncated) reply.result["truncated"] = true;
  return reply;
}

AgentResult<OpReply> file_stat_op(const Request& req) {
  auto path = get_path(req.args, "path");
  if (!path) return tl::unexpected(path.error());
  struct stat st;
  // Follows symlinks, like stat(1) -L: callers ask about what the path refers to.
  if (::stat(path->c_str(), &st) != 0) return errno_agent_error(errno, "stat " + *path);
  OpReply reply;
  reply.result = stat_json(st);
  return reply;
}

AgentResult<OpReply> mkdir_op(const Request& req) {
  auto path = get_path(req.args, "path");
  if (!path) return tl::unexpected(path.error());
  auto parents = get_bool(req.args, "parents", false);
  if (!parents) return tl::unexpected(parents.error());
  if (!*parents) {
    if (::mkdir(path->c_str(), 0755) != 0) return errno_agent_error(errno, "mkdir " + *path);
    return OpReply{};
  }
  // mkdir -p: create each prefix in turn; existing directories are fine.
  size_t pos = 0;
  for (int guard = 0; guard <= static_cast<int>(kMaxPathLen); ++guard) {
    pos = path->find('/', pos + 1);
    std::string prefix = path->substr(0, pos);
    if (!prefix.empty() && ::mkdir(prefix.c_str(), 0755) != 0) {
      int err = errno;
      struct stat st;
      if (err != EEXIST || ::stat(prefix.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        return errno_agent_error(err == EEXIST ? ENOTDIR : err, "mkdir " + prefix);
      }
    }
    if (pos == std::string::npos) break;
  }
  return OpReply{};
}

AgentResult<OpReply> remove_op(const Request& req) {
  auto path = get_path(req.args, "path");
  if (!path) return tl::unexpected(path.error());
  auto recursive = get_bool(req.args, "recursive", false);
  if (!recursive) return tl::unexpected(recursive.error());
  if (*path == "/") return bad_request("refusing to remove /");
  struct stat st;
  if (::lstat(path->c_str(), &st) != 0) return errno_agent_error(errno, "remove " + *path);
  if (!S_ISDIR(st.st_mode)) {
    if (::unlink(path->c_str()) != 0) return errno_agent_error(errno, "remove " + *path);
    return OpReply{};
  }
  if (!*recursive) {
    if (::rmdir(path->c_str()) != 0) return errno_agent_error(errno, "remove " + *path);
    return OpReply{};
  }
  std::string failed;
  tl_remove_errno = 0;
  tl_remove_failed_path = &failed;
  // FTW_PHYS: never follow symlinks out of the tree; FTW_MOUNT: stay on one filesystem.
  int r = ::nftw(path->c_str(), remove_entry, kNftwFds, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
  tl_remove_failed_path = nullptr;
  if (r != 0) {
    int err = tl_remove_errno != 0 ? tl_remove_errno : errno;
    return errno_agent_error(err, "remove " + (failed.empty() ? *path : failed));
  }
  return OpReply{};
}

AgentResult<OpReply> rename_op(const Request& req) {
  auto from = get_path(req.args, "from");
  if (!from) return tl::unexpected(from.error());
  auto to = get_path(req.args, "to");
  if (!to) return tl::unexpected(to.error());
  if (::rename(from->c_str(), to->c_str()) != 0) {
    return errno_agent_error(errno, "rename " + *from + " to " + *to);
  }
  return OpReply{};
}

AgentResult<OpReply> sync_op(const Request&) {
  auto t0 = std::chrono::steady_clock::now();
  ::sync();
  OpReply reply;
  reply.result = Json{
      {"ms",
       std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count()}};
  return reply;
}

}  // namespace forkd::agent

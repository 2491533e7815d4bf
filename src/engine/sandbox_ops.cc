// Sandbox operations that go through the guest agent: exec, eval and files.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "base/files.h"
#include "engine/agent_replies.h"
#include "engine/sandbox.h"
#include "proto/frame.h"

namespace forkd::engine {

namespace {

constexpr auto kFileOpTimeout = std::chrono::seconds(60);

// A read reply that is neither full nor the last is legal (a file being written), but a guest
// answering every chunk with one byte would keep a read going for billions of rounds.
constexpr int kMaxShortReads = 64;
Status count_short_read(int& short_reads, size_t got, bool eof, const std::string& path) {
  if (eof || got >= proto::kChunkLen || ++short_reads <= kMaxShortReads) return {};
  return make_error(ErrorCode::kAgentProtocol,
                    "read " + path + ": the guest agent keeps answering with short chunks");
}

// Generous margin over the guest-side timeout: the agent kills the command itself and replies.
std::chrono::milliseconds exec_wait(std::chrono::milliseconds guest_timeout) {
  if (guest_timeout.count() <= 0) return std::chrono::hours(24 * 365);
  return guest_timeout + std::chrono::seconds(30);
}

}  // namespace

size_t OutputBudget::take(size_t n) {
  uint64_t cur = used_.load();
  const uint64_t cap = cap_.load();
  for (;;) {
    uint64_t grant = cur >= cap ? 0 : std::min<uint64_t>(n, cap - cur);
    if (grant == 0) return 0;
    if (used_.compare_exchange_weak(cur, cur + grant)) return static_cast<size_t>(grant);
  }
}

void OutputBudget::give_back(size_t n) { used_.fetch_sub(n); }

size_t OutputLease::take(size_t n) {
  size_t got = budget_ ? budget_->take(n) : n;
  held_ += got;
  return got;
}

Result<ExecResult> Sandbox::exec(const ExecOptions& opts, EventFn on_output) {
  Json req = {{"op", "exec"}};
  if (opts.shell) {
    req["shell"] = *opts.shell;
  } else if (!opts.argv.empty()) {
    req["argv"] = opts.argv;
  } else {
    return make_error(ErrorCode::kInvalidArgument, "exec: no command given");
  }
  if (!opts.env.empty()) req["env"] = opts.env;
  if (!opts.cwd.empty()) req["cwd"] = opts.cwd;
  if (!opts.user.empty()) req["user"] = opts.user;
  if (!opts.handle.empty()) req["handle"] = opts.handle;
  req["timeout_ms"] = opts.timeout.count();
  std::string_view stdin_bin;
  if (opts.stdin_data) {
    if (opts.stdin_data->size() > proto::kMaxBinLen) {
      return make_error(ErrorCode::kInvalidArgument, "exec: stdin larger than 4 MiB");
    }
    req["stdin"] = true;
    stdin_bin = *opts.stdin_data;
  }
  ExecResult res;
  res.lease = std::make_shared<OutputLease>(opts.budget);
  // Runs on the agent client's reader thread; the guest decides how much comes, so only the
  // first max_output_bytes of each stream (and only what the budget grants) are kept.
  EventFn sink = [&res, &opts, &on_output](const std::string& stream, std::string_view data) {
    bool err = stream == "stderr";
    if (!err && stream != "stdout") return;  // not an exec stream: ignore
    (err ? res.stderr_bytes : res.stdout_bytes) += data.size();
    if (on_output) return on_output(stream, data);
    std::string& into = err ? res.stderr_data : res.stdout_data;
    bool& truncated = err ? res.stderr_truncated : res.stdout_truncated;
    // Once a stream lost bytes nothing more is kept: what is kept is always a prefix.
    if (truncated) return;
    size_t room = opts.max_output_bytes > into.size() ? opts.max_output_bytes - into.size() : 0;
    size_t want = std::min(room, data.size());
    size_t got = want ? res.lease->take(want) : 0;
    into.append(data.substr(0, got));
    if (got < data.size()) truncated = true;
  };
  auto r = call(std::move(req), stdin_bin, exec_wait(opts.timeout), sink);
  if (!r) {
    if (r.error().code() == ErrorCode::kNotFound) {
      return tl::unexpected(Error(ErrorCode::kGuestCommandNotFound, r.error().message()));
    }
    return tl::unexpected(r.error());
  }
  auto reply = decode_exec_reply(r->json);
  if (!reply) return tl::unexpected(reply.error().wrap("sandbox " + id_));
  res.exit_code = reply->exit_code;
  res.timed_out = reply->timed_out;
  res.duration_ms = reply->duration_ms;
  return res;
}

Result<EvalResult> Sandbox::eval(std::string_view code, std::chrono::milliseconds timeout) {
  auto r = call(Json{{"op", "eval"}, {"code", code}}, {}, timeout);
  if (!r) return tl::unexpected(r.error());
  auto reply = decode_eval_reply(r->json);
  if (!reply) return tl::unexpected(reply.error().wrap("sandbox " + id_));
  return EvalResult{std::move(reply->value), std::move(reply->stdout_text),
                    std::move(reply->error)};
}

Status Sandbox::write_file(const std::string& guest_path, std::string_view data, uint32_t mode) {
  uint64_t offset = 0;
  do {
    std::string_view chunk = data.substr(offset, proto::kChunkLen);
    Json req = {{"op", "file_write"},
                {"path", guest_path},
                {"offset", offset},
                {"truncate", offset == 0},
                {"mode", mode}};
    auto r = call(std::move(req), chunk, kFileOpTimeout);
    if (!r) return tl::unexpected(r.error().wrap("write " + guest_path));
    offset += chunk.size();
  } while (offset < data.size());
  return {};
}

Result<std::string> Sandbox::read_file(const std::string& guest_path, size_t max_bytes) {
  std::string out;
  int short_reads = 0;
  // Each round either ends the loop or adds at least one byte, and out never exceeds max_bytes.
  for (;;) {
    Json req = {{"op", "file_read"},
                {"path", guest_path},
                {"offset", out.size()},
                {"length", proto::kChunkLen}};
    auto r = call(std::move(req), {}, kFileOpTimeout);
    if (!r) return tl::unexpected(r.error().wrap("read " + guest_path));
    auto rr = decode_read_reply(r->json, r->bin.size(), proto::kChunkLen);
    if (!rr) return tl::unexpected(rr.error().wrap("read " + guest_path));
    if (out.size() + r->bin.size() > max_bytes) {
      return make_error(ErrorCode::kInvalidArgument,
                        "read " + guest_path + ": larger than " + std::to_string(max_bytes));
    }
    FORKD_TRY(count_short_read(short_reads, r->bin.size(), rr->eof, guest_path));
    out += r->bin;
    if (rr->eof || r->bin.empty()) break;
  }
  return out;
}

Status Sandbox::put_file(const std::string& host_path, const std::string& guest_path) {
  auto fd = open_file(host_path, O_RDONLY);
  if (!fd) return tl::unexpected(fd.error());
  struct stat st;
  if (::fstat(fd->get(), &st) != 0) return errno_error(errno, "stat " + host_path);
  std::string buf(proto::kChunkLen, '\0');
  uint64_t offset = 0;
  for (;;) {
    ssize_t n = ::read(fd->get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(errno, "read " + host_path);
    if (n == 0 && offset > 0) break;
    Json req = {{"op", "file_write"},
                {"path", guest_path},
                {"offset", offset},
                {"truncate", offset == 0},
                {"mode", st.st_mode & 07777}};
    auto r =
        call(std::move(req), std::string_view(buf.data(), static_cast<size_t>(n)), kFileOpTimeout);
    if (!r) return tl::unexpected(r.error().wrap("write " + guest_path));
    offset += static_cast<uint64_t>(n);
    if (n == 0) break;
  }
  return {};
}

Status Sandbox::get_file(const std::string& guest_path, const std::string& host_path,
                         uint64_t max_bytes) {
  max_bytes = std::min(max_bytes, kMaxFileReadBytes);
  std::string staged = host_path + ".forkd-partial";
  auto fd = open_file(staged, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (!fd) return tl::unexpected(fd.error());
  uint64_t offset = 0;
  int short_reads = 0;
  auto fail = [&](Error e) -> Status {
    ::unlink(staged.c_str());
    return tl::unexpected(std::move(e));
  };
  // Each round either ends the loop or adds at least one byte, up to max_bytes.
  for (;;) {
    Json req = {{"op", "file_read"},
                {"path", guest_path},
                {"offset", offset},
                {"length", proto::kChunkLen}};
    auto r = call(std::move(req), {}, kFileOpTimeout);
    if (!r) return fail(r.error().wrap("read " + guest_path));
    auto rr = decode_read_reply(r->json, r->bin.size(), proto::kChunkLen);
    if (!rr) return fail(rr.error().wrap("read " + guest_path));
    if (offset + r->bin.size() > max_bytes) {
      return fail(Error(ErrorCode::kInvalidArgument, "read " + guest_path + ": larger than " +
                                                         std::to_string(max_bytes) + " bytes"));
    }
    if (auto st = count_short_read(short_reads, r->bin.size(), rr->eof, guest_path); !st) {
      return fail(st.error());
    }
    if (auto st = write_all(fd->get(), r->bin); !st) return fail(st.error().wrap(host_path));
    offset += r->bin.size();
    if (rr->eof || r->bin.empty()) break;
  }
  if (::fsync(fd->get()) != 0) return fail(errno_error(errno, "fsync " + staged).value());
  fd->reset();
  if (auto st = rename_durable(staged, host_path); !st) return fail(st.error());
  return {};
}

Result<FileStat> Sandbox::stat(const std::string& guest_path) {
  auto r = call(Json{{"op", "file_stat"}, {"path", guest_path}}, {}, kFileOpTimeout);
  if (!r) return tl::unexpected(r.error());
  auto s = decode_stat_reply(r->json);
  if (!s) return tl::unexpected(s.error().wrap("stat " + guest_path));
  return FileStat{s->type, s->size, s->mode, s->mtime};
}

Result<Json> Sandbox::list_dir(const std::string& guest_path) {
  auto r = call(Json{{"op", "file_list"}, {"path", guest_path}}, {}, kFileOpTimeout);
  if (!r) return tl::unexpected(r.error());
  auto entries = decode_list_reply(r->json);
  if (!entries) return tl::unexpected(entries.error().wrap("list " + guest_path));
  return entries;
}

Status Sandbox::mkdir(const std::string& guest_path, bool parents) {
  auto r =
      call(Json{{"op", "mkdir"}, {"path", guest_path}, {"parents", parents}}, {}, kFileOpTimeout);
  if (!r) return tl::unexpected(r.error());
  return {};
}

Status Sandbox::remove(const std::string& guest_path, bool recursive) {
  auto r = call(Json{{"op", "remove"}, {"path", guest_path}, {"recursive", recursive}}, {},
                kFileOpTimeout);
  if (!r) return tl::unexpected(r.error());
  return {};
}

Result<FileChunk> Sandbox::read_chunk(const std::string& guest_path, uint64_t offset) {
  Json req = {
      {"op", "file_read"}, {"path", guest_path}, {"offset", offset}, {"length", proto::kChunkLen}};
  auto r = call(std::move(req), {}, kFileOpTimeout);
  if (!r) return tl::unexpected(r.error().wrap("read " + guest_path));
  auto rr = decode_read_reply(r->json, r->bin.size(), proto::kChunkLen);
  if (!rr) return tl::unexpected(rr.error().wrap("read " + guest_path));
  return FileChunk{std::move(r->bin), rr->eof};
}

Status Sandbox::write_chunk(const std::string& guest_path, uint64_t offset, std::string_view data,
                            bool truncate, uint32_t mode) {
  if (data.size() > proto::kChunkLen) {
    return make_error(ErrorCode::kInvalidArgument, "write: a chunk is at most 1 MiB");
  }
  Json req = {{"op", "file_write"},
              {"path", guest_path},
              {"offset", offset},
              {"truncate", truncate},
              {"mode", mode}};
  auto r = call(std::move(req), data, kFileOpTimeout);
  if (!r) return tl::unexpected(r.error().wrap("write " + guest_path));
  return {};
}

Status Sandbox::rename(const std::string& from, const std::string& to) {
  auto r = call(Json{{"op", "rename"}, {"from", from}, {"to", to}}, {}, kFileOpTimeout);
  if (!r) return tl::unexpected(r.error().wrap("rename " + from));
  return {};
}

Status Sandbox::sync_filesystems() {
  auto r = call(Json{{"op", "sync"}}, {}, kFileOpTimeout);
  if (!r) return tl::unexpected(r.error().wrap("sync the guest's filesystems"));
  return {};
}

Status Sandbox::signal(const std::string& handle, int sig) {
  auto r = call(Json{{"op", "signal"}, {"handle", handle}, {"signal", sig}}, {},
                std::chrono::seconds(10));
  if (!r) return tl::unexpected(r.error());
  return {};
}

void Sandbox::disconnect() {
  if (agent_) agent_->shutdown();
}

}  // namespace forkd::engine

// /v1/sandboxes/:id/files: upload, download, stat, list, mkdir, remove. Bodies stream in chunks
// of proto::kChunkLen both ways; an upload is staged beside its target and renamed into place.
#include <memory>

#include "base/json_get.h"
#include "base/random.h"
#include "daemon/errors.h"
#include "daemon/request_decode.h"
#include "daemon/routes.h"
#include "daemon/sandbox_access.h"
#include "engine/agent_replies.h"
#include "proto/frame.h"

namespace forkd::daemon {

namespace {

using Json = nlohmann::json;

// The `path` query parameter, checked, or a 400 written to res.
std::optional<std::string> query_path(const httplib::Request& req, httplib::Response& res) {
  if (!req.has_param("path")) {
    send_error(res, Error(ErrorCode::kInvalidArgument, "missing query parameter 'path'"));
    return std::nullopt;
  }
  std::string path = req.get_param_value("path");
  if (auto st = check_guest_path(path); !st) {
    send_error(res, st.error());
    return std::nullopt;
  }
  return path;
}

bool flag_param(const httplib::Request& req, const char* name) {
  if (!req.has_param(name)) return false;
  std::string v = req.get_param_value(name);
  return v == "true" || v == "1";
}

Json stat_json(const std::string& path, const engine::FileStat& st) {
  return {{"path", path},
          {"type", st.type},
          {"size", st.size},
          {"mode", st.mode & 07777},
          {"mtime", st.mtime}};
}

// The directory part and the name of an absolute path ("/a/b" -> "/a", "b").
std::pair<std::string, std::string> split_path(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  auto slash = p.rfind('/');
  return {slash == 0 ? "/" : p.substr(0, slash), p.substr(slash + 1)};
}

void upload(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res,
            const httplib::ContentReader& content) {
  auto id = path_id(req, res);
  if (!id) return;
  auto path = query_path(req, res);
  if (!path) return;
  uint32_t mode = 0644;
  if (req.has_param("mode")) {
    std::string m = req.get_param_value("mode");
    if (m.empty() || m.size() > 4 || m.find_first_not_of("01234567") != m.npos) {
      return send_error(res, Error(ErrorCode::kInvalidArgument,
                                   "query parameter 'mode' must be octal permission bits, "
                                   "e.g. 0644"));
    }
    mode = static_cast<uint32_t>(std::stoul(m, nullptr, 8));
  }
  auto [dir, name] = split_path(*path);
  if (name.empty()) {
    return send_error(res, Error(ErrorCode::kInvalidArgument, "path names no file: " + *path));
  }
  if (req.has_header("Content-Length")) {
    uint64_t len = std::strtoull(req.get_header_value("Content-Length").c_str(), nullptr, 10);
    if (len > ctx.max_file_bytes) {
      return send_error(res, 413,
                        "file of " + std::to_string(len) + " bytes is larger than the cap of " +
                            std::to_string(ctx.max_file_bytes) + " bytes (--max-file-mib)",
                        "body_too_large");
    }
  }
  std::string staged =
      (dir == "/" ? "" : dir) + "/." + name.substr(0, 200) + ".forkd-upload-" + random_hex(6);
  auto sbr = ctx.agents.get(*id);
  if (!sbr) return send_error(res, sbr.error());
  engine::Sandbox& sb = **sbr;
  uint64_t size = 0;
  std::string buf;
  buf.reserve(proto::kChunkLen);
  std::optional<Error> failed;
  bool too_large = false;
  bool staged_exists = false;
  auto flush = [&] {
    if (auto st = sb.write_chunk(staged, size, buf, !staged_exists, mode); !st) {
      failed = st.error();
      return false;
    }
    staged_exists = true;
    size += buf.size();
    buf.clear();
    return true;
  };
  bool read_ok = content([&](const char* data, size_t len) {
    if (size + buf.size() + len > ctx.max_file_bytes) {
      too_large = true;
      return false;
    }
    while (len > 0) {
      size_t take = std::min(len, proto::kChunkLen - buf.size());
      buf.append(data, take);
      data += take;
      len -= take;
      if (buf.size() == proto::kChunkLen && !flush()) return false;
    }
    return true;
  });
  if (read_ok && !failed && !too_large && (!staged_exists || !buf.empty())) flush();
  if (read_ok && !failed && !too_large) {
    if (auto st = sb.rename(staged, *path); !st) failed = st.error();
  }
  if (read_ok && !failed && !too_large) {
    return send_json(res, 200, {{"path", *path}, {"size", size}});
  }
  // Nothing half-written stays behind (the guest may refuse even that: best effort).
  if (staged_exists) (void)sb.remove(staged, false);
  if (too_large || res.status == 413) {
    return send_error(res, 413,
                      "upload larger than the cap of " + std::to_string(ctx.max_file_bytes) +
                          " bytes (--max-file-mib)",
                      "body_too_large");
  }
  if (!failed) failed = Error(ErrorCode::kInvalidArgument, "the upload was cut before its end");
  if (breaks_connection(*failed)) ctx.agents.drop(*id, *sbr);
  send_error(res, *failed);
}

void download(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto id = path_id(req, res);
  if (!id) return;
  auto path = query_path(req, res);
  if (!path) return;
  auto sb = ctx.agents.get(*id);
  if (!sb) return send_error(res, sb.error());
  auto st = (*sb)->stat(*path);
  if (!st) {
    if (breaks_connection(st.error())) ctx.agents.drop(*id, *sb);
    return send_error(res, st.error());
  }
  if (st->type == "dir") {
    return send_error(res, Error(ErrorCode::kInvalidArgument,
                                 *path + " is a directory (list it with /files/list)"));
  }
  if (st->size > ctx.max_file_bytes) {
    return send_error(res, 413,
                      *path + " is " + std::to_string(st->size) +
                          " bytes, larger than the cap of " + std::to_string(ctx.max_file_bytes) +
                          " bytes (--max-file-mib)",
                      "body_too_large");
  }
  res.set_header("X-Forkd-File-Size", std::to_string(st->size));
  struct State {
    uint64_t offset = 0;
    int short_reads = 0;
  };
  auto state = std::make_shared<State>();
  uint64_t cap = ctx.max_file_bytes;
  // Held until the stream ends: the long slot and the agent connection.
  res.set_chunked_content_provider(
      "application/octet-stream", [sbp = *sb, path = *path, state, cap, slot = current_long_slot()](
                                      size_t, httplib::DataSink& sink) {
        auto chunk = sbp->read_chunk(path, state->offset);
        if (!chunk) return false;  // cut: the client sees no final chunk
        if (state->offset + chunk->data.size() > cap) return false;
        // A guest answering every read with a byte or two would keep the stream going forever.
        if (!chunk->eof && chunk->data.size() < proto::kChunkLen && ++state->short_reads > 64) {
          return false;
        }
        if (!chunk->data.empty() && !sink.write(chunk->data.data(), chunk->data.size())) {
          return false;
        }
        state->offset += chunk->data.size();
        if (chunk->eof || chunk->data.empty()) sink.done();
        return true;
      });
}

// The common shape of stat, list and remove: the sandbox and the path from the request, op on
// the sandbox's connection, and `answer` (the JSON op filled in) or the op's error.
template <typename Op>
void path_op(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res, Op op,
             int status = 200) {
  auto id = path_id(req, res);
  if (!id) return;
  auto path = query_path(req, res);
  if (!path) return;
  Json answer;
  bool ok = with_sandbox(ctx, *id, res, [&](engine::Sandbox& sb) -> std::optional<Error> {
    return op(sb, *path, answer);
  });
  if (!ok) return;
  if (status == 204) {
    res.status = 204;
  } else {
    send_json(res, status, answer);
  }
}

void stat(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  path_op(ctx, req, res,
          [](engine::Sandbox& sb, const std::string& path, Json& out) -> std::optional<Error> {
            auto st = sb.stat(path);
            if (!st) return st.error();
            out = stat_json(path, *st);
            return std::nullopt;
          });
}

void list_dir(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  path_op(ctx, req, res,
          [](engine::Sandbox& sb, const std::string& path, Json& out) -> std::optional<Error> {
            auto st = sb.stat(path);
            if (!st) return st.error();
            if (st->type != "dir") {
              return Error(ErrorCode::kInvalidArgument, path + " is not a directory");
            }
            auto entries = sb.list_dir(path);
            if (!entries) return entries.error();
            std::string base = path;
            while (!base.empty() && base.back() == '/') base.pop_back();
            Json arr = Json::array();
            for (const auto& e : *entries) {
              Json item = e;
              item["path"] = base + "/" + e.value("name", "");
              arr.push_back(std::move(item));
            }
            std::sort(arr.begin(), arr.end(), [](const Json& a, const Json& b) {
              return a.value("name", "") < b.value("name", "");
            });
            out = {{"path", path},
                   {"entries", std::move(arr)},
                   {"truncated", entries->size() >= engine::kMaxListEntries}};
            return std::nullopt;
          });
}

void make_dir(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto id = path_id(req, res);
  if (!id) return;
  auto j = json::parse_untrusted(req.body);
  if (j.is_discarded() || !j.is_object() || !j.contains("path") || !j["path"].is_string()) {
    return send_error(res, Error(ErrorCode::kInvalidArgument, "give {\"path\": \"/abs/dir\"}"));
  }
  std::string path = j["path"].get<std::string>();
  if (auto st = check_guest_path(path); !st) return send_error(res, st.error());
  bool parents = true;
  if (auto p = j.find("parents"); p != j.end() && !p->is_null()) {
    if (!p->is_boolean()) {
      return send_error(res,
                        Error(ErrorCode::kInvalidArgument, "field 'parents' must be a boolean"));
    }
    parents = p->get<bool>();
  }
  bool ok = with_sandbox(ctx, *id, res, [&](engine::Sandbox& sb) -> std::optional<Error> {
    if (auto st = sb.mkdir(path, parents); !st) return st.error();
    return std::nullopt;
  });
  if (ok) send_json(res, 200, {{"path", path}});
}

void remove_path(DaemonContext& ctx, const httplib::Request& req, httplib::Response& res) {
  bool recursive = flag_param(req, "recursive");
  path_op(
      ctx, req, res,
      [recursive](engine::Sandbox& sb, const std::string& path, Json&) -> std::optional<Error> {
        auto st = sb.remove(path, recursive);
        if (st) return std::nullopt;
        // The agent reports ENOTEMPTY as an I/O error; it is the request's fault.
        if (!recursive && st.error().code() == ErrorCode::kIo) {
          auto info = sb.stat(path);
          if (info && info->type == "dir") {
            return Error(ErrorCode::kInvalidArgument,
                         path + " is a directory that is not empty: pass recursive=true");
          }
        }
        return st.error();
      },
      204);
}

}  // namespace

std::vector<Route> file_routes(DaemonContext& ctx) {
  DaemonContext* c = &ctx;
  auto bind = [c](void (*fn)(DaemonContext&, const httplib::Request&, httplib::Response&)) {
    return [c, fn](const httplib::Request& req, httplib::Response& res) { fn(*c, req, res); };
  };
  const std::string base = R"(/v1/sandboxes/([^/]+)/files)";
  const std::string label = "/v1/sandboxes/:id/files";
  Route put{"PUT", base, label, {}};
  put.reader = [c](const httplib::Request& req, httplib::Response& res,
                   const httplib::ContentReader& content) { upload(*c, req, res, content); };
  Route get{"GET", base, label, bind(download)};
  get.long_get = true;
  return {
      put,
      get,
      {"GET", base + "/stat", label + "/stat", bind(stat)},
      {"GET", base + "/list", label + "/list", bind(list_dir)},
      {"POST", base + "/mkdir", label + "/mkdir", bind(make_dir)},
      {"DELETE", base, label, bind(remove_path)},
  };
}

}  // namespace forkd::daemon

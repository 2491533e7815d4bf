#include "daemon/request_decode.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "base/json_get.h"
#include "base/paths.h"
#include "engine/fork.h"
#include "vmm/netns.h"

namespace forkd::daemon {

namespace {

// Tags become directory names: refuse anything outside ^[A-Za-z0-9_-]{1,64}$ at the door.
Status check_tag(const std::string& tag) {
  if (is_safe_name(tag)) return {};
  return make_error(ErrorCode::kInvalidArgument, "invalid tag '" + tag.substr(0, 80) +
                                                     "': use 1-64 characters from A-Z a-z 0-9 _ -");
}

using Json = nlohmann::json;

constexpr size_t kMaxListItems = 256;
constexpr double kMaxTimeoutSecs = 3600;  // an exec holds a worker thread this long

tl::unexpected<Error> bad(std::string message) {
  return make_error(ErrorCode::kInvalidArgument, std::move(message));
}

// The body as a JSON object; an empty body is {} when allowed.
Result<Json> parse_object(std::string_view body, bool empty_ok) {
  if (body.empty() && empty_ok) return Json::object();
  Json j = json::parse_untrusted(body);
  if (j.is_discarded()) {
    return bad("request body is not valid JSON (or nests deeper than " +
               std::to_string(json::kMaxUntrustedDepth) + " levels)");
  }
  if (!j.is_object()) return bad("request body must be a JSON object");
  return j;
}

Status get_string(const Json& j, const char* key, bool required, std::string* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return bad(std::string("missing field '") + key + "'");
    return {};
  }
  if (!it->is_string()) return bad(std::string("field '") + key + "' must be a string");
  *out = it->get<std::string>();
  return {};
}

Status get_int(const Json& j, const char* key, bool required, int64_t lo, int64_t hi, int* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return bad(std::string("missing field '") + key + "'");
    return {};
  }
  if (!it->is_number_integer()) return bad(std::string("field '") + key + "' must be an integer");
  // Compare as signed 64-bit; huge unsigned values wrap negative and fail the range check.
  int64_t v = it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(INT64_MAX)
                  ? -1
                  : it->get<int64_t>();
  if (v < lo || v > hi) {
    return bad(std::string("field '") + key + "' must be " + std::to_string(lo) + ".." +
               std::to_string(hi));
  }
  *out = static_cast<int>(v);
  return {};
}

Status get_bool(const Json& j, const char* key, bool* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  if (!it->is_boolean()) return bad(std::string("field '") + key + "' must be a boolean");
  *out = it->get<bool>();
  return {};
}

Status get_strings(const Json& j, const char* key, std::vector<std::string>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  if (!it->is_array()) return bad(std::string("field '") + key + "' must be an array of strings");
  if (it->size() > kMaxListItems) {
    return bad(std::string("field '") + key + "' has more than " + std::to_string(kMaxListItems) +
               " items");
  }
  for (const auto& v : *it) {
    if (!v.is_string()) return bad(std::string("field '") + key + "' must be an array of strings");
    out->push_back(v.get<std::string>());
  }
  return {};
}

}  // namespace

Result<SnapshotCreateRequest> decode_snapshot_create(std::string_view body) {
  auto j = parse_object(body, false);
  if (!j) return tl::unexpected(j.error());
  for (const char* forkd_only : {"kernel", "rootfs"}) {
    if (j->contains(forkd_only)) {
      return bad(std::string("field '") + forkd_only +
                 "' is not supported: this daemon builds snapshots from images; give \"image\" "
                 "(\"minimal\" or \"python\") instead");
    }
  }
  SnapshotCreateRequest r;
  FORKD_TRY(get_string(*j, "tag", true, &r.tag));
  FORKD_TRY(check_tag(r.tag));
  FORKD_TRY(get_string(*j, "image", false, &r.image));
  FORKD_TRY(get_int(*j, "memory_mib", false, 64, 65536, &r.memory_mib));
  FORKD_TRY(get_strings(*j, "exec", &r.exec));
  FORKD_TRY(get_strings(*j, "eval", &r.eval));
  FORKD_TRY(get_bool(*j, "force", &r.force));
  FORKD_TRY(get_bool(*j, "cascade", &r.cascade));
  if (r.cascade && !r.force) return bad("'cascade' goes with 'force'");
  FORKD_TRY(get_string(*j, "network", false, &r.network));
  if (r.network != "none" && r.network != "outbound") {
    return bad("field 'network' must be \"none\" or \"outbound\"");
  }
  return r;
}

Result<ForkRequest> decode_fork(std::string_view body) {
  auto j = parse_object(body, false);
  if (!j) return tl::unexpected(j.error());
  ForkRequest r;
  FORKD_TRY(get_string(*j, "snapshot_tag", true, &r.snapshot_tag));
  FORKD_TRY(check_tag(r.snapshot_tag));
  FORKD_TRY(get_int(*j, "n", false, 1, engine::kMaxForkChildren, &r.n));
  static constexpr const char* kKnown[] = {
      "snapshot_tag", "n",         "memory_limit_mib", "cpu_limit", "pids_limit", "network",
      "expose",       "live_fork", "per_child_netns",  "hugepages", "prewarm",    "allow_list"};
  for (const auto& [key, value] : j->items()) {
    if (std::find(std::begin(kKnown), std::end(kKnown), key) == std::end(kKnown)) {
      return bad("unknown field '" + key.substr(0, 40) + "'");
    }
  }
  auto present = [&](const char* key) { return j->contains(key) && !(*j)[key].is_null(); };
  if (present("memory_limit_mib")) {
    int mib = 0;
    FORKD_TRY(get_int(*j, "memory_limit_mib", true, kMinMemoryLimitMib, 1 << 20, &mib));
    r.memory_limit_mib = mib;
  }
  if (present("pids_limit")) {
    int pids = 0;
    FORKD_TRY(get_int(*j, "pids_limit", true, kMinPidsLimit, 1 << 22, &pids));
    r.pids_limit = pids;
  }
  if (present("cpu_limit")) {
    const Json& c = (*j)["cpu_limit"];
    if (!c.is_number() || !std::isfinite(c.get<double>()) || c.get<double>() < 0.01 ||
        c.get<double>() > kMaxCpuLimit) {
      return bad("field 'cpu_limit' must be a number of cores, 0.01..1024");
    }
    r.cpu_limit = c.get<double>();
  }
  FORKD_TRY(get_string(*j, "network", false, &r.network));
  if (!r.network.empty() && r.network != "none" && r.network != "outbound") {
    return bad("field 'network' must be \"none\" or \"outbound\"");
  }
  bool flag = false;
  FORKD_TRY(get_bool(*j, "live_fork", &flag));  // every sandbox can be branched live
  FORKD_TRY(get_bool(*j, "per_child_netns", &r.per_child_netns));
  FORKD_TRY(get_strings(*j, "allow_list", &r.allow_list));
  if (r.allow_list.size() > vmm::kMaxAllowRules) {
    return bad("field 'allow_list' holds at most " + std::to_string(vmm::kMaxAllowRules) +
               " entries");
  }
  flag = false;
  FORKD_TRY(get_bool(*j, "hugepages", &flag));
  if (flag) return bad("hugepages is not supported: children map their tag's memory file");
  if (present("prewarm")) {
    const Json& p = (*j)["prewarm"];
    bool none = (p.is_boolean() && !p.get<bool>()) || (p.is_number_integer() && p == 0);
    if (!none) return bad("prewarm is not taken per spawn: keep a warm pool with `forkd pool`");
  }
  if (present("expose")) {
    const Json& e = (*j)["expose"];
    if (!e.is_array() || e.size() > engine::kMaxExposedPorts) {
      return bad("field 'expose' must be an array of at most " +
                 std::to_string(engine::kMaxExposedPorts) + " guest ports");
    }
    for (const auto& p : e) {
      if (!p.is_number_integer() || p.get<int64_t>() < 1 || p.get<int64_t>() > 65535) {
        return bad("field 'expose' must hold TCP ports 1..65535");
      }
      r.expose.push_back(p.get<int>());
    }
  }
  return r;
}

Result<ExecRequest> decode_exec(std::string_view body) {
  auto j = parse_object(body, false);
  if (!j) return tl::unexpected(j.error());
  ExecRequest r;
  FORKD_TRY(get_strings(*j, "args", &r.args));
  std::string shell;
  FORKD_TRY(get_string(*j, "shell", false, &shell));
  if (j->contains("shell") && !(*j)["shell"].is_null()) r.shell = shell;
  if (r.args.empty() && !r.shell) return bad("give 'args' (a non-empty array) or 'shell'");
  if (!r.args.empty() && r.shell) return bad("give 'args' or 'shell', not both");
  FORKD_TRY(get_bool(*j, "stream", &r.stream));
  FORKD_TRY(get_bool(*j, "background", &r.background));
  if (r.stream && r.background) return bad("give 'stream' or 'background', not both");
  if (auto it = j->find("timeout_secs"); it != j->end() && !it->is_null()) {
    const double max = r.background ? kMaxBackgroundTimeoutSecs : kMaxTimeoutSecs;
    if (!it->is_number()) return bad("field 'timeout_secs' must be a number");
    double t = it->get<double>();
    if (!std::isfinite(t) || t < 0 || t > max) {
      return bad("field 'timeout_secs' must be 0.." + std::to_string(int64_t(max)));
    }
    r.timeout_secs = t;
  }
  if (auto it = j->find("env"); it != j->end() && !it->is_null()) {
    if (!it->is_object() || it->size() > 1024) {
      return bad("field 'env' must be an object of at most 1024 strings");
    }
    for (auto e = it->begin(); e != it->end(); ++e) {
      const std::string& k = e.key();
      if (k.empty() || k.size() > 4096 || k.find_first_of(std::string("=\0", 2)) != k.npos) {
        return bad("field 'env': bad variable name '" + k.substr(0, 80) + "'");
      }
      if (!e->is_string() || e->get_ref<const std::string&>().find('\0') != std::string::npos) {
        return bad("field 'env': the value of " + k.substr(0, 80) +
                   " must be a string without NUL");
      }
      r.env[k] = e->get<std::string>();
    }
  }
  FORKD_TRY(get_string(*j, "cwd", false, &r.cwd));
  if (!r.cwd.empty()) FORKD_TRY(check_guest_path(r.cwd, "cwd"));
  FORKD_TRY(get_string(*j, "user", false, &r.user));
  if (j->contains("user") && (r.user.empty() || r.user.size() > 64 ||
                              r.user.find_first_of(std::string(":/\n\0", 4)) != r.user.npos)) {
    return bad("field 'user' must be a user name or a numeric uid (1-64 characters)");
  }
  bool has_stdin = j->contains("stdin") && !(*j)["stdin"].is_null();
  bool has_b64 = j->contains("stdin_b64") && !(*j)["stdin_b64"].is_null();
  if (has_stdin && has_b64) return bad("give 'stdin' or 'stdin_b64', not both");
  if (has_stdin) {
    std::string in;
    FORKD_TRY(get_string(*j, "stdin", true, &in));
    r.stdin_data = std::move(in);
  } else if (has_b64) {
    std::string in;
    FORKD_TRY(get_string(*j, "stdin_b64", true, &in));
    auto raw = decode_base64(in);
    if (!raw) return bad("field 'stdin_b64' is not base64");
    r.stdin_data = std::move(*raw);
  }
  if (r.stdin_data && r.stdin_data->size() > kMaxExecStdinBytes) {
    return bad("stdin is larger than " + std::to_string(kMaxExecStdinBytes >> 20) +
               " MiB; upload it as a file and redirect it instead");
  }
  if (auto it = j->find("max_output_bytes"); it != j->end() && !it->is_null()) {
    if (!it->is_number_unsigned() || it->get<uint64_t>() < 1 ||
        it->get<uint64_t>() > kMaxRequestOutputBytes) {
      return bad("field 'max_output_bytes' must be an integer 1.." +
                 std::to_string(kMaxRequestOutputBytes));
    }
    r.max_output_bytes = it->get<uint64_t>();
  }
  return r;
}

engine::ExecOptions exec_options_of(const ExecRequest& r) {
  engine::ExecOptions eo;
  eo.argv = r.args;
  eo.shell = r.shell;
  eo.env = r.env;
  eo.cwd = r.cwd;
  eo.user = r.user;
  eo.stdin_data = r.stdin_data;
  return eo;
}

Status check_guest_path(std::string_view path, std::string_view what) {
  std::string w(what);
  if (path.empty() || path.front() != '/') {
    return bad(w + " must be an absolute guest path (starting with /)");
  }
  if (path.size() > 4096) return bad(w + " is longer than 4096 bytes");
  if (path.find('\0') != std::string_view::npos) return bad(w + " contains a NUL byte");
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    if (path.substr(start, end - start) == "..") return bad(w + " must not contain '..'");
    start = end + 1;
  }
  return {};
}

std::optional<std::string> decode_base64(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  if (in.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(in.size() / 4 * 3 + 3);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v = value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

Result<EvalRequest> decode_eval(std::string_view body) {
  auto j = parse_object(body, false);
  if (!j) return tl::unexpected(j.error());
  EvalRequest r;
  FORKD_TRY(get_string(*j, "code", true, &r.code));
  return r;
}

Result<BranchRequest> decode_branch(std::string_view body) {
  auto j = parse_object(body, true);
  if (!j) return tl::unexpected(j.error());
  BranchRequest r;
  FORKD_TRY(get_string(*j, "tag", false, &r.tag));
  if (!r.tag.empty()) FORKD_TRY(check_tag(r.tag));
  bool has_mode = j->contains("mode") && !(*j)["mode"].is_null();
  bool has_diff = j->contains("diff") && !(*j)["diff"].is_null();
  if (has_mode && has_diff) return bad("give `mode` or the legacy `diff`, not both");
  if (has_mode) {
    FORKD_TRY(get_string(*j, "mode", true, &r.mode));
    if (r.mode != "full" && r.mode != "diff" && r.mode != "live") {
      return bad("unknown mode '" + r.mode.substr(0, 40) + "': use full, diff or live");
    }
  } else if (has_diff) {
    bool diff = true;
    FORKD_TRY(get_bool(*j, "diff", &diff));
    r.mode = diff ? "diff" : "full";
  }
  FORKD_TRY(get_bool(*j, "wait", &r.wait));
  return r;
}

Result<TransferRequest> decode_transfer(std::string_view body, bool push) {
  auto j = parse_object(body, false);
  if (!j) return tl::unexpected(j.error());
  TransferRequest r;
  FORKD_TRY(get_string(*j, "ref", true, &r.ref));
  if (r.ref.empty() || r.ref.size() > 1024) return bad("field 'ref' must be HOST[:PORT]/NAME:TAG");
  FORKD_TRY(get_string(*j, "tag", push, &r.tag));
  if (!r.tag.empty()) FORKD_TRY(check_tag(r.tag));
  FORKD_TRY(get_bool(*j, "plain_http", &r.plain_http));
  FORKD_TRY(get_bool(*j, "wait", &r.wait));
  return r;
}

Result<std::string> decode_compact(std::string_view body) {
  auto j = parse_object(body, false);
  if (!j) return tl::unexpected(j.error());
  std::string to;
  FORKD_TRY(get_string(*j, "to", true, &to));
  FORKD_TRY(check_tag(to));
  return to;
}

Result<WorkspaceCreateRequest> decode_workspace_create(std::string_view body) {
  auto j = parse_object(body, false);
  if (!j) return tl::unexpected(j.error());
  WorkspaceCreateRequest r;
  FORKD_TRY(get_string(*j, "name", true, &r.name));
  if (!is_safe_name(r.name)) {
    return bad("invalid workspace name '" + r.name.substr(0, 80) +
               "': use 1-55 characters from A-Z a-z 0-9 _ -");
  }
  FORKD_TRY(get_string(*j, "snapshot_tag", true, &r.snapshot_tag));
  FORKD_TRY(check_tag(r.snapshot_tag));
  FORKD_TRY(get_bool(*j, "per_child_netns", &r.per_child_netns));
  FORKD_TRY(get_int(*j, "memory_limit_mib", false, 0, 1 << 20, &r.memory_limit_mib));
  if (r.memory_limit_mib != 0 && r.memory_limit_mib < kMinMemoryLimitMib) {
    return bad("field 'memory_limit_mib' must be at least " + std::to_string(kMinMemoryLimitMib) +
               " (or 0: the daemon's default)");
  }
  return r;
}

Result<WorkspaceSuspendRequest> decode_workspace_suspend(std::string_view body) {
  auto j = parse_object(body, true);
  if (!j) return tl::unexpected(j.error());
  bool diff = true;
  FORKD_TRY(get_bool(*j, "diff", &diff));
  return WorkspaceSuspendRequest{diff};
}

}  // namespace forkd::daemon

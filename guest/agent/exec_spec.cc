// Pure parts of the exec op: argument validation, environment merging, command lookup.
#include <sys/stat.h>
#include <unistd.h>

#include "exec_op.h"

namespace forkd::agent {

namespace {

bool has_nul(std::string_view s) { return s.find('\0') != std::string_view::npos; }

}  // namespace

AgentResult<ExecSpec> parse_exec(const Json& args) {
  ExecSpec spec;
  const bool has_argv = args.contains("argv") && !args["argv"].is_null();
  const bool has_shell = args.contains("shell") && !args["shell"].is_null();
  if (has_argv == has_shell) return bad_request("exec needs exactly one of \"argv\" or \"shell\"");
  if (has_argv) {
    const Json& a = args["argv"];
    if (!a.is_array() || a.empty()) return bad_request("\"argv\" must be a non-empty array");
    if (a.size() > kMaxArgs) return bad_request("\"argv\" has too many entries");
    for (const Json& s : a) {
      if (!s.is_string()) return bad_request("\"argv\" entries must be strings");
      const auto& str = s.get_ref<const std::string&>();
      if (has_nul(str)) return bad_request("\"argv\" entry contains a NUL byte");
      spec.argv.push_back(str);
    }
    if (spec.argv[0].empty()) return bad_request("\"argv[0]\" is empty");
  } else {
    auto cmd = get_string(args, "shell");
    if (!cmd) return tl::unexpected(cmd.error());
    if (has_nul(*cmd)) return bad_request("\"shell\" contains a NUL byte");
    spec.argv = {"/bin/sh", "-c", std::move(*cmd)};
  }
  if (args.contains("env") && !args["env"].is_null()) {
    const Json& e = args["env"];
    if (!e.is_object()) return bad_request("\"env\" must be an object of strings");
    if (e.size() > kMaxEnv) return bad_request("\"env\" has too many entries");
    for (auto it = e.begin(); it != e.end(); ++it) {
      const std::string& key = it.key();
      if (key.empty() || key.find('=') != std::string::npos || has_nul(key)) {
        return bad_request("bad \"env\" name");
      }
      if (!it.value().is_string()) return bad_request("\"env\" values must be strings");
      const auto& val = it.value().get_ref<const std::string&>();
      if (has_nul(val)) return bad_request("\"env\" value contains a NUL byte");
      spec.env.emplace_back(key, val);
    }
  }
  if (args.contains("cwd") && !args["cwd"].is_null()) {
    auto cwd = get_path(args, "cwd");
    if (!cwd) return tl::unexpected(cwd.error());
    spec.cwd = std::move(*cwd);
  }
  auto timeout = get_u64(args, "timeout_ms", 0, kMaxTimeoutMs);
  if (!timeout) return tl::unexpected(timeout.error());
  spec.timeout_ms = *timeout;
  auto use_stdin = get_bool(args, "stdin", false);
  if (!use_stdin) return tl::unexpected(use_stdin.error());
  spec.use_stdin = *use_stdin;
  if (args.contains("user") && !args["user"].is_null()) {
    auto user = get_string(args, "user");
    if (!user) return tl::unexpected(user.error());
    if (user->empty() || user->size() > 64 || has_nul(*user) ||
        user->find_first_of(":/\n") != std::string::npos) {
      return bad_request("bad \"user\": a user name or a numeric uid");
    }
    spec.user = std::move(*user);
  }
  if (args.contains("handle") && !args["handle"].is_null()) {
    auto handle = get_string(args, "handle");
    if (!handle) return tl::unexpected(handle.error());
    if (handle->empty() || handle->size() > 64 ||
        handle->find_first_not_of(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
            std::string::npos) {
      return bad_request("bad \"handle\": 1..64 characters of [A-Za-z0-9_-]");
    }
    spec.handle = std::move(*handle);
  }
  return spec;
}

std::optional<RunAs> lookup_user(const std::string& user, std::string_view passwd_text) {
  const bool numeric = !user.empty() && user.size() <= 10 &&
                       user.find_first_not_of("0123456789") == std::string::npos;
  size_t pos = 0;
  while (pos < passwd_text.size()) {
    size_t end = passwd_text.find('\n', pos);
    if (end == std::string_view::npos) end = passwd_text.size();
    std::string_view line = passwd_text.substr(pos, end - pos);
    pos = end + 1;
    // name:password:uid:gid:gecos:home:shell
    std::string_view f[7];
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= line.size() && n < 7; ++i) {
      if (i == line.size() || line[i] == ':') {
        f[n++] = line.substr(start, i - start);
        start = i + 1;
      }
    }
    if (n < 6) continue;
    auto number = [](std::string_view s) -> std::optional<uint32_t> {
      if (s.empty() || s.size() > 10 || s.find_first_not_of("0123456789") != s.npos) return {};
      uint64_t v = std::stoull(std::string(s));
      if (v > 0xfffffffeull) return {};
      return static_cast<uint32_t>(v);
    };
    auto uid = number(f[2]);
    auto gid = number(f[3]);
    if (!uid || !gid) continue;
    if (numeric ? (f[2] == user) : (f[0] == user)) {
      return RunAs{*uid, *gid, std::string(f[0]), f[5].empty() ? "/" : std::string(f[5])};
    }
  }
  if (!numeric) return std::nullopt;
  uint64_t v = std::stoull(user);
  if (v > 0xfffffffeull) return std::nullopt;
  return RunAs{static_cast<uint32_t>(v), static_cast<uint32_t>(v), user, "/"};
}

std::vector<std::string> merge_env(const std::vector<std::string>& base,
                                   const std::vector<std::pair<std::string, std::string>>& add) {
  std::vector<std::string> out;
  out.reserve(base.size() + add.size());
  for (const std::string& entry : base) {
    std::string_view name = std::string_view(entry).substr(0, entry.find('='));
    bool replaced = false;
    for (const auto& [k, v] : add) {
      if (k == name) replaced = true;
    }
    if (!replaced) out.push_back(entry);
  }
  for (const auto& [k, v] : add) out.push_back(k + "=" + v);
  return out;
}

std::optional<std::string> resolve_command(const std::string& cmd, const std::string& path_var) {
  auto runnable = [](const std::string& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
  };
  if (cmd.find('/') != std::string::npos) {
    // execve reports the exact reason (ENOENT, EACCES) for explicit paths.
    return cmd;
  }
  size_t start = 0;
  for (int guard = 0; guard < 1024 && start <= path_var.size(); ++guard) {
    size_t end = path_var.find(':', start);
    if (end == std::string::npos) end = path_var.size();
    // An empty element means the current directory, as for execvp.
    std::string candidate(end > start ? std::string_view(path_var).substr(start, end - start)
                                      : std::string_view("."));
    candidate += '/';
    candidate += cmd;
    if (runnable(candidate)) return candidate;
    start = end + 1;
  }
  return std::nullopt;
}

}  // namespace forkd::agent

// `forkd mcp`: a Model Context Protocol server on stdio (JSON-RPC 2.0, one message per line)
// whose tools drive a forkd daemon over its REST API (--url / FORKD_URL, FORKD_TOKEN). Every
// argument goes to the daemon as a JSON field or an encoded query parameter, never into a shell
// string; a tool's failure reaches the model as text with the daemon's message (isError).
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "base/json_get.h"
#include "base/paths.h"
#include "cli/output.h"
#include "cli/remote_client.h"
#include "cli/remote_verbs.h"

namespace forkd::cli {

namespace {

using Json = nlohmann::json;

constexpr const char* kDefaultUrl = "http://127.0.0.1:8889";
constexpr size_t kMaxLine = 16u << 20;     // one JSON-RPC message
constexpr size_t kMaxFileText = 1u << 20;  // read_file answers at most this much
constexpr const char* kProtocolVersion = "2025-06-18";

struct Tool {
  const char* name;
  const char* description;
  Json schema;  // inputSchema
};

Json string_param(const char* description) {
  return {{"type", "string"}, {"description", description}};
}
Json number_param(const char* description) {
  return {{"type", "number"}, {"description", description}};
}
Json obj(Json properties, std::vector<std::string> required) {
  return {{"type", "object"}, {"properties", std::move(properties)}, {"required", required}};
}

const std::vector<Tool>& tools() {
  static const std::vector<Tool> kTools = {
      {"list_snapshots", "List snapshot tags (warm VM states children fork from).", obj({}, {})},
      {"create_snapshot",
       "Boot an image (minimal or python), run warm-up steps, and freeze it into a tag.",
       obj({{"tag", string_param("new tag: 1-64 of A-Z a-z 0-9 _ -")},
            {"image",
             string_param("minimal (busybox) or python (Python 3 with numpy); default minimal")},
            {"memory_mib", number_param("guest RAM in MiB")},
            {"exec",
             {{"type", "array"},
              {"items", {{"type", "string"}}},
              {"description", "shell warm-up commands"}}},
            {"eval",
             {{"type", "array"},
              {"items", {{"type", "string"}}},
              {"description", "Python warm-up code (python image)"}}}},
           {"tag"})},
      {"delete_snapshot", "Delete a snapshot tag.", obj({{"tag", string_param("tag")}}, {"tag"})},
      {"spawn_sandboxes", "Start n sandboxes forked from a snapshot tag.",
       obj({{"snapshot_tag", string_param("tag to fork from")},
            {"n", number_param("how many (default 1)")}},
           {"snapshot_tag"})},
      {"fork_sandbox",
       "Fork a running sandbox into n children that start exactly where it is now (a live "
       "branch into a new tag, then n sandboxes from it).",
       obj({{"sandbox_id", string_param("sandbox to fork")},
            {"n", number_param("children (default 1)")}},
           {"sandbox_id"})},
      {"list_sandboxes", "List running sandboxes.", obj({}, {})},
      {"get_sandbox", "Show one sandbox.",
       obj({{"sandbox_id", string_param("id")}}, {"sandbox_id"})},
      {"kill_sandbox", "Stop and remove a sandbox.",
       obj({{"sandbox_id", string_param("id")}}, {"sandbox_id"})},
      {"exec_command",
       "Run a command in a sandbox: `args` (argv, no shell) or `shell` (a /bin/sh -c string).",
       obj({{"sandbox_id", string_param("id")},
            {"args",
             {{"type", "array"},
              {"items", {{"type", "string"}}},
              {"description", "argv, run without a shell"}}},
            {"shell", string_param("a shell command line, run with /bin/sh -c")},
            {"timeout_secs", number_param("kill it after this long (default 60, at most 3600)")},
            {"cwd", string_param("absolute working directory")},
            {"stdin", string_param("standard input")}},
           {"sandbox_id"})},
      {"eval_code", "Evaluate Python in the sandbox's warm interpreter (python images).",
       obj({{"sandbox_id", string_param("id")}, {"code", string_param("Python code")}},
           {"sandbox_id", "code"})},
      {"read_file", "Read a text file of a sandbox (at most 1 MiB).",
       obj({{"sandbox_id", string_param("id")}, {"path", string_param("absolute path")}},
           {"sandbox_id", "path"})},
      {"write_file", "Write a text file in a sandbox (created or replaced).",
       obj({{"sandbox_id", string_param("id")},
            {"path", string_param("absolute path")},
            {"content", string_param("the file's text")}},
           {"sandbox_id", "path", "content"})},
      {"list_files", "List a directory of a sandbox.",
       obj({{"sandbox_id", string_param("id")}, {"path", string_param("absolute directory path")}},
           {"sandbox_id", "path"})},
      {"branch_sandbox",
       "Snapshot a running sandbox into a new tag (it keeps running); spawn from the tag later.",
       obj({{"sandbox_id", string_param("id")},
            {"tag", string_param("new tag (default: generated)")},
            {"mode", string_param("live (default) or full")}},
           {"sandbox_id"})},
  };
  return kTools;
}

// A tool's failure: the text the model sees.
struct ToolError {
  std::string message;
};

std::string arg_string(const Json& args, const char* key, bool required) {
  auto it = args.find(key);
  if (it == args.end() || it->is_null()) {
    if (required) throw ToolError{std::string("missing argument '") + key + "'"};
    return {};
  }
  if (!it->is_string()) throw ToolError{std::string("argument '") + key + "' must be a string"};
  return it->get<std::string>();
}

// An integer argument in [lo, hi] (a model may send 1e300 or 2.5), else def when absent.
int64_t arg_int(const Json& args, const char* key, int64_t lo, int64_t hi, int64_t def) {
  auto it = args.find(key);
  if (it == args.end() || it->is_null()) return def;
  double v = it->is_number() ? it->get<double>() : lo - 1.0;
  if (!(v >= static_cast<double>(lo) && v <= static_cast<double>(hi)) || v != std::floor(v)) {
    throw ToolError{std::string("argument '") + key + "' must be an integer " + std::to_string(lo) +
                    ".." + std::to_string(hi)};
  }
  return static_cast<int64_t>(v);
}

std::optional<double> arg_number(const Json& args, const char* key) {
  auto it = args.find(key);
  if (it == args.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) throw ToolError{std::string("argument '") + key + "' must be a number"};
  return it->get<double>();
}

template <typename T>
T ok_or_throw(Result<T> r) {
  if (!r) throw ToolError{r.error().describe()};
  return std::move(*r);
}

// A sandbox id or tag, which the daemon also checks; here it only must not change the path.
std::string path_part(const Json& args, const char* key) {
  std::string v = arg_string(args, key, true);
  if (v.empty() || v.size() > 64 ||
      v.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
          std::string::npos) {
    throw ToolError{std::string("argument '") + key + "' must be 1-64 of A-Z a-z 0-9 _ -"};
  }
  return v;
}

std::string pretty(const Json& j) { return j.dump(2, ' ', false, Json::error_handler_t::replace); }

std::string call_tool(const RemoteClient& c, const std::string& name, const Json& args) {
  const std::string sb = "/v1/sandboxes/";
  if (name == "list_snapshots") return pretty(ok_or_throw(c.get("/v1/snapshots")));
  if (name == "create_snapshot") {
    Json body = {{"tag", path_part(args, "tag")}};
    std::string image = arg_string(args, "image", false);
    body["image"] = image.empty() ? "minimal" : image;
    if (args.contains("memory_mib") && !args["memory_mib"].is_null()) {
      body["memory_mib"] = arg_int(args, "memory_mib", 1, 1 << 20, 0);
    }
    for (const char* list : {"exec", "eval"}) {
      if (args.contains(list) && !args[list].is_null()) body[list] = args[list];
    }
    return pretty(ok_or_throw(c.post("/v1/snapshots", body)));
  }
  if (name == "delete_snapshot") {
    auto st = c.del("/v1/snapshots/" + path_part(args, "tag"));
    if (!st) throw ToolError{st.error().describe()};
    return "deleted";
  }
  if (name == "spawn_sandboxes") {
    Json body = {{"snapshot_tag", path_part(args, "snapshot_tag")},
                 {"n", arg_int(args, "n", 1, 1000, 1)}};
    return pretty(ok_or_throw(c.post("/v1/sandboxes", body)));
  }
  if (name == "fork_sandbox") {
    std::string id = path_part(args, "sandbox_id");
    auto n = arg_int(args, "n", 1, 1000, 1);
    Json tag = ok_or_throw(c.post(sb + id + "/branch", Json{{"mode", "live"}}));
    std::string t = tag.value("tag", "");
    Json children = ok_or_throw(c.post("/v1/sandboxes", Json{{"snapshot_tag", t}, {"n", n}}));
    return pretty(Json{{"tag", t}, {"children", children}});
  }
  if (name == "list_sandboxes") return pretty(ok_or_throw(c.get("/v1/sandboxes")));
  if (name == "get_sandbox") return pretty(ok_or_throw(c.get(sb + path_part(args, "sandbox_id"))));
  if (name == "kill_sandbox") {
    auto st = c.del(sb + path_part(args, "sandbox_id"));
    if (!st) throw ToolError{st.error().describe()};
    return "killed";
  }
  if (name == "exec_command") {
    std::string id = path_part(args, "sandbox_id");
    Json body = Json::object();
    if (args.contains("args") && !args["args"].is_null()) body["args"] = args["args"];
    std::string shell = arg_string(args, "shell", false);
    if (!shell.empty()) body["shell"] = shell;
    body["timeout_secs"] = arg_number(args, "timeout_secs").value_or(60);
    if (auto cwd = arg_string(args, "cwd", false); !cwd.empty()) body["cwd"] = cwd;
    if (args.contains("stdin") && !args["stdin"].is_null())
      body["stdin"] = arg_string(args, "stdin", true);
    Json r = ok_or_throw(c.post(sb + id + "/exec", body));
    std::string text = "exit_code: " + std::to_string(r.value("exit_code", -1));
    if (r.value("timed_out", false)) text += " (timed out)";
    text +=
        "\n--- stdout ---\n" + r.value("stdout", "") + "\n--- stderr ---\n" + r.value("stderr", "");
    return text;
  }
  if (name == "eval_code") {
    std::string id = path_part(args, "sandbox_id");
    Json r = ok_or_throw(c.post(sb + id + "/eval", Json{{"code", arg_string(args, "code", true)}}));
    if (r.contains("error") && r["error"].is_string())
      throw ToolError{r["error"].get<std::string>()};
    std::string text;
    if (r.contains("stdout") && r["stdout"].is_string()) text += r["stdout"].get<std::string>();
    if (r.contains("result") && r["result"].is_string()) text += r["result"].get<std::string>();
    return text.empty() ? "(no value)" : text;
  }
  if (name == "read_file") {
    std::string id = path_part(args, "sandbox_id");
    std::string path = arg_string(args, "path", true);
    return ok_or_throw(c.get_bytes(sb + id + "/files?path=" + url_encode(path), kMaxFileText));
  }
  if (name == "write_file") {
    std::string id = path_part(args, "sandbox_id");
    std::string path = arg_string(args, "path", true);
    Json r = ok_or_throw(c.put_bytes(sb + id + "/files?path=" + url_encode(path),
                                     arg_string(args, "content", true)));
    return "wrote " + std::to_string(r.value("size", 0)) + " bytes to " + path;
  }
  if (name == "list_files") {
    std::string id = path_part(args, "sandbox_id");
    std::string path = arg_string(args, "path", true);
    Json r = ok_or_throw(c.get(sb + id + "/files/list?path=" + url_encode(path)));
    std::string text;
    for (const auto& e : r.value("entries", Json::array())) {
      text += e.value("type", "?") + "\t" + std::to_string(e.value("size", 0)) + "\t" +
              e.value("name", "") + "\n";
    }
    return text.empty() ? "(empty directory)" : text;
  }
  if (name == "branch_sandbox") {
    std::string id = path_part(args, "sandbox_id");
    Json body = {{"mode", arg_string(args, "mode", false).empty()
                              ? "live"
                              : arg_string(args, "mode", false)}};
    if (std::string tag = arg_string(args, "tag", false); !tag.empty()) body["tag"] = tag;
    return pretty(ok_or_throw(c.post(sb + id + "/branch", body)));
  }
  throw ToolError{"unknown tool '" + name.substr(0, 64) + "'"};
}

enum class LineRead { kLine, kTooLong, kEnd };

// One line of at most kMaxLine bytes into *line; the rest of a longer one is read and dropped,
// so a client's message never grows this process beyond the bound.
LineRead read_line(std::istream& in, std::string* line) {
  line->clear();
  bool too_long = false;
  for (int c; (c = in.get()) != EOF;) {
    if (c == '\n') return too_long ? LineRead::kTooLong : LineRead::kLine;
    if (line->size() < kMaxLine) {
      line->push_back(static_cast<char>(c));
    } else {
      too_long = true;
    }
  }
  if (too_long) return LineRead::kTooLong;
  return line->empty() ? LineRead::kEnd : LineRead::kLine;
}

Json rpc_error(const Json& id, int code, const std::string& message) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"error", {{"code", code}, {"message", message}}}};
}

// The answer to one message, or null for a notification.
Json handle(const RemoteClient& client, const std::string& line) {
  Json msg = json::parse_untrusted(line);
  if (msg.is_discarded() || !msg.is_object()) return rpc_error(nullptr, -32700, "parse error");
  Json id = msg.contains("id") ? msg["id"] : Json();
  const bool notification = !msg.contains("id");
  if (!msg.contains("method") || !msg["method"].is_string()) {
    return notification ? Json() : rpc_error(id, -32600, "invalid request: no method");
  }
  const std::string method = msg["method"].get<std::string>();
  Json params =
      msg.contains("params") && msg["params"].is_object() ? msg["params"] : Json::object();
  if (notification) return Json();  // notifications/initialized, cancelled: nothing to answer
  Json result;
  if (method == "initialize") {
    std::string version =
        params.contains("protocolVersion") && params["protocolVersion"].is_string()
            ? params["protocolVersion"].get<std::string>()
            : kProtocolVersion;
    result = {{"protocolVersion", version},
              {"capabilities", {{"tools", {{"listChanged", false}}}}},
              {"serverInfo", {{"name", "forkd"}, {"version", std::string(forkd_version())}}},
              {"instructions",
               "forkd sandboxes: fork warm microVMs from snapshot tags, run commands and Python "
               "in them, branch them mid-task. Sandboxes cost memory: kill_sandbox when done."}};
  } else if (method == "ping") {
    result = Json::object();
  } else if (method == "tools/list") {
    Json list = Json::array();
    for (const auto& t : tools()) {
      list.push_back({{"name", t.name}, {"description", t.description}, {"inputSchema", t.schema}});
    }
    result = {{"tools", list}};
  } else if (method == "tools/call") {
    if (!params.contains("name") || !params["name"].is_string()) {
      return rpc_error(id, -32602, "tools/call needs a string 'name'");
    }
    Json args = params.contains("arguments") && params["arguments"].is_object()
                    ? params["arguments"]
                    : Json::object();
    std::string text;
    bool failed = false;
    try {
      text = call_tool(client, params["name"].get<std::string>(), args);
    } catch (const ToolError& e) {
      text = e.message;
      failed = true;
    } catch (const std::exception& e) {
      text = std::string("internal error: ") + e.what();
      failed = true;
    }
    result = {{"content", Json::array({{{"type", "text"}, {"text", text}}})}, {"isError", failed}};
  } else {
    return rpc_error(id, -32601, "method not found: " + method.substr(0, 64));
  }
  return {{"jsonrpc", "2.0"}, {"id", id}, {"result", result}};
}

int do_mcp(const GlobalOptions& g) {
  GlobalOptions with_url = g;
  if (with_url.url.empty()) with_url.url = kDefaultUrl;
  auto client = make_remote_client(with_url);
  if (!client) {
    std::fprintf(stderr, "forkd mcp: %s\n", client.error().describe().c_str());
    return kExitUsage;
  }
  std::fprintf(stderr, "forkd mcp: serving MCP on stdio for the daemon at %s\n",
               with_url.url.c_str());
  std::string line;
  std::ios::sync_with_stdio(false);
  for (;;) {
    auto got = read_line(std::cin, &line);
    if (got == LineRead::kEnd) break;
    if (got == LineRead::kTooLong) {
      std::cout << rpc_error(nullptr, -32600, "message larger than 16 MiB").dump() << "\n"
                << std::flush;
      continue;
    }
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    Json reply = handle(*client, line);
    if (!reply.is_null()) {
      std::cout << reply.dump(-1, ' ', false, Json::error_handler_t::replace) << "\n" << std::flush;
    }
  }
  return 0;
}

}  // namespace

void register_mcp(CLI::App& app, GlobalOptions& g, Action& action) {
  auto* sub = app.add_subcommand(
      "mcp",
      "Serve the Model Context Protocol on stdio, driving the daemon at --url/FORKD_URL "
      "(default " +
          std::string(kDefaultUrl) + ")");
  sub->callback([&g, &action] { action = [&g] { return do_mcp(g); }; });
}

}  // namespace forkd::cli

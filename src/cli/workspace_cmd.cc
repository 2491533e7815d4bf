// `forkd workspace create|suspend|resume|list|rm`: named sandboxes that suspend into a tag and
// resume from it. The embedded engine by default; the daemon's /v1/workspaces with --url.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "base/json_get.h"
#include "cli/output.h"
#include "cli/remote_client.h"
#include "engine/workspace.h"

namespace forkd::cli {

namespace {

using Json = nlohmann::json;

struct WorkspaceArgs {
  std::string op;  // create | suspend | resume | list | rm
  std::string name;
  std::string tag;
  bool full = false;
  bool json = false;
};

// Prints WorkspaceInfo objects (the contract's JSON, from the engine or the daemon).
void print_table(const Json& arr) {
  std::printf("%-24s %-10s %-16s %-20s %-20s %6s\n", "NAME", "STATUS", "SANDBOX", "FROM",
              "STATE TAG", "AGE");
  for (const auto& w : arr) {
    if (!w.is_object()) continue;
    auto field = [&w](const char* key, const char* empty) {
      std::string v = json::string_or(w, key, "");
      return v.empty() ? std::string(empty) : v;
    };
    auto created = json::get_int<int64_t>(w, "created_at_unix");
    std::printf("%-24s %-10s %-16s %-20s %-20s %6s\n", field("name", "").c_str(),
                field("status", "").c_str(), field("sandbox_id", "-").c_str(),
                field("source_snapshot_tag", "").c_str(), field("current_state_tag", "-").c_str(),
                created ? age_text(*created).c_str() : "-");
  }
  if (arr.empty()) std::printf("(no workspaces)\n");
}

// The result of one operation: a WorkspaceInfo, an array of them (list), or null (rm).
int finish(const WorkspaceArgs& a, const Json& result) {
  if (a.json) {
    if (a.op == "list") {
      print_json({{"workspaces", result}});
    } else if (a.op == "rm") {
      print_json({{"name", a.name}, {"removed", true}});
    } else {
      print_json(result);
    }
    return 0;
  }
  if (a.op == "list") {
    print_table(result);
  } else if (a.op == "rm") {
    std::printf("%s\n", a.name.c_str());
  } else {
    print_table(Json::array({result}));
  }
  return 0;
}

int run_local(const GlobalOptions& g, const WorkspaceArgs& a) {
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  engine::Workspaces ws(cfg->home, engine::make_engine_workspace_backend(*cfg));
  Result<engine::WorkspaceInfo> w = make_error(ErrorCode::kInternal, "unknown op " + a.op);
  if (a.op == "list") {
    Json arr = Json::array();
    for (const auto& x : ws.list()) arr.push_back(engine::workspace_to_json(x));
    return finish(a, arr);
  }
  if (a.op == "rm") {
    if (auto st = ws.remove(a.name); !st) return report_error(st.error());
    return finish(a, Json());
  }
  if (a.op == "create") w = ws.create(a.name, a.tag);
  if (a.op == "suspend") w = ws.suspend(a.name, !a.full);
  if (a.op == "resume") w = ws.resume(a.name);
  if (!w) return report_error(w.error());
  return finish(a, engine::workspace_to_json(*w));
}

int run_remote(const GlobalOptions& g, const WorkspaceArgs& a) {
  const char* token = std::getenv("FORKD_TOKEN");
  const char* ca = std::getenv("FORKD_CA_CERT");
  auto c = RemoteClient::create(g.url, token ? token : "", ca ? ca : "");
  if (!c) return report_error(c.error());
  std::string path = "/v1/workspaces";
  Result<Json> r = Json();
  if (a.op == "list") {
    r = c->get(path);
    if (r && !r->is_array()) r = make_error(ErrorCode::kProtocol, "GET " + path + ": not an array");
  } else if (a.op == "create") {
    r = c->post(path, {{"name", a.name}, {"snapshot_tag", a.tag}});
  } else if (a.op == "suspend") {
    r = c->post(path + "/" + a.name + "/suspend", {{"diff", !a.full}});
  } else if (a.op == "resume") {
    r = c->post(path + "/" + a.name + "/resume", Json::object());
  } else if (a.op == "rm") {
    if (auto st = c->del(path + "/" + a.name); !st) return report_error(st.error());
  }
  if (!r) return report_error(r.error());
  return finish(a, *r);
}

int run(const GlobalOptions& g, const WorkspaceArgs& a) {
  return g.url.empty() ? run_local(g, a) : run_remote(g, a);
}

}  // namespace

void register_workspace(CLI::App& app, GlobalOptions& g, Action& action) {
  auto* ws = app.add_subcommand(
      "workspace", "Named sandboxes that suspend into a snapshot tag and resume from it");
  ws->require_subcommand(1);
  auto add = [&](const std::string& op, const std::string& help, bool named) {
    auto a = std::make_shared<WorkspaceArgs>();
    a->op = op;
    auto* sub = ws->add_subcommand(op, help);
    if (named) sub->add_option("name", a->name, "Workspace name")->required();
    sub->add_flag("--json", a->json, "Machine-readable output");
    sub->callback([&action, &g, a] { action = [&g, a] { return run(g, *a); }; });
    return std::make_pair(sub, a);
  };
  auto [create, ca] = add("create", "Fork a workspace's sandbox from a tag", true);
  create->add_option("--tag", ca->tag, "Snapshot tag to start from")->required();
  auto [suspend, sa] = add("suspend", "Snapshot into ws-NAME-state, then stop the sandbox", true);
  suspend->add_flag("--full", sa->full, "Stop the sandbox for the whole copy (default: live)");
  add("resume", "Fork the sandbox again from the state tag (else the source tag)", true);
  add("list", "List workspaces (stale: the sandbox is gone)", false);
  add("rm", "Stop the sandbox, delete the state tag and the workspace", true);
}

}  // namespace forkd::cli

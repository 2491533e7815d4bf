// Verbs on running sandboxes: ps, exec, eval, cp, rm.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>

#include "cli/output.h"
#include "cli/remote_verbs.h"
#include "engine/gc.h"
#include "engine/pool.h"
#include "engine/registry.h"
#include "engine/sandbox.h"
#include "engine/sandbox_jail.h"

namespace forkd::cli {

namespace {

int do_ps(const GlobalOptions& g, bool json) {
  if (!g.url.empty()) return remote_ps(g, json);
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  auto list = engine::list_sandboxes(*cfg);
  if (json) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& s : list) {
      arr.push_back({{"id", s.id},
                     {"state", s.state},
                     {"pid", s.pid},
                     {"tag", s.record.value("tag", "")},
                     {"image", s.record.value("image", "")},
                     {"created_at", s.record.value("created_at", int64_t{0})},
                     {"uss_kib", s.uss_kib},
                     {"pss_kib", s.pss_kib},
                     {"rss_kib", s.rss_kib}});
      arr.back().update(engine::isolation_info(s.record));
      if (!s.unresponsive_reason.empty()) arr.back()["unresponsive_reason"] = s.unresponsive_reason;
      if (!s.failure_reason.empty()) arr.back()["reason"] = s.failure_reason;
    }
    print_json({{"sandboxes", arr}});
    return 0;
  }
  std::printf("%-16s %-12s %-16s %-8s %-10s %8s %8s %6s\n", "ID", "STATE", "FROM", "PID", "UID",
              "USS MiB", "PSS MiB", "AGE");
  for (const auto& s : list) {
    std::string from = s.record.value("tag", "");
    from = from.empty() ? "image:" + s.record.value("image", "") : "tag:" + from;
    std::string state = s.state + (s.failure_reason.empty() ? "" : "(" + s.failure_reason + ")");
    auto iso = engine::isolation_info(s.record);
    std::string uid = iso["uid"].is_null() ? "-" : std::to_string(iso["uid"].get<uint64_t>());
    std::printf("%-16s %-12s %-16s %-8d %-10s %8.1f %8.1f %6s\n", s.id.c_str(), state.c_str(),
                from.c_str(), s.pid, uid.c_str(), static_cast<double>(s.uss_kib) / 1024,
                static_cast<double>(s.pss_kib) / 1024,
                age_text(s.record.value("created_at", int64_t{0})).c_str());
  }
  if (list.empty()) std::printf("(no sandboxes)\n");
  return 0;
}

struct ExecArgs {
  std::string id;
  double timeout_s = 0;
  std::string cwd;
  std::vector<std::string> env;
  bool json = false;
  size_t max_output_mib = engine::kDefaultMaxOutputBytes >> 20;
  std::vector<std::string> command;
};

int do_exec(const GlobalOptions& g, const ExecArgs& a) {
  if (!g.url.empty()) {
    RemoteExecArgs r{a.id, a.command, a.timeout_s, a.cwd, {}, a.json};
    if (auto st = parse_env(a.env, &r.env); !st) return report_error(st.error());
    return remote_exec(g, r);
  }
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  engine::ExecOptions eo;
  eo.argv = a.command;
  eo.cwd = a.cwd;
  eo.timeout = std::chrono::milliseconds(static_cast<int64_t>(a.timeout_s * 1000));
  eo.max_output_bytes = a.max_output_mib << 20;
  if (auto st = parse_env(a.env, &eo.env); !st) return report_error(st.error());
  auto sb = engine::Sandbox::attach(*cfg, a.id);
  if (!sb) return report_error(sb.error());
  auto res = (*sb)->exec(eo, exec_stream(a.json));
  if (!res) return report_error(res.error());
  return finish_exec(*res, a.json, a.timeout_s, {{"id", a.id}});
}

int do_eval(const GlobalOptions& g, const std::string& id, const std::string& code, bool json) {
  if (!g.url.empty()) return remote_eval(g, id, code, json);
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  auto sb = engine::Sandbox::attach(*cfg, id);
  if (!sb) return report_error(sb.error());
  auto r = (*sb)->eval(code);
  if (!r) return report_error(r.error());
  if (json) {
    print_json({{"id", id},
                {"value", r->value ? nlohmann::json(*r->value) : nlohmann::json()},
                {"stdout", r->stdout_text},
                {"error", r->error ? nlohmann::json(*r->error) : nlohmann::json()}});
    return r->error ? kExitError : 0;
  }
  std::fputs(r->stdout_text.c_str(), stdout);
  if (r->error) {
    std::fprintf(stderr, "%s", r->error->c_str());
    return kExitError;
  }
  if (r->value) std::printf("%s\n", r->value->c_str());
  return 0;
}

// "ID:/path" names a guest path; anything else is a host path.
bool split_remote(const std::string& s, std::string* id, std::string* path) {
  auto colon = s.find(':');
  if (colon == std::string::npos || colon == 0) return false;
  *id = s.substr(0, colon);
  *path = s.substr(colon + 1);
  return true;
}

int do_cp(const GlobalOptions& g, const std::string& src, const std::string& dst) {
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  std::string sid, spath, did, dpath;
  bool s_remote = split_remote(src, &sid, &spath);
  bool d_remote = split_remote(dst, &did, &dpath);
  if (s_remote == d_remote) {
    return report_error(Error(ErrorCode::kInvalidArgument,
                              "cp: exactly one side must be ID:/guest/path (e.g. forkd cp "
                              "./in.txt sb-1234:/tmp/in.txt)"));
  }
  std::string id = s_remote ? sid : did;
  auto sb = engine::Sandbox::attach(*cfg, id);
  if (!sb) return report_error(sb.error());
  Status st = s_remote ? (*sb)->get_file(spath, dst) : (*sb)->put_file(src, dpath);
  if (!st) return report_error(st.error());
  return 0;
}

int do_rm(const GlobalOptions& g, const std::vector<std::string>& ids, bool all, bool json) {
  if (!g.url.empty()) return remote_rm(g, ids, all, json);
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  if (all && !ids.empty()) {
    return report_error(
        Error(ErrorCode::kInvalidArgument, "rm: give sandbox ids or --all, not both"));
  }
  if (all) {
    auto r = engine::remove_all_sandboxes(*cfg);
    nlohmann::json out = nlohmann::json::array();
    for (const auto& id : r.removed) {
      out.push_back({{"id", id}, {"removed", true}, {"error", nullptr}});
      if (!json) std::printf("%s\n", id.c_str());
    }
    for (const auto& [id, err] : r.failed) {
      out.push_back({{"id", id}, {"removed", false}, {"error", err.describe()}});
      if (!json) std::fprintf(stderr, "forkd: %s\n", err.describe().c_str());
    }
    if (json) {
      print_json({{"removed", out},
                  {"pool_members_stopped", r.pool_members},
                  {"other_qemus_stopped", r.other_qemus}});
    }
    return r.failed.empty() ? 0 : kExitError;
  }
  std::vector<std::string> targets = ids;
  if (targets.empty()) {
    return report_error(Error(ErrorCode::kInvalidArgument, "rm: give sandbox ids or --all"));
  }
  int failed = 0;
  nlohmann::json out = nlohmann::json::array();
  for (const auto& id : targets) {
    auto st = engine::remove_sandbox(*cfg, id);
    out.push_back({{"id", id},
                   {"removed", bool(st)},
                   {"error", st ? nlohmann::json() : nlohmann::json(st.error().describe())}});
    if (!st) {
      ++failed;
      if (!json) std::fprintf(stderr, "forkd: %s\n", st.error().describe().c_str());
    } else if (!json) {
      std::printf("%s\n", id.c_str());
    }
  }
  if (json) print_json({{"removed", out}, {"pool_members_stopped", 0}});
  return failed ? kExitError : 0;
}

int do_gc(const GlobalOptions& g, bool json) {
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  auto r = engine::gc(*cfg);
  if (json) {
    print_json({{"dead_sandboxes", r.dead_sandboxes},
                {"orphan_dirs", r.orphan_dirs},
                {"orphan_qemus", r.orphan_qemus},
                {"snapshot_leftovers", r.snapshot_leftovers},
                {"pool_members", r.pool_members},
                {"cgroups", r.cgroups},
                {"netns", r.netns},
                {"pull_blobs", r.pull_blobs},
                {"lifted_threads", r.lifted_threads}});
    return 0;
  }
  std::printf(
      "removed %zu dead sandbox record(s), %zu orphan dir(s), %d orphan QEMU(s), "
      "%d snapshot leftover(s), %d dead pool member(s), %d stale cgroup(s), %d unused network "
      "namespace(s), %d stale pull blob(s), %d lifted thread(s) put back\n",
      r.dead_sandboxes.size(), r.orphan_dirs.size(), r.orphan_qemus, r.snapshot_leftovers,
      r.pool_members, r.cgroups, r.netns, r.pull_blobs, r.lifted_threads);
  return 0;
}

}  // namespace

void register_sandbox_verbs(CLI::App& app, GlobalOptions& g, Action& action) {
  auto ps_json = std::make_shared<bool>(false);
  auto* ps = app.add_subcommand("ps", "List sandboxes with their state and memory");
  ps->add_flag("--json", *ps_json, "Machine-readable output");
  ps->callback([&action, &g, ps_json] { action = [&g, ps_json] { return do_ps(g, *ps_json); }; });

  auto ea = std::make_shared<ExecArgs>();
  auto* ex = app.add_subcommand("exec", "Run a command in a running sandbox");
  ex->add_option("id", ea->id, "Sandbox id")->required();
  ex->add_option("--timeout", ea->timeout_s, "Kill the command after S seconds (0: none)")
      ->check(CLI::NonNegativeNumber);
  ex->add_option("--cwd", ea->cwd, "Working directory in the guest");
  ex->add_option("-e,--env", ea->env, "KEY=VALUE added to the command's environment");
  ex->add_flag("--json", ea->json, "Print one JSON result instead of streaming output");
  ex->add_option("--max-output-mib", ea->max_output_mib,
                 "With --json: MiB of stdout and of stderr kept, each (the rest is dropped)")
      ->check(CLI::Range(size_t{1}, size_t{4096}))
      ->capture_default_str();
  ex->add_option("command", ea->command, "Command and arguments (after --)")->required();
  ex->callback([&action, &g, ea] { action = [&g, ea] { return do_exec(g, *ea); }; });

  auto ev_id = std::make_shared<std::string>();
  auto ev_code = std::make_shared<std::string>();
  auto ev_json = std::make_shared<bool>(false);
  auto* ev = app.add_subcommand("eval", "Evaluate Python in a sandbox's warm worker");
  ev->add_option("id", *ev_id, "Sandbox id")->required();
  ev->add_option("code", *ev_code, "An expression or statements")->required();
  ev->add_flag("--json", *ev_json, "Machine-readable output");
  ev->callback([&action, &g, ev_id, ev_code, ev_json] {
    action = [&g, ev_id, ev_code, ev_json] { return do_eval(g, *ev_id, *ev_code, *ev_json); };
  });

  auto cp_src = std::make_shared<std::string>();
  auto cp_dst = std::make_shared<std::string>();
  auto* cp = app.add_subcommand("cp", "Copy a file between host and sandbox (ID:/path)");
  cp->add_option("src", *cp_src, "Source: host path or ID:/guest/path")->required();
  cp->add_option("dst", *cp_dst, "Destination: host path or ID:/guest/path")->required();
  cp->callback([&action, &g, cp_src, cp_dst] {
    action = [&g, cp_src, cp_dst] { return do_cp(g, *cp_src, *cp_dst); };
  });

  auto rm_ids = std::make_shared<std::vector<std::string>>();
  auto rm_all = std::make_shared<bool>(false);
  auto rm_json = std::make_shared<bool>(false);
  auto* rm = app.add_subcommand("rm", "Stop and remove sandboxes");
  rm->add_option("ids", *rm_ids, "Sandbox ids");
  rm->add_flag("--all", *rm_all, "Every sandbox, and every pre-started pool member");
  rm->add_flag("--json", *rm_json, "Machine-readable output");
  auto gc_json = std::make_shared<bool>(false);
  auto* gcc = app.add_subcommand(
      "gc", "Remove what dead forkd processes left: orphan QEMUs, run dirs, staging dirs");
  gcc->add_flag("--json", *gc_json, "Machine-readable output");
  gcc->callback([&action, &g, gc_json] { action = [&g, gc_json] { return do_gc(g, *gc_json); }; });

  rm->callback([&action, &g, rm_ids, rm_all, rm_json] {
    action = [&g, rm_ids, rm_all, rm_json] { return do_rm(g, *rm_ids, *rm_all, *rm_json); };
  });
}

}  // namespace forkd::cli

// Chains: branch (snapshot a running sandbox), info (a tag's chain and sizes), compact.
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>

#include "base/json_get.h"
#include "cli/output.h"
#include "cli/remote_verbs.h"
#include "engine/branch.h"
#include "engine/chain_ops.h"

namespace forkd::cli {

namespace {

using Json = nlohmann::json;

struct BranchArgs {
  std::string id;
  std::string tag;
  std::string mode = "diff";
  bool no_wait = false;
  bool json = false;
};

void print_branch(const Json& j, bool json) {
  if (json) return print_json(j);
  std::printf("%s  %s from %s, source paused %.1f ms", j.value("tag", "").c_str(),
              j.value("status", "").c_str(), j.value("branched_from", "").c_str(),
              j.value("pause_ms", 0.0));
  if (auto t = j.find("timings_ms"); t != j.end()) {
    std::printf(", ready after %.0f ms", t->value("total", 0.0));
  }
  std::printf("\n");
}

// Local --no-wait: a background process does the branch; this one returns once the source runs
// again (the tag is listed as writing until the background process finishes).
int branch_detached(const engine::EngineConfig& cfg, engine::BranchOptions bo, bool json) {
  bo.keep_failed_record = true;  // nobody is left to hear the error: `forkd info` shows it
  int fds[2];
  if (::pipe(fds) != 0) return report_error(Error(ErrorCode::kIo, "pipe failed"));
  pid_t pid = ::fork();
  if (pid < 0) return report_error(Error(ErrorCode::kIo, "fork failed"));
  if (pid == 0) {
    ::close(fds[0]);
    if (::fork() != 0) ::_exit(0);  // the grandchild is reparented; nobody waits on it
    ::setsid();
    int out = fds[1];
    bo.on_resumed = [out](const std::string& tag, double pause_ms, engine::BranchMode used) {
      std::string line =
          Json{{"tag", tag}, {"pause_ms", pause_ms}, {"mode", engine::branch_mode_name(used)}}
              .dump() +
          "\n";
      (void)!::write(out, line.data(), line.size());
      ::close(out);
    };
    auto r = engine::branch_sandbox(cfg, bo);
    if (!r) {
      std::string line = Json{{"error", r.error().describe()}}.dump() + "\n";
      (void)!::write(out, line.data(), line.size());
    }
    ::_exit(r ? 0 : 1);
  }
  ::close(fds[1]);
  ::waitpid(pid, nullptr, 0);
  std::string text;
  char buf[512];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  Json j = json::parse_untrusted(text);
  if (!j.is_object() || j.contains("error")) {
    std::fprintf(stderr, "forkd: branch failed: %s\n",
                 j.is_object() ? j.value("error", "").c_str() : "no answer from the writer");
    return kExitError;
  }
  j["status"] = "writing";
  j["branched_from"] = bo.sandbox_id;
  j["bootable"] = false;
  print_branch(j, json);
  return 0;
}

int do_branch(const GlobalOptions& g, const BranchArgs& a) {
  auto mode = engine::parse_branch_mode(a.mode);
  if (!mode) return report_error(mode.error());
  if (!g.url.empty()) {
    auto c = make_remote_client(g);
    if (!c) return report_error(c.error());
    Json body = {{"mode", a.mode}, {"wait", !a.no_wait}};
    if (!a.tag.empty()) body["tag"] = a.tag;
    auto r = c->post("/v1/sandboxes/" + a.id + "/branch", body);
    if (!r) return report_error(r.error());
    print_branch(*r, a.json);
    return 0;
  }
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  engine::BranchOptions bo;
  bo.sandbox_id = a.id;
  bo.tag = a.tag;
  bo.mode = *mode;
  if (a.no_wait) return branch_detached(*cfg, bo, a.json);
  if (!a.json) {
    bo.on_resumed = [](const std::string& tag, double pause_ms, engine::BranchMode) {
      std::fprintf(stderr, "forkd: source running again after %.1f ms; writing %s\n", pause_ms,
                   tag.c_str());
    };
  }
  auto r = engine::branch_sandbox(*cfg, bo);
  if (!r) return report_error(r.error());
  print_branch(engine::branch_result_json(*cfg, *r), a.json);
  return 0;
}

std::string join(const Json& arr, const char* sep) {
  std::string out;
  if (!arr.is_array()) return out;
  for (const auto& v : arr) {
    if (v.is_string()) out += (out.empty() ? "" : sep) + v.get<std::string>();
  }
  return out.empty() ? "-" : out;
}

int do_info(const GlobalOptions& g, const std::string& tag, bool json) {
  Result<Json> j = make_error(ErrorCode::kInternal, "unset");
  if (!g.url.empty()) {
    auto c = make_remote_client(g);
    if (!c) return report_error(c.error());
    j = c->get("/v1/snapshots/" + tag + "/info");
  } else {
    auto cfg = make_config(g);
    if (!cfg) return report_error(cfg.error());
    j = engine::snapshot_detail_json(*cfg, tag);
  }
  if (!j) return report_error(j.error());
  if (json) {
    print_json(*j);
    return 0;
  }
  const Json& d = *j;
  auto mib = [&](const char* k) { return static_cast<double>(d.value(k, uint64_t{0})) / 1048576; };
  std::printf("tag          %s\n", d.value("tag", "").c_str());
  std::printf("status       %s%s\n", d.value("status", "").c_str(),
              d.value("bootable", false) ? " (bootable)" : " (not bootable)");
  if (d.contains("branched_from")) {
    std::printf("branched     from %s, source paused %.1f ms\n",
                d.value("branched_from", "").c_str(), d.value("pause_ms", 0.0));
  }
  if (d.contains("chain_depth")) {
    std::printf("chain depth  %d\n", d.value("chain_depth", 0));
    std::printf("ancestors    %s\n", join(d["ancestors"], " -> ").c_str());
    std::printf("dependents   %s\n", join(d["dependents"], ", ").c_str());
    std::printf("memory       %.1f MiB logical, %.1f MiB stored", mib("memory_logical_bytes"),
                mib("memory_physical_bytes"));
    if (d.contains("assembled_bytes")) {
      std::printf(" (+ %.1f MiB assembled cache)", mib("assembled_bytes"));
    }
    std::printf("\ndevice state %.1f KiB\n",
                static_cast<double>(d.value("vmstate_bytes", uint64_t{0})) / 1024);
  }
  if (d.contains("chain_warning")) {
    std::printf("warning      %s\n", d["chain_warning"].get<std::string>().c_str());
  } else if (d.contains("warning") && d["warning"].is_string()) {
    std::printf("warning      %s\n", d["warning"].get<std::string>().c_str());
  }
  return 0;
}

int do_compact(const GlobalOptions& g, const std::string& tag, const std::string& to, bool json) {
  Json j;
  if (!g.url.empty()) {
    auto c = make_remote_client(g);
    if (!c) return report_error(c.error());
    auto r = c->post("/v1/snapshots/" + tag + "/compact", {{"to", to}});
    if (!r) return report_error(r.error());
    j = *r;
  } else {
    auto cfg = make_config(g);
    if (!cfg) return report_error(cfg.error());
    if (!json) std::fprintf(stderr, "forkd: assembling %s into %s\n", tag.c_str(), to.c_str());
    auto m = engine::compact_tag(*cfg, tag, to);
    if (!m) return report_error(m.error());
    j = engine::snapshot_info_json(*cfg, *m);
  }
  if (json) {
    print_json(j);
  } else {
    std::printf("%s  flat copy of %s\n", j.value("tag", "").c_str(), tag.c_str());
  }
  return 0;
}

}  // namespace

void register_branch(CLI::App& app, GlobalOptions& g, Action& action) {
  auto a = std::make_shared<BranchArgs>();
  auto* sub = app.add_subcommand(
      "branch", "Snapshot a running sandbox into a new tag (paused briefly, then resumed)");
  sub->add_option("id", a->id, "Sandbox id")->required();
  sub->add_option("--tag", a->tag, "New tag (default: branch-<id>-<time>-<hex>)");
  sub->add_option("--mode", a->mode, "full, diff or live (diff = live: pre-copy)")
      ->check(CLI::IsMember({"full", "diff", "live"}))
      ->capture_default_str();
  sub->add_flag("--no-wait", a->no_wait,
                "Return once the source runs again; the tag is 'writing' until done");
  sub->add_flag("--json", a->json, "Machine-readable output");
  sub->callback([&action, &g, a] { action = [&g, a] { return do_branch(g, *a); }; });

  auto tag = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto* info = app.add_subcommand("info",
                                  "Show a tag: status, chain (depth, ancestors, "
                                  "dependents) and sizes");
  info->add_option("tag", *tag, "Tag")->required();
  info->add_flag("--json", *json, "Machine-readable output");
  info->callback(
      [&action, &g, tag, json] { action = [&g, tag, json] { return do_info(g, *tag, *json); }; });

  auto ctag = std::make_shared<std::string>();
  auto to = std::make_shared<std::string>();
  auto cjson = std::make_shared<bool>(false);
  auto* compact = app.add_subcommand("compact", "Flatten a tag's chain into a new base tag");
  compact->add_option("tag", *ctag, "Tag")->required();
  compact->add_option("--to", *to, "New tag")->required();
  compact->add_flag("--json", *cjson, "Machine-readable output");
  compact->callback([&action, &g, ctag, to, cjson] {
    action = [&g, ctag, to, cjson] { return do_compact(g, *ctag, *to, *cjson); };
  });
}

}  // namespace forkd::cli

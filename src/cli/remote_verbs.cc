// CLI client mode: each verb as one or a few REST calls (shared/reference/forkd-rest-v1.md).
#include "cli/remote_verbs.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>

#include "base/files.h"
#include "base/json_get.h"
#include "cli/remote_client.h"

namespace forkd::cli {

namespace {

using Json = nlohmann::json;

Result<RemoteClient> client(const GlobalOptions& g) {
  const char* token = std::getenv("FORKD_TOKEN");
  const char* ca = std::getenv("FORKD_CA_CERT");
  return RemoteClient::create(g.url, token ? token : "", ca ? ca : "");
}

Result<Json> list_array(const RemoteClient& c, const std::string& path) {
  auto r = c.get(path);
  if (!r) return r;
  if (!r->is_array()) return make_error(ErrorCode::kProtocol, "GET " + path + ": not an array");
  return r;
}

}  // namespace

int remote_unsupported(const std::string& verb) {
  std::fprintf(stderr,
               "forkd: %s is not supported with --url (it runs on this machine's engine; unset "
               "--url/FORKD_URL) [invalid_argument]\n",
               verb.c_str());
  return kExitUsage;
}

int remote_fork(const GlobalOptions& g, const std::string& tag, int n, bool json,
                const Json& extra) {
  auto c = client(g);
  if (!c) return report_error(c.error());
  Json body = {{"snapshot_tag", tag}, {"n", n}};
  if (extra.is_object()) body.update(extra);
  auto r = c->post("/v1/sandboxes", body);
  if (!r) return report_error(r.error());
  if (!r->is_array()) return report_error(Error(ErrorCode::kProtocol, "fork: not an array"));
  Json children = Json::array();
  for (size_t i = 0; i < r->size(); ++i) {
    const Json& s = (*r)[i];
    if (!json) {
      std::printf("%s%s\n", json::string_or(s, "id", "").c_str(),
                  ports_text(s.is_object() ? s.value("ports", Json::array()) : Json()).c_str());
    }
    children.push_back(
        {{"index", i}, {"id", json::string_or(s, "id", "")}, {"status", "ready"}, {"sandbox", s}});
  }
  if (json) print_json({{"tag", tag}, {"children", children}, {"failed", 0}});
  return 0;
}

int remote_ps(const GlobalOptions& g, bool json) {
  auto c = client(g);
  if (!c) return report_error(c.error());
  auto r = list_array(*c, "/v1/sandboxes");
  if (!r) return report_error(r.error());
  if (json) {
    Json arr = Json::array();
    for (Json s : *r) {
      s["tag"] = json::string_or(s, "snapshot_tag", "");
      s["created_at"] = json::int_or<int64_t>(s, "created_at_unix", 0);
      arr.push_back(std::move(s));
    }
    print_json({{"sandboxes", arr}});
    return 0;
  }
  std::printf("%-16s %-8s %-20s %-8s %6s\n", "ID", "STATE", "FROM", "PID", "AGE");
  for (const auto& s : *r) {
    std::printf("%-16s %-8s %-20s %-8lld %6s\n", json::string_or(s, "id", "").c_str(),
                json::string_or(s, "state", "").c_str(),
                ("tag:" + json::string_or(s, "snapshot_tag", "")).c_str(),
                static_cast<long long>(json::int_or<int64_t>(s, "pid", 0)),
                age_text(json::int_or<int64_t>(s, "created_at_unix", 0)).c_str());
  }
  if (r->empty()) std::printf("(no sandboxes)\n");
  return 0;
}

int remote_exec(const GlobalOptions& g, const RemoteExecArgs& a) {
  auto c = client(g);
  if (!c) return report_error(c.error());
  Json body = {{"args", a.command}};
  if (!a.cwd.empty()) body["cwd"] = a.cwd;
  if (!a.env.empty()) body["env"] = a.env;
  if (a.timeout_s > 0) body["timeout_secs"] = a.timeout_s;
  auto r = c->post("/v1/sandboxes/" + a.id + "/exec", body);
  if (!r) return report_error(r.error());
  engine::ExecResult res;
  res.exit_code = static_cast<int>(json::int_or<int64_t>(*r, "exit_code", 0));
  res.timed_out = json::bool_or(*r, "timed_out", false);
  res.duration_ms = json::int_or<int64_t>(*r, "duration_ms", 0);
  res.stdout_data = json::string_or(*r, "stdout", "");
  res.stderr_data = json::string_or(*r, "stderr", "");
  if (!a.json) {
    (void)write_all(STDOUT_FILENO, res.stdout_data);
    (void)write_all(STDERR_FILENO, res.stderr_data);
  }
  return finish_exec(res, a.json, a.timeout_s, {{"id", a.id}});
}

int remote_eval(const GlobalOptions& g, const std::string& id, const std::string& code, bool json) {
  auto c = client(g);
  if (!c) return report_error(c.error());
  auto r = c->post("/v1/sandboxes/" + id + "/eval", {{"code", code}});
  if (!r) return report_error(r.error());
  bool obj = r->is_object();
  Json value = obj && r->contains("result") ? (*r)["result"] : Json();
  Json error = obj && r->contains("error") ? (*r)["error"] : Json();
  if (json) {
    print_json({{"id", id},
                {"value", value},
                {"stdout", json::string_or(*r, "stdout", "")},
                {"error", error}});
    return error.is_string() ? kExitError : 0;
  }
  std::fputs(json::string_or(*r, "stdout", "").c_str(), stdout);
  if (error.is_string()) {
    std::fprintf(stderr, "%s", error.get<std::string>().c_str());
    return kExitError;
  }
  if (value.is_string()) std::printf("%s\n", value.get<std::string>().c_str());
  return 0;
}

int remote_rm(const GlobalOptions& g, const std::vector<std::string>& ids, bool all, bool json) {
  auto c = client(g);
  if (!c) return report_error(c.error());
  std::vector<std::string> targets = ids;
  if (all) {
    auto r = list_array(*c, "/v1/sandboxes");
    if (!r) return report_error(r.error());
    for (const auto& s : *r) targets.push_back(json::string_or(s, "id", ""));
  } else if (targets.empty()) {
    return report_error(Error(ErrorCode::kInvalidArgument, "rm: give sandbox ids or --all"));
  }
  int failed = 0;
  Json out = Json::array();
  for (const auto& id : targets) {
    auto st = c->del("/v1/sandboxes/" + id);
    out.push_back(
        {{"id", id}, {"removed", bool(st)}, {"error", st ? Json() : Json(st.error().describe())}});
    if (!st) {
      ++failed;
      if (!json) std::fprintf(stderr, "forkd: %s\n", st.error().describe().c_str());
    } else if (!json) {
      std::printf("%s\n", id.c_str());
    }
  }
  if (json) print_json({{"removed", out}});
  return failed ? kExitError : 0;
}

int remote_images(const GlobalOptions& g, bool json) {
  auto c = client(g);
  if (!c) return report_error(c.error());
  auto r = list_array(*c, "/v1/snapshots");
  if (!r) return report_error(r.error());
  if (json) {
    print_json({{"tags", *r}});
    return 0;
  }
  std::printf("TAGS (daemon %s)\n", c->url().c_str());
  if (r->empty()) std::printf("  (none: forkd --url URL snapshot --tag NAME)\n");
  for (const auto& t : *r) {
    std::time_t when_t = json::int_or<int64_t>(t, "created_at_unix", 0);
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M", std::localtime(&when_t));
    std::printf("  %-20s image %-8s %5lld MiB  %-7s %s\n", json::string_or(t, "tag", "").c_str(),
                json::string_or(t, "image", "").c_str(),
                static_cast<long long>(json::int_or<int64_t>(t, "memory_mib", 0)),
                json::string_or(t, "status", "").c_str(), when);
  }
  return 0;
}

int remote_rmi(const GlobalOptions& g, const std::vector<std::string>& tags,
               const std::string& query) {
  auto c = client(g);
  if (!c) return report_error(c.error());
  int failed = 0;
  for (const auto& tag : tags) {
    if (auto st = c->del("/v1/snapshots/" + tag + query); !st) {
      ++failed;
      report_error(st.error());
    } else {
      std::printf("%s\n", tag.c_str());
    }
  }
  return failed ? kExitError : 0;
}

int remote_snapshot(const GlobalOptions& g, const RemoteSnapshotArgs& a) {
  if (a.cpus != 1) {
    return report_error(
        Error(ErrorCode::kInvalidArgument, "snapshot: --cpus is not supported with --url"));
  }
  auto c = client(g);
  if (!c) return report_error(c.error());
  std::fprintf(stderr, "forkd: asking %s to boot %s and snapshot it as %s\n", c->url().c_str(),
               a.image.c_str(), a.tag.c_str());
  auto r = c->post("/v1/snapshots", {{"tag", a.tag},
                                     {"image", a.image},
                                     {"memory_mib", a.memory_mib},
                                     {"exec", a.exec},
                                     {"eval", a.eval},
                                     {"force", a.force},
                                     {"cascade", a.cascade},
                                     {"network", a.network}});
  if (!r) return report_error(r.error());
  if (a.json) {
    print_json(*r);
    return 0;
  }
  Json t = r->is_object() && r->contains("timings_ms") ? (*r)["timings_ms"] : Json();
  auto ms = [&t](const char* k) { return json::number_or(t, k, 0); };
  std::printf(
      "tag %s ready: image %s, %d MiB, boot %.0f ms, warm-up %.0f ms, save %.0f ms, "
      "commit %.0f ms\n",
      a.tag.c_str(), a.image.c_str(), a.memory_mib, ms("boot"), ms("warmup"), ms("save"),
      ms("commit"));
  return 0;
}

namespace {

// The warm-up steps of snapshot --from, in the child: shell commands, then Python evals; a
// non-zero exit or a raised exception stops it.
Status remote_warmup(const RemoteClient& c, const std::string& id,
                     const RemoteSnapshotFromArgs& a) {
  constexpr double kStepTimeoutS = 1800;  // the daemon's cap; the local warm-up allows 30 min
  for (size_t i = 0; i < a.exec.size(); ++i) {
    std::string step = "warm-up " + std::to_string(i + 1);
    std::fprintf(stderr, "forkd: %s: %s\n", step.c_str(), a.exec[i].c_str());
    auto r = c.post("/v1/sandboxes/" + id + "/exec",
                    {{"args", {"/bin/sh", "-c", a.exec[i]}}, {"timeout_secs", kStepTimeoutS}});
    if (!r) return tl::unexpected(r.error().wrap(step));
    if (json::int_or<int64_t>(*r, "exit_code", 0) != 0) {
      std::string err = json::string_or(*r, "stderr", "");
      if (err.size() > 500) err = err.substr(err.size() - 500);
      return make_error(ErrorCode::kInvalidArgument,
                        step + " (" + a.exec[i] + ") exited " +
                            std::to_string(json::int_or<int64_t>(*r, "exit_code", 0)) +
                            (err.empty() ? "" : ": " + err));
    }
  }
  for (size_t i = 0; i < a.eval.size(); ++i) {
    std::string step = "warm-up eval " + std::to_string(i + 1);
    std::fprintf(stderr, "forkd: %s\n", step.c_str());
    auto r = c.post("/v1/sandboxes/" + id + "/eval", {{"code", a.eval[i]}});
    if (!r) return tl::unexpected(r.error().wrap(step));
    if (r->is_object() && (*r)["error"].is_string()) {
      return make_error(ErrorCode::kInvalidArgument,
                        step + " raised: " + (*r)["error"].get<std::string>());
    }
  }
  return {};
}

}  // namespace

int remote_snapshot_from(const GlobalOptions& g, const RemoteSnapshotFromArgs& a) {
  auto c = client(g);
  if (!c) return report_error(c.error());
  auto forked = c->post("/v1/sandboxes", {{"snapshot_tag", a.from}, {"n", 1}});
  if (!forked) return report_error(forked.error().wrap("snapshot --from " + a.from));
  if (!forked->is_array() || forked->empty()) {
    return report_error(Error(ErrorCode::kProtocol, "fork: not an array of one sandbox"));
  }
  std::string id = json::string_or((*forked)[0], "id", "");
  std::fprintf(stderr, "forkd: forked %s from %s on %s\n", id.c_str(), a.from.c_str(),
               c->url().c_str());
  // The child goes whatever happens below (a failed delete is reported, not fatal).
  struct ChildGuard {
    const RemoteClient& c;
    std::string id;
    ~ChildGuard() {
      if (auto st = c.del("/v1/sandboxes/" + id); !st) {
        std::fprintf(stderr, "forkd: could not delete %s: %s\n", id.c_str(),
                     st.error().describe().c_str());
      }
    }
  } guard{*c, id};
  if (auto st = remote_warmup(*c, id, a); !st) {
    return report_error(st.error().wrap("snapshot " + a.tag));
  }
  std::fprintf(stderr, "forkd: branching %s into %s\n", id.c_str(), a.tag.c_str());
  auto b = c->post("/v1/sandboxes/" + id + "/branch", {{"tag", a.tag}, {"mode", "live"}});
  if (!b) return report_error(b.error().wrap("snapshot " + a.tag));
  if (a.json) {
    print_json(*b);
    return 0;
  }
  auto info = c->get("/v1/snapshots/" + a.tag + "/info");
  double stored_mib =
      info ? static_cast<double>(json::int_or<int64_t>(*info, "memory_physical_bytes", 0)) / 1048576
           : 0;
  std::printf("tag %s ready: a link of %s, %.1f MiB of memory stored, pause %.1f ms\n",
              a.tag.c_str(), a.from.c_str(), stored_mib, json::number_or(*b, "pause_ms", 0));
  return 0;
}

Result<RemoteClient> make_remote_client(const GlobalOptions& g) { return client(g); }

}  // namespace forkd::cli

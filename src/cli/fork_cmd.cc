// fork: N children from a tag; pool: pre-started QEMUs per tag.
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>

#include "base/paths.h"
#include "base/subprocess.h"
#include "cli/output.h"
#include "cli/remote_verbs.h"
#include "engine/fork.h"
#include "engine/pool.h"
#include "store/snapshot_store.h"

namespace forkd::cli {

namespace {

struct ForkArgs {
  std::string tag;
  int n = 1;
  int parallel = 3;
  bool no_pool = false;
  bool json = false;
  LimitArgs limits;     // of each child's QEMU (unset: the default)
  std::string network;  // empty: the tag's
  std::vector<int> expose;
  bool per_child_netns = false;
  std::vector<std::string> allow;
};

// The REST spawn fields for a's limits (forkd's memory_limit_mib, our cpu_limit and pids_limit).
nlohmann::json limit_fields(const ForkArgs& a) {
  nlohmann::json j = nlohmann::json::object();
  if (a.limits.memory_limit_mib > 0) j["memory_limit_mib"] = a.limits.memory_limit_mib;
  if (a.limits.cpus > 0) j["cpu_limit"] = a.limits.cpus;
  if (a.limits.pids > 0) j["pids_limit"] = a.limits.pids;
  if (!a.network.empty()) j["network"] = a.network;
  if (!a.expose.empty()) j["expose"] = a.expose;
  if (a.per_child_netns) j["per_child_netns"] = true;
  if (!a.allow.empty()) j["allow_list"] = a.allow;
  return j;
}

// Refills the tag's pool in a detached `forkd pool fill`, off the fork's path.
void refill_in_background(const std::string& tag) {
  SpawnOptions o;
  o.new_session = true;
  int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  o.stdout_fd = devnull;
  o.stderr_fd = devnull;
  auto c = Child::spawn({exe_dir() + "/forkd", "pool", "fill", "--tag", tag}, o);
  if (devnull >= 0) ::close(devnull);
  if (c) c->detach();
}

int do_fork(const GlobalOptions& g, const ForkArgs& a) {
  if (!g.url.empty()) return remote_fork(g, a.tag, a.n, a.json, limit_fields(a));
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  engine::ForkOptions fo;
  fo.tag = a.tag;
  fo.n = a.n;
  fo.limits = a.limits.limits();
  fo.parallel = a.parallel;
  fo.use_pool = !a.no_pool;
  fo.network = a.network;
  fo.expose = a.expose;
  fo.per_child_netns = a.per_child_netns;
  fo.allow_list = a.allow;
  auto r = engine::fork_children(*cfg, fo);
  if (!r) return report_error(r.error());
  int failed = 0;
  nlohmann::json arr = nlohmann::json::array();
  for (size_t i = 0; i < r->children.size(); ++i) {
    const auto& c = r->children[i];
    nlohmann::json j = {{"index", i},
                        {"id", c.id},
                        {"status", c.error ? "failed" : "ready"},
                        {"ready_ms", c.total_ms},
                        {"from_pool", c.from_pool},
                        {"ports", c.ports}};
    if (c.error) {
      ++failed;
      j["error"] = {{"code", error_code_name(c.error->code())}, {"message", c.error->message()}};
      if (!a.json) std::fprintf(stderr, "forkd: child %zu: %s\n", i, c.error->describe().c_str());
    } else if (!a.json) {
      std::printf("%s%s\n", c.id.c_str(), ports_text(c.ports).c_str());
    }
    arr.push_back(j);
  }
  if (a.json) {
    print_json({{"tag", a.tag},
                {"children", arr},
                {"wall_ms", r->wall_ms},
                {"verify_ms", r->verify_ms},
                {"failed", failed}});
  } else {
    std::fprintf(stderr, "forkd: %d of %d children ready in %.0f ms\n", a.n - failed, a.n,
                 r->wall_ms);
  }
  if (engine::Pool(*cfg).config(a.tag).size > 0) refill_in_background(a.tag);
  return failed ? kExitError : 0;
}

int do_pool_fill(const GlobalOptions& g, const std::string& tag, int size, int warm) {
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  store::SnapshotStore snaps(cfg->home);
  auto meta = snaps.load(tag);
  if (!meta) return report_error(meta.error());
  if (auto st = snaps.verify(*meta); !st) return report_error(st.error());
  engine::Pool pool(*cfg);
  engine::PoolConfig pc = pool.config(tag);
  if (size >= 0) pc.size = size;
  if (warm >= 0) pc.warm = warm == 1;
  if (auto st = pool.configure(tag, pc); !st) return report_error(st.error());
  auto n = pool.fill(*meta, snaps.dir(tag));
  if (!n) return report_error(n.error());
  std::printf("pool %s: started %d, size %d, %s\n", tag.c_str(), *n, pc.size,
              pc.warm ? "warm" : "cold");
  return 0;
}

int do_pool_ls(const GlobalOptions& g, bool json) {
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  auto st = engine::Pool(*cfg).status();
  if (json) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& p : st) {
      arr.push_back({{"tag", p.tag},
                     {"size", p.config.size},
                     {"warm", p.config.warm},
                     {"members", p.members}});
    }
    print_json({{"pools", arr}});
    return 0;
  }
  std::printf("%-24s %6s %6s %8s\n", "TAG", "SIZE", "KIND", "WAITING");
  for (const auto& p : st) {
    std::printf("%-24s %6d %6s %8d\n", p.tag.c_str(), p.config.size,
                p.config.warm ? "warm" : "cold", p.members);
  }
  return 0;
}

int do_pool_drain(const GlobalOptions& g, const std::string& tag) {
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  engine::Pool pool(*cfg);
  if (!tag.empty()) (void)pool.configure(tag, {});
  std::printf("stopped %d pool members\n", pool.drain(tag));
  return 0;
}

}  // namespace

void register_fork(CLI::App& app, GlobalOptions& g, Action& action) {
  auto a = std::make_shared<ForkArgs>();
  auto* sub = app.add_subcommand("fork", "Start N children from a tag, copy-on-write");
  sub->add_option("--tag", a->tag, "Tag to fork from")->required();
  sub->add_option("-n", a->n, "Number of children (1..1000)")->capture_default_str();
  sub->add_option("--parallel", a->parallel, "Children restored at once")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  sub->add_flag("--no-pool", a->no_pool, "Do not use pre-started QEMUs");
  add_limit_options(sub, &a->limits, "each child's QEMU");
  sub->add_option("--network", a->network,
                  "Guest network: none or outbound (default: the tag's; outbound needs a tag made "
                  "with --network outbound)")
      ->check(CLI::IsMember({"none", "outbound"}));
  sub->add_option("--expose", a->expose,
                  "Guest TCP port to reach from the host (repeatable; each child gets a free host "
                  "port on the daemon's expose address, printed after its id)")
      ->check(CLI::Range(1, 65535));
  sub->add_flag("--per-child-netns", a->per_child_netns,
                "Each child in a network namespace of its own, on a tap device (root only; "
                "exposed ports then answer at the namespace's address; see docs/NETWORK.md)");
  sub->add_option("--allow", a->allow,
                  "With --per-child-netns: a destination children may reach, A.B.C.D[/N][:PORT] "
                  "(repeatable; everything else is refused)");
  sub->add_flag("--json", a->json, "Machine-readable output");
  sub->callback([&action, &g, a] { action = [&g, a] { return do_fork(g, *a); }; });

  auto* pool = app.add_subcommand("pool", "Pre-started QEMU processes per tag");
  pool->require_subcommand(1);
  auto tag = std::make_shared<std::string>();
  auto size = std::make_shared<int>(-1);
  auto warm = std::make_shared<int>(-1);
  auto* fill = pool->add_subcommand("fill", "Set a tag's pool size and start its members");
  fill->add_option("--tag", *tag, "Tag")->required();
  fill->add_option("--size", *size, "Pool size (0 disables; default: keep the current size)")
      ->check(CLI::Range(0, 256));
  fill->add_flag_callback(
      "--warm", [warm] { *warm = 1; },
      "Members load the state and run briefly, then pause (fastest claims)");
  fill->add_flag_callback(
      "--cold", [warm] { *warm = 0; },
      "Members stop before loading the state (children start exactly at the "
      "snapshot point)");
  fill->callback([&action, &g, tag, size, warm] {
    action = [&g, tag, size, warm] { return do_pool_fill(g, *tag, *size, *warm); };
  });
  auto json = std::make_shared<bool>(false);
  auto* ls = pool->add_subcommand("ls", "Pool sizes and waiting members");
  ls->add_flag("--json", *json, "Machine-readable output");
  ls->callback([&action, &g, json] { action = [&g, json] { return do_pool_ls(g, *json); }; });
  auto dtag = std::make_shared<std::string>();
  auto* drain = pool->add_subcommand("drain", "Stop pool members (of one tag, or all)");
  drain->add_option("--tag", *dtag, "Tag (default: all)");
  drain->callback([&action, &g, dtag] { action = [&g, dtag] { return do_pool_drain(g, *dtag); }; });
}

}  // namespace forkd::cli

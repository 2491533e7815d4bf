// Tags: snapshot (create), images (list images and tags), rmi (remove a tag).
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <ctime>
#include <memory>

#include "base/files.h"
#include "base/json_get.h"
#include "cli/output.h"
#include "cli/remote_verbs.h"
#include "engine/branch.h"
#include "engine/chain_ops.h"
#include "engine/image_store.h"
#include "engine/pool.h"
#include "engine/snapshot.h"
#include "store/snapshot_store.h"

namespace forkd::cli {

namespace {

struct SnapshotArgs {
  std::string tag;
  std::string image = "minimal";
  int memory_mib = 256;
  int cpus = 1;
  std::vector<std::string> exec;
  std::vector<std::string> eval;
  bool force = false;
  bool cascade = false;
  bool json = false;
  std::string network = "none";
  std::string from;  // build a chain link from this tag instead of booting the image
};

int do_snapshot_from(const engine::EngineConfig& cfg, const SnapshotArgs& a) {
  engine::SnapshotFromOptions so;
  so.from_tag = a.from;
  so.new_tag = a.tag;
  so.exec = a.exec;
  so.eval = a.eval;
  so.progress = stderr_progress();
  auto r = engine::snapshot_from(cfg, so);
  if (!r) return report_error(r.error());
  if (a.json) {
    auto j = engine::snapshot_info_json(cfg, r->meta);
    j["timings_ms"] = {{"pause", r->pause_ms}, {"copy", r->copy_ms}, {"total", r->total_ms}};
    j["memory_stored_bytes"] = r->link_bytes;
    print_json(j);
  } else {
    std::printf("tag %s ready: a link of %s, %.1f MiB of memory stored, pause %.1f ms\n",
                a.tag.c_str(), a.from.c_str(), static_cast<double>(r->link_bytes) / 1048576,
                r->pause_ms);
  }
  return 0;
}

int do_snapshot(const GlobalOptions& g, const SnapshotArgs& a) {
  if (!a.from.empty() && a.force) {
    return report_error(Error(ErrorCode::kInvalidArgument, "--force does not go with --from"));
  }
  if (!a.from.empty() && a.network != "none") {
    return report_error(Error(ErrorCode::kInvalidArgument,
                              "--network does not go with --from: a link keeps its parent's"));
  }
  if (a.cascade && !a.force) {
    return report_error(Error(ErrorCode::kInvalidArgument, "--cascade goes with --force"));
  }
  if (!g.url.empty()) {
    if (!a.from.empty()) return remote_snapshot_from(g, {a.from, a.tag, a.exec, a.eval, a.json});
    return remote_snapshot(g, {a.tag, a.image, a.memory_mib, a.cpus, a.exec, a.eval, a.force,
                               a.cascade, a.json, a.network});
  }
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  if (!a.from.empty()) return do_snapshot_from(*cfg, a);
  engine::SnapshotOptions so;
  so.tag = a.tag;
  so.image = a.image;
  so.memory_mib = a.memory_mib;
  so.cpus = a.cpus;
  so.warmup = a.exec;
  so.warmup_eval = a.eval;
  so.force = a.force;
  so.cascade = a.cascade;
  so.network = a.network;
  so.progress = stderr_progress();
  auto r = engine::create_snapshot(*cfg, so);
  if (!r) return report_error(r.error());
  if (a.json) {
    auto j = r->meta.to_json();
    j["timings_ms"] = {{"boot", r->boot_ms},
                       {"warmup", r->warmup_ms},
                       {"settle", r->settle_ms},
                       {"save", r->save_ms},
                       {"commit", r->commit_ms}};
    print_json(j);
  } else {
    std::printf(
        "tag %s ready: image %s, %d MiB, network %s, boot %.0f ms, warm-up %.0f ms, "
        "settle %.0f ms, save %.0f ms, commit %.0f ms\n",
        a.tag.c_str(), a.image.c_str(), a.memory_mib, a.network.c_str(), r->boot_ms, r->warmup_ms,
        r->settle_ms, r->save_ms, r->commit_ms);
  }
  return 0;
}

// Disk blocks actually used by the files of a tag (memory files are sparse or preallocated).
uint64_t tag_disk_kib(const std::string& dir, const store::SnapshotMeta& m) {
  uint64_t kib = 0;
  for (const auto& [role, f] : m.files) {
    struct stat st;
    if (::stat((dir + "/" + store::snapshot_file_name(role)).c_str(), &st) == 0) {
      kib += static_cast<uint64_t>(st.st_blocks) / 2;
    }
  }
  return kib;
}

int do_images(const GlobalOptions& g, bool json) {
  if (!g.url.empty()) return remote_images(g, json);
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  engine::ImageStore images(cfg->home, cfg->assets, cfg->agent);
  store::SnapshotStore snaps(cfg->home);
  nlohmann::json imgs = nlohmann::json::array(), tags = nlohmann::json::array();
  for (const auto& name : engine::ImageStore::known_images()) {
    auto cached = images.image_cached(name);
    imgs.push_back({{"name", name}, {"built", cached && *cached}});
  }
  for (const auto& name : images.local_images()) {
    imgs.push_back({{"name", name}, {"built", true}, {"source", images.local_source(name)}});
  }
  for (const auto& m : snaps.list()) {
    tags.push_back({{"tag", m.tag},
                    {"image", m.image},
                    {"memory_mib", m.memory_mib},
                    {"network", m.network},
                    {"created_at", m.created_at},
                    {"status", m.status},
                    {"parent_tag", m.parent_tag ? nlohmann::json(*m.parent_tag) : nlohmann::json()},
                    {"disk_kib", tag_disk_kib(snaps.dir(m.tag), m)},
                    {"warmup", m.warmup}});
  }
  if (json) {
    print_json({{"images", imgs}, {"tags", tags}});
    return 0;
  }
  std::printf("IMAGES\n");
  for (const auto& i : imgs) {
    std::string state = i["built"].get<bool>() ? "built" : "not built yet";
    if (const auto* src = json::member(i, "source")) {
      state = json::string_or(*src, "kind", "") == "import"
                  ? "imported from " + json::string_or(*src, "ref", "?")
                  : "built from " + json::string_or(*src, "recipe", "?");
    }
    std::printf("  %-14s %s\n", i["name"].get<std::string>().c_str(), state.c_str());
  }
  std::printf("TAGS\n");
  if (tags.empty()) std::printf("  (none: forkd snapshot --tag NAME)\n");
  for (const auto& t : tags) {
    std::time_t c = t["created_at"].get<int64_t>();
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M", std::localtime(&c));
    std::printf("  %-20s image %-8s %5d MiB  network %-8s %7.1f MiB on disk  %s\n",
                t["tag"].get<std::string>().c_str(), t["image"].get<std::string>().c_str(),
                t["memory_mib"].get<int>(), t["network"].get<std::string>().c_str(),
                static_cast<double>(t["disk_kib"].get<uint64_t>()) / 1024, when);
  }
  return 0;
}

struct RmiArgs {
  std::vector<std::string> tags;
  bool cascade = false;
  bool force = false;
};

int do_rmi(const GlobalOptions& g, const RmiArgs& a) {
  if (a.cascade && a.force) {
    return report_error(Error(ErrorCode::kInvalidArgument, "give --cascade or --force, not both"));
  }
  std::string query = a.cascade ? "?cascade=true" : (a.force ? "?force=true" : "");
  if (!g.url.empty()) return remote_rmi(g, a.tags, query);
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  auto mode = a.cascade ? engine::RemoveMode::kCascade
                        : (a.force ? engine::RemoveMode::kForce : engine::RemoveMode::kRefuse);
  int failed = 0;
  for (const auto& tag : a.tags) {
    auto removed = engine::remove_tag(*cfg, tag, mode);
    if (!removed) {
      ++failed;
      report_error(removed.error());
      continue;
    }
    for (const auto& t : *removed) std::printf("%s\n", t.c_str());
  }
  return failed ? kExitError : 0;
}

}  // namespace

void register_snapshot(CLI::App& app, GlobalOptions& g, Action& action) {
  auto a = std::make_shared<SnapshotArgs>();
  auto* sub = app.add_subcommand("snapshot", "Boot an image, warm it up, freeze it into a tag");
  sub->add_option("--tag", a->tag, "Tag name ([A-Za-z0-9_-]{1,64})")->required();
  sub->add_option("--image", a->image, "Image: minimal, python or a local one (forkd images)")
      ->capture_default_str();
  sub->add_option("--memory", a->memory_mib, "Guest memory in MiB")
      ->check(CLI::Range(64, 65536))
      ->capture_default_str();
  sub->add_option("--cpus", a->cpus, "Guest vCPUs")->check(CLI::Range(1, 64));
  sub->add_option("--exec", a->exec, "Warm-up shell command (repeatable; each must exit 0)");
  sub->add_option("--eval", a->eval,
                  "Warm-up Python for the warm worker (repeatable, after --exec)");
  sub->add_option("--network", a->network,
                  "none: no NIC; outbound: a NIC on a user-mode network, for the warm-up and for "
                  "children (each chooses none or outbound)")
      ->check(CLI::IsMember({"none", "outbound"}))
      ->capture_default_str();
  sub->add_flag("--force", a->force,
                "Replace an existing tag (refused while links depend on it, unless --cascade)");
  sub->add_flag("--cascade", a->cascade, "With --force: remove the old tag's links first");
  sub->add_option("--from", a->from,
                  "Fork one child of this tag, run the warm-up in it and branch it into --tag "
                  "(a chain link)");
  sub->add_flag("--json", a->json, "Machine-readable output");
  sub->callback([&action, &g, a] { action = [&g, a] { return do_snapshot(g, *a); }; });

  auto json = std::make_shared<bool>(false);
  auto* images = app.add_subcommand("images", "List images and snapshot tags");
  images->add_flag("--json", *json, "Machine-readable output");
  images->callback([&action, &g, json] { action = [&g, json] { return do_images(g, *json); }; });

  auto rm = std::make_shared<RmiArgs>();
  auto* rmi = app.add_subcommand("rmi", "Remove snapshot tags (running children keep running)");
  rmi->add_option("tags", rm->tags, "Tags")->required();
  rmi->add_flag("--cascade", rm->cascade, "Also remove the tags built on it (chain links)");
  rmi->add_flag("--force", rm->force, "Remove it even if links depend on it (they are orphaned)");
  rmi->callback([&action, &g, rm] { action = [&g, rm] { return do_rmi(g, *rm); }; });
}

}  // namespace forkd::cli

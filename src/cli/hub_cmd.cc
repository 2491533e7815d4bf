// Moving tags between hosts: pack (a tag's chain into one file) and unpack; push and pull
// through an OCI registry.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "base/units.h"
#include "cli/output.h"
#include "cli/registry_args.h"
#include "hub/oci_tag.h"
#include "hub/pack_file.h"
#include "store/snapshot_store.h"

namespace forkd::cli {

namespace {

using Json = nlohmann::json;

struct PackArgs {
  std::string tag;
  std::string output;
  std::string since;
  int threads = 0;
  bool without_image = false;
  bool json = false;
};

struct UnpackArgs {
  std::string input;
  std::string tag;
  int threads = 0;
  bool json = false;
};

struct PushArgs {
  std::string tag;
  RegistryArgs reg;
  bool json = false;
};

struct PullArgs {
  RegistryArgs reg;
  std::string tag;
  bool json = false;
};

int do_pack(const GlobalOptions& g, PackArgs a) {
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  store::SnapshotStore snaps(cfg->home);
  if (auto st = store::SnapshotStore::validate_tag(a.tag); !st) return report_error(st.error());
  if (a.output.empty()) a.output = a.tag + ".fpk";
  if (a.output == "-" && isatty(STDOUT_FILENO)) {
    return report_error(Error(ErrorCode::kInvalidArgument,
                              "refusing to write a pack to a terminal; redirect stdout or use -o"));
  }
  hub::PackOptions po{a.tag,          a.since, a.output, a.threads, byte_progress("pack " + a.tag),
                      a.without_image};
  auto r = hub::pack_tag(snaps, po);
  if (!r) return report_error(r.error());
  std::vector<std::string> tags;
  for (const auto& t : r->manifest.tags) tags.push_back(t.meta.tag);
  double ratio = r->pack_bytes ? static_cast<double>(r->logical_bytes) / r->pack_bytes : 0;
  if (a.json) {
    print_json({{"output", a.output},
                {"tags", tags},
                {"since", a.since.empty() ? Json(nullptr) : Json(a.since)},
                {"logical_bytes", r->logical_bytes},
                {"pack_bytes", r->pack_bytes},
                {"chunks", r->stats.chunks},
                {"zero_pages", r->stats.zero_pages},
                {"ratio", ratio},
                {"ms", r->ms}});
    return 0;
  }
  std::string chain;
  for (const auto& t : tags) chain += (chain.empty() ? "" : " -> ") + t;
  std::fprintf(a.output == "-" ? stderr : stdout,
               "packed %s into %s: %s (%s of files, %.1fx smaller) in %.0f ms\n", chain.c_str(),
               a.output == "-" ? "stdout" : a.output.c_str(), format_mb(r->pack_bytes).c_str(),
               format_mb(r->logical_bytes).c_str(), ratio, r->ms);
  return 0;
}

int do_unpack(const GlobalOptions& g, const UnpackArgs& a) {
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  store::SnapshotStore snaps(cfg->home);
  hub::UnpackOptions uo{a.input, a.tag, a.threads, byte_progress("unpack " + a.input)};
  auto r = hub::unpack_file(snaps, uo);
  if (!r) return report_error(r.error());
  if (a.json) {
    print_json({{"created", r->tags.created},
                {"present", r->tags.present},
                {"logical_bytes", r->tags.logical_bytes},
                {"pack_bytes", r->pack_bytes},
                {"ms", r->ms}});
    return 0;
  }
  std::string created;
  for (const auto& t : r->tags.created) created += (created.empty() ? "" : ", ") + t;
  std::printf("unpacked %s (%s) in %.0f ms", created.c_str(),
              format_mb(r->tags.logical_bytes).c_str(), r->ms);
  if (!r->tags.present.empty()) {
    std::string present;
    for (const auto& t : r->tags.present) present += (present.empty() ? "" : ", ") + t;
    std::printf("; already here: %s", present.c_str());
  }
  std::printf("\n");
  return 0;
}

int do_push(const GlobalOptions& g, const PushArgs& a) {
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  store::SnapshotStore snaps(cfg->home);
  if (auto st = store::SnapshotStore::validate_tag(a.tag); !st) return report_error(st.error());
  hub::OciRef ref;
  auto client = registry_client(a.reg, &ref);
  if (!client) return report_error(client.error());
  auto r = hub::push_tag(snaps, cfg->home + "/cache/oci", *client, ref, a.tag,
                         byte_progress("push " + a.tag));
  if (!r) return report_error(r.error());
  if (a.json) {
    print_json(hub::push_result_json(ref, *r));
    return 0;
  }
  std::printf("pushed %s to %s (%s): %llu blobs sent (%s), %llu already there, in %.0f ms\n",
              a.tag.c_str(), ref.to_string().c_str(), r->digest.c_str(),
              static_cast<unsigned long long>(r->blobs_uploaded),
              format_mb(r->bytes_uploaded).c_str(),
              static_cast<unsigned long long>(r->blobs_present), r->ms);
  return 0;
}

int do_pull(const GlobalOptions& g, const PullArgs& a) {
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  store::SnapshotStore snaps(cfg->home);
  hub::OciRef ref;
  auto client = registry_client(a.reg, &ref);
  if (!client) return report_error(client.error());
  auto r = hub::pull_tag(snaps, cfg->home + "/cache/oci", *client, ref, a.tag,
                         byte_progress("pull " + ref.to_string()));
  if (!r) return report_error(r.error());
  if (a.json) {
    print_json(hub::pull_result_json(ref, *r));
    return 0;
  }
  std::string created;
  for (const auto& t : r->tags.created) created += (created.empty() ? "" : ", ") + t;
  if (created.empty()) created = "nothing new";
  std::printf(
      "pulled %s: %s; %llu blobs fetched (%s, %llu of them resumed), %llu reused, in "
      "%.0f ms\n",
      ref.to_string().c_str(), created.c_str(), static_cast<unsigned long long>(r->blobs_fetched),
      format_mb(r->bytes_fetched).c_str(), static_cast<unsigned long long>(r->blobs_resumed),
      static_cast<unsigned long long>(r->blobs_reused), r->ms);
  return 0;
}

}  // namespace

void register_hub(CLI::App& app, GlobalOptions& g, Action& action) {
  auto pa = std::make_shared<PackArgs>();
  auto* pack = app.add_subcommand("pack", "Pack a tag (and its chain's ancestors) into one file");
  pack->add_option("tag", pa->tag, "Tag to pack")->required();
  pack->add_option("-o,--output", pa->output, "Output file (default TAG.fpk; - for stdout)");
  pack->add_option("--since", pa->since,
                   "Pack only the links after this ancestor (the receiver has it already)");
  pack->add_flag("--without-image", pa->without_image,
                 "Leave out the image's root disk and kernel (the receiver has that image or a "
                 "tag of it)");
  pack->add_option("--threads", pa->threads, "Compression threads (default: one per core)")
      ->check(CLI::Range(0, 256));
  pack->add_flag("--json", pa->json, "Print the result as JSON");
  pack->callback([&g, &action, pa] { action = [&g, pa] { return do_pack(g, *pa); }; });

  auto ua = std::make_shared<UnpackArgs>();
  auto* unpack = app.add_subcommand("unpack", "Unpack a pack into tags on this host");
  unpack->add_option("file", ua->input, "Pack file (- for stdin)")->required();
  unpack->add_option("--tag", ua->tag, "Name for the packed tag (its ancestors keep theirs)");
  unpack->add_option("--threads", ua->threads, "Decoding threads (default: one per core)")
      ->check(CLI::Range(0, 256));
  unpack->add_flag("--json", ua->json, "Print the result as JSON");
  unpack->callback([&g, &action, ua] { action = [&g, ua] { return do_unpack(g, *ua); }; });

  auto push_a = std::make_shared<PushArgs>();
  auto* push = app.add_subcommand("push", "Push a tag (and its chain) to an OCI registry");
  push->add_option("tag", push_a->tag, "Tag to push")->required();
  push->add_option("ref", push_a->reg.ref, "HOST[:PORT]/NAME:TAG")->required();
  add_registry_options(push, &push_a->reg);
  push->add_flag("--json", push_a->json, "Print the result as JSON");
  push->callback([&g, &action, push_a] { action = [&g, push_a] { return do_push(g, *push_a); }; });

  auto pull_a = std::make_shared<PullArgs>();
  auto* pull = app.add_subcommand("pull", "Pull a tag (and the ancestors this host lacks)");
  pull->add_option("ref", pull_a->reg.ref, "HOST[:PORT]/NAME:TAG or HOST/NAME@sha256:...")
      ->required();
  pull->add_option("--tag", pull_a->tag, "Name for the pulled tag (ancestors keep theirs)");
  add_registry_options(pull, &pull_a->reg);
  pull->add_flag("--json", pull_a->json, "Print the result as JSON");
  pull->callback([&g, &action, pull_a] { action = [&g, pull_a] { return do_pull(g, *pull_a); }; });
}

}  // namespace forkd::cli

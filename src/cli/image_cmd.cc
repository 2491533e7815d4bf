// Local images: forkd image import (a container image from a registry) and forkd image build (a
// Debian recipe), both made into guest disks that --image NAME then boots.
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>

#include "base/clock.h"
#include "base/dir_lock.h"
#include "base/files.h"
#include "base/random.h"
#include "cli/output.h"
#include "cli/registry_args.h"
#include "engine/recipe.h"
#include "hub/image_pull.h"

namespace forkd::cli {

namespace {

struct ImportArgs {
  RegistryArgs reg;
  std::string name;
  bool json = false;
};

struct BuildArgs {
  std::string recipe;
  std::string name;
  bool json = false;
};

// The default name of an imported image: the repository's last component, dots made dashes
// ("tools/busybox.static" -> "busybox-static").
std::string default_name(const hub::OciRef& ref) {
  std::string last = ref.repository.substr(ref.repository.rfind('/') + 1);
  for (char& c : last) {
    if (c == '.') c = '-';
  }
  return last;
}

// A directory under $FORKD_HOME/cache for one import or build, locked while in use and removed
// when this object goes (forkd gc removes one whose process died).
Result<LockedDir> work_dir(const engine::EngineConfig& cfg, const std::string& kind) {
  return LockedDir::create(cfg.home + "/cache", kind + "-" + random_hex(6));
}

int print_image(const engine::Image& img, const nlohmann::json& extra, bool json, double s,
                const std::string& what) {
  struct stat st {};
  (void)::stat(img.disk.c_str(), &st);
  uint64_t disk_mib = static_cast<uint64_t>(st.st_size) >> 20;
  if (json) {
    nlohmann::json j = {
        {"name", img.name}, {"python", img.has_python}, {"disk_mib", disk_mib}, {"seconds", s}};
    j.update(extra);
    print_json(j);
    return 0;
  }
  std::printf("%s as image %s (%llu MiB disk, python %s) in %.1f s; use --image %s\n", what.c_str(),
              img.name.c_str(), static_cast<unsigned long long>(disk_mib),
              img.has_python ? "yes" : "no", s, img.name.c_str());
  return 0;
}

int do_import(const GlobalOptions& g, const ImportArgs& a) {
  auto t0 = SteadyClock::now();
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  hub::OciRef ref;
  auto client = registry_client(a.reg, &ref);
  if (!client) return report_error(client.error());
  std::string name = a.name.empty() ? default_name(ref) : a.name;
  if (auto st = engine::ImageStore::validate_local_name(name); !st) {
    return report_error(a.name.empty()
                            ? st.error().wrap("the name from " + ref.repository + " (give --name)")
                            : st.error());
  }
  auto work = work_dir(*cfg, "import");
  if (!work) return report_error(work.error());
  hub::ImagePullOptions po;
  po.blob_dir = work->path() + "/blobs";
  po.root_dir = work->path() + "/tree";
  for (const auto& d : {po.blob_dir, po.root_dir}) {
    if (auto st = make_dirs(d, 0700); !st) return report_error(st.error());
  }
  po.progress = stderr_progress();
  po.bytes = byte_progress("import " + ref.to_string());
  auto pulled = hub::pull_image_tree(*client, ref, po);
  if (!pulled) return report_error(pulled.error());
  engine::ImageSource src;
  src.kind = "import";
  src.ref = ref.to_string();
  src.manifest_digest = pulled->manifest_digest;
  src.index_digest = pulled->index_digest;
  engine::ImageStore images(cfg->home, cfg->assets, cfg->agent);
  auto img = images.install_tree(name, po.root_dir, src, stderr_progress());
  if (!img) return report_error(img.error().wrap("import " + ref.to_string()));
  return print_image(*img,
                     {{"ref", src.ref},
                      {"manifest_digest", src.manifest_digest},
                      {"layers", pulled->layers},
                      {"layer_bytes", pulled->layer_bytes},
                      {"entries", pulled->stats.entries},
                      {"whiteouts", pulled->stats.whiteouts}},
                     a.json, ms_since(t0) / 1000, "imported " + src.ref);
}

int do_build(const GlobalOptions& g, const BuildArgs& a) {
  auto t0 = SteadyClock::now();
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  auto recipe = engine::load_recipe(a.recipe);
  if (!recipe) return report_error(recipe.error());
  std::error_code ec;
  if (auto abs = std::filesystem::absolute(a.recipe, ec); !ec) recipe->path = abs.string();
  std::string name = a.name.empty() ? recipe->name : a.name;
  if (auto st = engine::ImageStore::validate_local_name(name); !st) {
    return report_error(st.error());
  }
  engine::ImageStore images(cfg->home, cfg->assets, cfg->agent);
  auto work = work_dir(*cfg, "build");
  if (!work) return report_error(work.error());
  auto built = images.build_recipe(*recipe, name, work->path(), stderr_progress());
  if (!built) return report_error(built.error());
  return print_image(built->image, {{"recipe", recipe->path}, {"cached", built->cached}}, a.json,
                     ms_since(t0) / 1000,
                     (built->cached ? "up to date: " : "built ") + recipe->path);
}

int do_remove(const GlobalOptions& g, const std::string& name, bool json) {
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  engine::ImageStore images(cfg->home, cfg->assets, cfg->agent);
  if (auto st = images.remove_local(name); !st) return report_error(st.error());
  if (json) {
    print_json({{"removed", name}});
  } else {
    std::printf("removed image %s (tags made from it keep working)\n", name.c_str());
  }
  return 0;
}

}  // namespace

void register_image(CLI::App& app, GlobalOptions& g, Action& action) {
  auto* image = app.add_subcommand("image",
                                   "Make guest images: import a container image, build "
                                   "a Debian recipe, remove one");
  image->require_subcommand(1);

  auto ia = std::make_shared<ImportArgs>();
  auto* imp = image->add_subcommand(
      "import", "Pull a container image (OCI or Docker, linux/amd64) and make it a guest image");
  imp->add_option("ref", ia->reg.ref, "HOST[:PORT]/NAME[:TAG|@sha256:...]")->required();
  imp->add_option("--name", ia->name,
                  "Image name (default: the repository's last component, '.' as '-')");
  add_registry_options(imp, &ia->reg);
  imp->add_flag("--json", ia->json, "Print the result as JSON");
  imp->callback([&g, &action, ia] { action = [&g, ia] { return do_import(g, *ia); }; });

  auto ba = std::make_shared<BuildArgs>();
  auto* build = image->add_subcommand(
      "build", "Build a guest image from a recipe (a Debian suite and packages, by debootstrap)");
  build->add_option("recipe", ba->recipe, "Recipe file (see recipes/)")->required();
  build->add_option("--name", ba->name, "Image name (default: the recipe's file name)");
  build->add_flag("--json", ba->json, "Print the result as JSON");
  build->callback([&g, &action, ba] { action = [&g, ba] { return do_build(g, *ba); }; });

  auto rm_name = std::make_shared<std::string>();
  auto rm_json = std::make_shared<bool>(false);
  auto* rm = image->add_subcommand("rm", "Remove a local image (imported or built)");
  rm->add_option("name", *rm_name, "Image name (forkd images lists them)")->required();
  rm->add_flag("--json", *rm_json, "Print the result as JSON");
  rm->callback([&g, &action, rm_name, rm_json] {
    action = [&g, rm_name, rm_json] { return do_remove(g, *rm_name, *rm_json); };
  });
}

}  // namespace forkd::cli

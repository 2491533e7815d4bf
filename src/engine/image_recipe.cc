// ImageStore::build_recipe (image_store.h): a recipe's debootstrap tree made into a local image.
#include <unistd.h>

#include "base/files.h"
#include "base/random.h"
#include "engine/image_store.h"
#include "engine/recipe.h"

namespace forkd::engine {

Result<RecipeBuild> ImageStore::build_recipe(const Recipe& recipe, std::string_view name,
                                             const std::string& work_dir,
                                             const ProgressFn& progress) {
  FORKD_TRY(validate_local_name(name));
  const std::string n(name);
  auto say = [&](const std::string& line) {
    if (progress) progress(line);
  };
  std::string script = assets_ + "/images/recipe-rootfs.sh";
  auto script_sum = sha256_file(script);
  if (!script_sum) return tl::unexpected(script_sum.error().wrap("recipe script"));
  // The tree depends on the recipe and the script; the image also on the agent and kernel.
  std::string tree_hash =
      sha256_hex("recipe=" + sha256_hex(recipe.text) + "\nscript=" + *script_sum + "\n")
          .substr(0, 16);
  auto agent_sum = sha256_file(agent_);
  if (!agent_sum) {
    return make_error(ErrorCode::kNotFound,
                      "guest agent binary " + agent_ + " not found; build it with `make build`");
  }
  auto kh = kernel_hash();
  if (!kh) return tl::unexpected(kh.error());
  std::string inputs =
      sha256_hex("tree=" + tree_hash + "\nagent=" + *agent_sum + "\nkernel=" + *kh + "\n")
          .substr(0, 16);
  nlohmann::json src = local_source(name);
  if (src.is_object() && src.value("kind", "") == "recipe" &&
      src.value("inputs_hash", "") == inputs) {
    auto img = load_local(name, {});
    if (img) return RecipeBuild{*img, true};
  }

  std::string tar = home_ + "/cache/recipe-" + tree_hash + ".tar";
  if (!path_exists(tar)) {
    if (::geteuid() != 0) {
      return make_error(ErrorCode::kUnavailable,
                        "building an image from a recipe needs root "
                        "(debootstrap)");
    }
    FORKD_TRY(check_free_space(home_ + "/cache", 1500, "the recipe build"));
    std::string pkgs;
    for (const auto& p : recipe.packages) pkgs += (pkgs.empty() ? "" : ",") + p;
    // Two builds of one recipe at once each write their own file; the last rename wins.
    std::string staged = tar + ".staging-" + random_hex(6);
    std::vector<std::string> argv = {"bash", script, staged, recipe.suite, recipe.variant, pkgs};
    for (const auto& c : recipe.checks) argv.push_back(c);
    say("image " + n + ": debootstrap " + recipe.suite + " with " +
        std::to_string(recipe.packages.size()) + " packages (a few minutes)");
    auto built = run_script(argv, home_ + "/cache/recipe-" + n + ".log", progress);
    if (built) built = rename_durable(staged, tar);
    if (!built) {
      ::unlink(staged.c_str());
      return tl::unexpected(built.error());
    }
  } else {
    say("image " + n + ": root filesystem from the cache (" + tar + ")");
  }
  std::string tree = work_dir + "/tree";
  FORKD_TRY(make_dirs(tree, 0700));
  // Our own tarball, made by the script above: unpacked as it was packed (owners included).
  FORKD_TRY(run_script({"tar", "-C", tree, "--numeric-owner", "-xf", tar},
                       home_ + "/cache/recipe-" + n + "-unpack.log", {}));
  ImageSource source;
  source.kind = "recipe";
  source.recipe = recipe.path;
  source.inputs_hash = inputs;
  auto img = install_tree(name, tree, source, progress);
  if (!img) return tl::unexpected(img.error());
  return RecipeBuild{*img, false};
}

}  // namespace forkd::engine

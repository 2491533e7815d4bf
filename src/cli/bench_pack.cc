// bench pack: forkd pack/unpack of a tag beside `tar --sparse | zstd -T0` of the same files, in
// one run, with sizes and throughput of the tag's logical size.
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "base/clock.h"
#include "base/subprocess.h"
#include "cli/bench_common.h"
#include "engine/snapshot.h"
#include "hub/pack_file.h"
#include "store/snapshot_store.h"

namespace forkd::cli {

namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct PackBenchArgs {
  std::string tag;  // empty: make an idle python tag in the bench home
  std::string image = "python";
  int memory_mib = 512;
  int runs = 3;
  bool json = false;
};

double mbps_of(uint64_t bytes, double ms) {
  return ms > 0 ? static_cast<double>(bytes) / 1e3 / ms : 0;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

uint64_t file_size(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

// Runs a shell pipeline (fixed text built here from paths of our own temp dirs) and times it.
Result<double> timed_shell(const std::string& script) {
  auto t0 = Clock::now();
  auto r = run_capture({"bash", "-c", "set -o pipefail; " + script}, std::chrono::minutes(10));
  if (!r) return tl::unexpected(r.error());
  if (r->exit_code != 0) return make_error(ErrorCode::kIo, "baseline failed: " + r->output);
  return ms_since(t0);
}

Result<Json> run_pack_bench(const engine::EngineConfig& real, const PackBenchArgs& a) {
  auto home = make_bench_home(real, "forkd-bench-pack");
  if (!home) return tl::unexpected(home.error());
  engine::EngineConfig cfg = real;
  cfg.home = home->path();
  std::string src_home = a.tag.empty() ? cfg.home : real.home;
  std::string tag = a.tag;
  if (tag.empty()) {
    tag = "bench-pack";
    engine::SnapshotOptions so;
    so.tag = tag;
    so.image = a.image;
    so.memory_mib = a.memory_mib;
    if (a.image == "python") so.warmup_eval = {"import numpy"};
    so.progress = stderr_progress();
    auto snap = engine::create_snapshot(cfg, so);
    if (!snap) return tl::unexpected(snap.error().wrap("make the tag to pack"));
  }
  store::SnapshotStore src(src_home);
  auto meta = src.load(tag);
  if (!meta) return tl::unexpected(meta.error());
  std::string tag_dir = src.dir(tag);
  std::string work = cfg.home + "/bench-pack";
  FORKD_TRY(make_dirs(work, 0700));
  std::vector<double> pack_ms, unpack_ms, tar_ms, untar_ms, noimg_ms;
  uint64_t logical = 0, pack_bytes = 0, tar_bytes = 0, noimg_logical = 0, noimg_bytes = 0;
  for (int run = 0; run < a.runs; run++) {
    FORKD_TRY(check_interrupted());
    std::string fpk = work + "/tag.fpk";
    auto p = hub::pack_tag(src, {tag, "", fpk, 0, {}});
    if (!p) return tl::unexpected(p.error());
    pack_ms.push_back(p->ms);
    logical = p->logical_bytes;
    pack_bytes = p->pack_bytes;
    // Unpack into a fresh store each time, as a new host would.
    std::string dst_home = work + "/dst-" + std::to_string(run);
    store::SnapshotStore dst(dst_home);
    auto u = hub::unpack_file(dst, {fpk, "", 0, {}});
    if (!u) return tl::unexpected(u.error());
    unpack_ms.push_back(u->ms);
    FORKD_TRY(remove_tree(dst_home));
    FORKD_TRY(remove_tree(fpk));
    // The same without the image's files (for a host that has the image or a tag of it).
    hub::PackOptions po{tag, "", fpk, 0, {}, true};
    auto n = hub::pack_tag(src, po);
    if (!n) return tl::unexpected(n.error());
    noimg_ms.push_back(n->ms);
    noimg_logical = n->logical_bytes;
    noimg_bytes = n->pack_bytes;
    FORKD_TRY(remove_tree(fpk));

    std::string tzst = work + "/tag.tar.zst", out = work + "/untar";
    auto t = timed_shell("tar --sparse -C '" + tag_dir + "' -cf - . | zstd -q -T0 -3 -o '" + tzst +
                         "' && sync -f '" + tzst + "'");
    if (!t) return tl::unexpected(t.error());
    tar_ms.push_back(*t);
    tar_bytes = file_size(tzst);
    auto x = timed_shell("mkdir -p '" + out + "' && zstd -q -d -c '" + tzst +
                         "' | tar --sparse -C '" + out + "' -xf - && sync -f '" + out + "'");
    if (!x) return tl::unexpected(x.error());
    untar_ms.push_back(*x);
    FORKD_TRY(remove_tree(out));
    FORKD_TRY(remove_tree(tzst));
  }
  auto mbps = [logical](double ms) { return mbps_of(logical, ms); };
  Json j = {{"tag", tag},
            {"runs", a.runs},
            {"logical_bytes", logical},
            {"memory_mib", meta->memory_mib},
            {"forkd",
             {{"pack_bytes", pack_bytes},
              {"ratio", pack_bytes ? static_cast<double>(logical) / pack_bytes : 0},
              {"pack_ms", median(pack_ms)},
              {"unpack_ms", median(unpack_ms)},
              {"pack_mbps", mbps(median(pack_ms))},
              {"unpack_mbps", mbps(median(unpack_ms))}}},
            {"forkd_without_image",
             {{"logical_bytes", noimg_logical},
              {"pack_bytes", noimg_bytes},
              {"ratio", noimg_bytes ? static_cast<double>(noimg_logical) / noimg_bytes : 0},
              {"pack_ms", median(noimg_ms)},
              {"pack_mbps", mbps_of(noimg_logical, median(noimg_ms))}}},
            {"tar_zstd",
             {{"pack_bytes", tar_bytes},
              {"ratio", tar_bytes ? static_cast<double>(logical) / tar_bytes : 0},
              {"pack_ms", median(tar_ms)},
              {"unpack_ms", median(untar_ms)},
              {"pack_mbps", mbps(median(tar_ms))},
              {"unpack_mbps", mbps(median(untar_ms))}}}};
  for (const auto& [role, f] : meta->files) j["files"][role] = f.size;
  return j;
}

void print_human(const Json& j) {
  std::printf("tag %s: %.1f MB of files, median of %d runs\n", j.value("tag", "").c_str(),
              j.value("logical_bytes", 0.0) / 1e6, j.value("runs", 0));
  std::printf("%-22s %10s %8s %10s %10s %12s %12s\n", "", "size MB", "ratio", "pack ms",
              "unpack ms", "pack MB/s", "unpack MB/s");
  for (const char* k : {"forkd", "tar_zstd"}) {
    const Json& r = j[k];
    std::printf("%-22s %10.1f %7.1fx %10.0f %10.0f %12.0f %12.0f\n",
                std::string(k) == "forkd" ? "forkd pack/unpack" : "tar --sparse | zstd",
                r.value("pack_bytes", 0.0) / 1e6, r.value("ratio", 0.0), r.value("pack_ms", 0.0),
                r.value("unpack_ms", 0.0), r.value("pack_mbps", 0.0), r.value("unpack_mbps", 0.0));
  }
  const Json& n = j["forkd_without_image"];
  std::printf("%-22s %10.1f %7.1fx %10.0f %10s %12.0f   (of %.1f MB: the tag without its image)\n",
              "forkd --without-image", n.value("pack_bytes", 0.0) / 1e6, n.value("ratio", 0.0),
              n.value("pack_ms", 0.0), "-", n.value("pack_mbps", 0.0),
              n.value("logical_bytes", 0.0) / 1e6);
}

int do_bench_pack(const GlobalOptions& g, const PackBenchArgs& a) {
  return run_bench_verb(
      g, "pack", a.json, [&](const engine::EngineConfig& cfg) { return run_pack_bench(cfg, a); },
      print_human);
}

}  // namespace

void add_bench_pack(CLI::App& bench, GlobalOptions& g, Action& action) {
  auto a = std::make_shared<PackBenchArgs>();
  auto* sub = bench.add_subcommand(
      "pack", "PACK and UNPACK a tag vs tar --sparse | zstd -T0 of the same files");
  sub->add_option("--tag", a->tag, "Tag to pack (default: a fresh idle python tag)");
  sub->add_option("--image", a->image, "Image of the fresh tag")->capture_default_str();
  sub->add_option("--memory", a->memory_mib, "Memory of the fresh tag in MiB")
      ->check(CLI::Range(64, 65536))
      ->capture_default_str();
  sub->add_option("--runs", a->runs, "Rounds (medians are printed)")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  sub->add_flag("--json", a->json, "Machine-readable output");
  sub->callback([&action, &g, a] { action = [&g, a] { return do_bench_pack(g, *a); }; });
}

}  // namespace forkd::cli

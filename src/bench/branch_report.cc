#include <cstdio>
#include <string>

#include "bench/branch_bench.h"

namespace forkd::bench {

using Json = nlohmann::json;

void print_branch_bench(const Json& r) {
  std::printf("BRANCH of a %s sandbox, %d MiB (%d MiB filled), %d runs per mode, %s\n",
              r["image"].get<std::string>().c_str(), r["memory_mib"].get<int>(),
              r["fill_mib"].get<int>(), r["runs"].get<int>(),
              r["accel"].get<std::string>().c_str());
  if (r.contains("writer")) {
    const auto& w = r["writer"];
    std::printf("guest writer: asked %.1f MiB/s, reached %.1f MiB/s idle%s\n",
                r["dirty_mibps_requested"].get<double>(), w["dirty_mibps_idle"].get<double>(),
                w["reached_requested"].get<bool>() ? "" : " (TCG could not reach the request)");
  }
  std::printf("\n%-26s %9s %9s %9s %11s %10s %10s\n", "ms", "pause p50", "p90", "max", "total p50",
              "vs save", "vs +fsync");
  for (const auto& m : r["modes"]) {
    std::printf("%-26s %9.1f %9.1f %9.1f %11.0f %9.1f%% %9.1f%%\n",
                ("branch " + m["mode"].get<std::string>()).c_str(),
                m["pause_ms"]["median"].get<double>(), m["pause_ms"]["p90"].get<double>(),
                m["pause_ms"]["max"].get<double>(), m["total_ms"]["median"].get<double>(),
                100 * m["pause_p50_over_plain_save_without_fsync_p50"].get<double>(),
                100 * m["pause_p50_over_plain_save_p50"].get<double>());
  }
  // The baseline's two figures come from the same saves: the pause until QEMU completed the
  // stream, and until the file was also fsynced.
  const auto& b = r["plain_save"];
  for (const char* key : {"pause_without_fsync_ms", "pause_ms"}) {
    const auto& p = b[key];
    std::printf("%-26s %9.1f %9.1f %9.1f %11s   (%.0f MiB stream, n=%zu)\n",
                std::string(key) == "pause_ms" ? "plain stop + save + fsync" : "plain stop + save",
                p["median"].get<double>(), p["p90"].get<double>(), p["max"].get<double>(), "-",
                b["stream_mib"].get<double>(), p["n"].get<size_t>());
  }
  for (const auto& m : r["modes"]) {
    std::printf("\n%s series (pause ms, in order):", m["mode"].get<std::string>().c_str());
    for (const auto& p : m["pause_series_ms"]) std::printf(" %.1f", p.get<double>());
    std::printf(
        "\n  max / median = %.2f, later half / earlier half (medians) = %.2f; pause p50 split: "
        "switchover %.1f + resume %.1f",
        m["series_max_over_median"].get<double>(), m["series_late_over_early_median"].get<double>(),
        m["switchover_ms"]["median"].get<double>(), m["resume_ms"]["median"].get<double>());
    if (m.contains("dirty_mibps_during")) {
      std::printf(", writer %.1f MiB/s during the series", m["dirty_mibps_during"].get<double>());
    }
    std::printf("\n");
  }
  std::printf("\nchain spawn (fork of 1, call to ready), ms\n%-6s %-12s %8s %10s %12s\n", "depth",
              "tag", "first", "later p50", "tax per link");
  for (const auto& d : r["chain"]["depths"]) {
    std::printf("%-6d %-12s %8.1f %10.1f %12.1f\n", d["depth"].get<int>(),
                d["tag"].get<std::string>().c_str(), d["first_spawn_ms"].get<double>(),
                d["later_spawn_ms"]["median"].get<double>(), d["per_link_tax_ms"].get<double>());
  }
}

}  // namespace forkd::bench

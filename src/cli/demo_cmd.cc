// forkd demo: the main job. For now: boot the python image, run numpy through exec (cold
// interpreter) and through eval (the warm worker), and print where the time goes.
#include <chrono>
#include <cstdio>
#include <memory>

#include "cli/output.h"
#include "engine/sandbox.h"

namespace forkd::cli {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

int do_demo(const GlobalOptions& g, const std::string& image) {
  auto cfg = make_config(g);
  if (!cfg) return report_error(cfg.error());
  std::printf("== forkd demo: image %s ==\n", image.c_str());
  std::fflush(stdout);
  engine::BootOptions bo;
  bo.image = image;
  bo.memory_mib = 512;
  bo.progress = stderr_progress();
  auto sb = engine::Sandbox::boot(*cfg, bo);
  if (!sb) return report_error(sb.error());
  const auto& t = (*sb)->timings();
  const auto& info = (*sb)->agent_info();
  std::printf("sandbox %s up: agent %s, numpy %s\n", (*sb)->id().c_str(),
              info.value("version", "?").c_str(),
              info["numpy"].is_string() ? info["numpy"].get<std::string>().c_str() : "none");

  const std::string program =
      "import numpy as np; a = np.arange(1, 1001, dtype=np.float64); "
      "print(float((a * a).sum()))";
  engine::ExecOptions eo;
  eo.argv = {"python3", "-c", program};
  auto t_exec = Clock::now();
  auto ex = (*sb)->exec(eo);
  double exec_ms = ms_since(t_exec);
  if (!ex) return report_error(ex.error());
  if (ex->exit_code != 0) {
    std::fprintf(stderr, "forkd: demo exec failed (exit %d): %s\n", ex->exit_code,
                 ex->stderr_data.c_str());
    return kExitError;
  }
  auto t_eval = Clock::now();
  auto ev = (*sb)->eval("float((np.arange(1, 1001, dtype=np.float64) ** 2).sum())");
  double eval_ms = ms_since(t_eval);
  if (!ev) return report_error(ev.error());
  if (ev->error) {
    std::fprintf(stderr, "forkd: demo eval failed:\n%s\n", ev->error->c_str());
    return kExitError;
  }
  auto t_rtt = Clock::now();
  engine::ExecOptions tr;
  tr.argv = {"true"};
  auto rt = (*sb)->exec(tr);
  double rtt_ms = ms_since(t_rtt);
  if (!rt) return report_error(rt.error());

  std::printf("\n%-44s %12s\n", "step", "time (ms)");
  std::printf("%-44s %12.0f\n", "cold boot to agent ping (QEMU + kernel + init)", t.agent_ms);
  std::printf("%-44s %12.0f\n", "  of which QEMU launch", t.launch_ms);
  std::printf("%-44s %12.1f\n", "exec `true` round trip", rtt_ms);
  std::printf("%-44s %12.0f   -> %s", "exec python3 -c 'import numpy; ...' (cold)", exec_ms,
              ex->stdout_data.c_str());
  std::printf("%-44s %12.1f   -> %s\n", "eval in the warm worker (numpy loaded)", eval_ms,
              ev->value.value_or("None").c_str());
  std::printf("\nThe warm worker answered %.0fx faster than a cold interpreter.\n",
              eval_ms > 0 ? exec_ms / eval_ms : 0.0);
  (*sb)->destroy();
  return 0;
}

}  // namespace

void register_demo(CLI::App& app, GlobalOptions& g, Action& action) {
  auto image = std::make_shared<std::string>("python");
  auto* sub = app.add_subcommand("demo", "Boot the python image and show exec vs warm eval");
  sub->add_option("--image", *image, "Image to demo")->capture_default_str();
  sub->callback([&action, &g, image] { action = [&g, image] { return do_demo(g, *image); }; });
}

}  // namespace forkd::cli

#include "cli/output.h"

#include <cstdio>

namespace forkd::cli {

int report_error(const Error& err) {
  std::fprintf(stderr, "forkd: %s\n", err.describe().c_str());
  switch (err.code()) {
    case ErrorCode::kGuestCommandNotFound: return kExitNotFound;
    case ErrorCode::kInvalidArgument: return kExitUsage;
    case ErrorCode::kCancelled: return kExitInterrupted;
    default: return kExitError;
  }
}

Result<engine::EngineConfig> make_config(const GlobalOptions& g) {
  auto cfg = engine::EngineConfig::from_env();
  if (!g.accel.empty() && g.accel != "auto") cfg.accel = g.accel;
  if (g.machine == "pc") {
    cfg.machine = vmm::MachineType::kPc;
  } else if (g.machine == "microvm") {
    cfg.machine = vmm::MachineType::kMicrovm;
  } else if (!g.machine.empty()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "unknown machine type '" + g.machine + "' (use microvm or pc)");
  }
  return cfg;
}

engine::ProgressFn stderr_progress() {
  return [](std::string_view line) {
    std::fprintf(stderr, "forkd: %.*s\n", static_cast<int>(line.size()), line.data());
    std::fflush(stderr);
  };
}

}  // namespace forkd::cli

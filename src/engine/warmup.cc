#include "engine/warmup.h"

namespace forkd::engine {

namespace {
constexpr std::string_view kEvalPrefix = "eval: ";
}

std::vector<std::string> Warmup::to_record() const {
  std::vector<std::string> out = shell;
  for (const auto& e : eval) out.push_back(std::string(kEvalPrefix) + e);
  return out;
}

Warmup Warmup::from_record(const std::vector<std::string>& steps) {
  Warmup w;
  for (const auto& s : steps) {
    if (s.rfind(kEvalPrefix, 0) == 0) {
      w.eval.push_back(s.substr(kEvalPrefix.size()));
    } else {
      w.shell.push_back(s);
    }
  }
  return w;
}

Status run_warmup(Sandbox& sb, const Warmup& w, const ProgressFn& progress) {
  for (size_t i = 0; i < w.shell.size(); ++i) {
    std::string step = "warm-up " + std::to_string(i + 1);
    if (progress) progress(step + ": " + w.shell[i]);
    ExecOptions eo;
    eo.shell = w.shell[i];
    eo.timeout = std::chrono::minutes(30);
    auto r = sb.exec(eo);
    if (!r) return tl::unexpected(r.error().wrap(step));
    if (r->exit_code != 0) {
      std::string tail = r->stderr_data.size() > 500
                             ? r->stderr_data.substr(r->stderr_data.size() - 500)
                             : r->stderr_data;
      return make_error(ErrorCode::kInvalidArgument, step + " (" + w.shell[i] + ") exited " +
                                                         std::to_string(r->exit_code) +
                                                         (tail.empty() ? "" : ": " + tail));
    }
  }
  for (size_t i = 0; i < w.eval.size(); ++i) {
    std::string step = "warm-up eval " + std::to_string(i + 1);
    if (progress) progress(step);
    auto r = sb.eval(w.eval[i], std::chrono::minutes(30));
    if (!r) return tl::unexpected(r.error().wrap(step));
    if (r->error) return make_error(ErrorCode::kInvalidArgument, step + " raised: " + *r->error);
  }
  return {};
}

}  // namespace forkd::engine

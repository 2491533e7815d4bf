#include "engine/warmup.h"

#include "base/log.h"
#include "base/proc_stat.h"
#include "base/quiet.h"

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
  // The guest's journal holds what the boot and the warm-up changed on its disk (file times,
  // new files), committed by the guest's kernel a few seconds later. A snapshot taken before
  // that leaves every child to commit it again: 140 KiB more in each child's disk overlay and
  // the guest kernel's work to write it. Best effort: an image's older agent lacks the op, and
  // a tag made without it is as correct.
  if (progress) progress("syncing the guest's filesystems");
  if (auto st = sb.sync_filesystems(); !st) {
    // The message may come from the guest: bounded, and quoted as JSON (no raw newlines).
    std::string why = Json(st.error().message().substr(0, 300))
                          .dump(-1, ' ', false, Json::error_handler_t::replace);
    logger("snapshot")->warn("event=guest_sync_failed detail={}", why);
  }
  return {};
}

double settle_guest(pid_t qemu_pid, const ProgressFn& progress) {
  if (progress) progress("waiting for the guest to go idle");
  // An idle guest's QEMU costs ~0.1 % of a core; one finishing a call costs milliseconds per
  // tick of its kernel (measured by sampling schedstat every 20 ms after a call: 20 ms busy per
  // 20 ms while it runs, 0 a sample later). 0.5 ms in 100 ms tells the two apart.
  QuietResult r = wait_until_quiet([&] { return process_busy_ns(qemu_pid); }, QuietWait{});
  if (!r.quiet && !r.gone) {
    logger("snapshot")->warn("event=guest_still_busy waited_ms={:.0f}", r.waited_ms);
  }
  return r.waited_ms;
}

}  // namespace forkd::engine

#include "base/proc_stat.h"

#include <dirent.h>
#include <unistd.h>

#include <charconv>
#include <cstring>
#include <limits>
#include <string>

#include "base/files.h"

namespace forkd {

std::optional<ProcStat> parse_proc_stat(std::string_view text) {
  auto close = text.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  const char* p = text.data() + close + 1;
  const char* end = text.data() + text.size();
  auto skip_spaces = [&] {
    while (p < end && *p == ' ') ++p;
  };
  ProcStat s;
  skip_spaces();
  if (p == end) return std::nullopt;
  s.state = *p++;
  // Fields 4 (ppid) to 15 (stime): the 1st to the 12th number after the state.
  uint64_t v[12] = {};
  for (int i = 0; i < 12; ++i) {
    skip_spaces();
    // tpgid (field 8) is -1 for a process without a terminal: a sign is skipped (only ppid,
    // utime and stime are kept, and those are never negative).
    bool negative = p < end && *p == '-';
    if (negative) ++p;
    auto [next, ec] = std::from_chars(p, end, v[i]);
    if (ec != std::errc() || next == p) return std::nullopt;
    p = next;
  }
  s.ppid = static_cast<int64_t>(v[0]);
  s.utime_ticks = v[10];
  s.stime_ticks = v[11];
  return s;
}

std::optional<ProcStat> read_proc_stat(int pid) {
  if (pid <= 0) return std::nullopt;
  auto text = read_file("/proc/" + std::to_string(pid) + "/stat", 4096);
  if (!text) return std::nullopt;
  return parse_proc_stat(*text);
}

std::optional<uint64_t> parse_schedstat_busy_ns(std::string_view text) {
  const char* p = text.data();
  const char* end = p + text.size();
  uint64_t v[2] = {};
  for (uint64_t& x : v) {
    while (p < end && *p == ' ') ++p;
    auto [next, ec] = std::from_chars(p, end, x);
    if (ec != std::errc() || next == p) return std::nullopt;
    p = next;
  }
  if (v[0] > std::numeric_limits<uint64_t>::max() - v[1]) return std::nullopt;
  return v[0] + v[1];
}

std::string thread_dir(int pid, int tid, const std::string& proc) {
  return proc + "/" + (pid == 0 ? std::string("self") : std::to_string(pid)) + "/task/" +
         std::to_string(tid);
}

bool thread_of(int pid, int tid, const std::string& proc) {
  return pid >= 0 && tid > 0 && ::access(thread_dir(pid, tid, proc).c_str(), F_OK) == 0;
}

std::optional<std::vector<int>> process_threads(int pid, const std::string& proc) {
  if (pid <= 0) return std::nullopt;
  DIR* d = ::opendir((proc + "/" + std::to_string(pid) + "/task").c_str());
  if (d == nullptr) return std::nullopt;
  std::vector<int> out;
  while (dirent* e = ::readdir(d)) {
    int tid = 0;
    const char* end = e->d_name + std::strlen(e->d_name);
    auto [next, ec] = std::from_chars(e->d_name, end, tid);
    if (ec != std::errc() || next != end || tid <= 0) continue;
    if (out.size() >= 4096) break;
    out.push_back(tid);
  }
  ::closedir(d);
  return out;
}

std::optional<uint64_t> process_busy_ns(int pid) {
  auto threads = process_threads(pid);
  if (!threads) return std::nullopt;
  uint64_t sum = 0;
  for (int tid : *threads) {
    // A thread that ended since the listing is skipped: its time is gone from the sum either way.
    if (auto text = read_file(thread_dir(pid, tid) + "/schedstat", 256)) {
      if (auto ns = parse_schedstat_busy_ns(*text)) sum += *ns;
    }
  }
  return sum;
}

}  // namespace forkd

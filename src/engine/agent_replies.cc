#include "engine/agent_replies.h"

#include "base/json_get.h"

namespace forkd::engine {

namespace {

using json::get_bool;
using json::get_int;
using json::get_string;
using json::member;

constexpr size_t kMaxFieldText = 64 * 1024;  // error strings, hostnames: never megabytes

tl::unexpected<Error> bad_reply(std::string_view op, std::string_view what) {
  return make_error(ErrorCode::kAgentProtocol, "agent " + std::string(op) +
                                                   " reply: " + std::string(what) +
                                                   " (the guest agent is broken or was replaced)");
}

// A string member, or null/absent as nullopt; any other type is an error (set *ok = false).
std::optional<std::string> nullable_string(const Json& j, std::string_view key, bool* ok) {
  const Json* v = member(j, key);
  if (!v || v->is_null()) return std::nullopt;
  if (!v->is_string()) {
    *ok = false;
    return std::nullopt;
  }
  return v->get_ref<const std::string&>();
}

// An optional short string member (error texts): absent or wrong type reads as fallback.
std::string short_text(const Json& j, std::string_view key, std::string fallback) {
  auto s = get_string(j, key);
  if (!s) return fallback;
  if (s->size() > kMaxFieldText) s->resize(kMaxFieldText);
  return *s;
}

bool valid_type(const std::string& t) {
  return t == "file" || t == "dir" || t == "symlink" || t == "other";
}

}  // namespace

Result<ExecReply> decode_exec_reply(const Json& j) {
  ExecReply r;
  auto code = get_int<int>(j, "exit_code");
  if (!code || *code < -1 || *code > 255 + 128)
    return bad_reply("exec", "exit_code is not an exit code");
  r.exit_code = *code;
  auto timed_out = get_bool(j, "timed_out");
  if (!timed_out) return bad_reply("exec", "timed_out is not a boolean");
  r.timed_out = *timed_out;
  if (member(j, "duration_ms")) {
    auto d = get_int<int64_t>(j, "duration_ms");
    if (!d || *d < 0) return bad_reply("exec", "duration_ms is not a non-negative integer");
    r.duration_ms = *d;
  }
  return r;
}

Result<EvalReply> decode_eval_reply(const Json& j) {
  bool ok = true;
  EvalReply r;
  r.value = nullable_string(j, "value", &ok);
  auto out = nullable_string(j, "stdout", &ok);
  r.stdout_text = out ? *out : "";
  r.error = nullable_string(j, "error", &ok);
  if (!ok) return bad_reply("eval", "value, stdout or error is not a string");
  return r;
}

Result<ResumedReply> decode_resumed_reply(const Json& j) {
  ResumedReply r;
  auto reseeded = get_bool(j, "reseeded");
  auto clock_set = get_bool(j, "clock_set");
  if (!reseeded) return bad_reply("resumed", "reseeded is not a boolean");
  if (!clock_set) return bad_reply("resumed", "clock_set is not a boolean");
  r.reseeded = *reseeded;
  r.clock_set = *clock_set;
  r.reseed_error = short_text(j, "reseed_error", "?");
  r.clock_error = short_text(j, "clock_error", "?");
  r.info = Json::object({{"reseeded", r.reseeded}, {"clock_set", r.clock_set}});
  for (const char* key : {"hostname", "sandbox_id", "epoch"}) {
    if (auto s = get_string(j, key); s && s->size() <= 256) r.info[key] = *s;
  }
  if (auto hs = get_bool(j, "hostname_set")) r.info["hostname_set"] = *hs;
  if (auto p = get_bool(j, "python_reseed_pending")) r.info["python_reseed_pending"] = *p;
  if (auto n = get_bool(j, "network_set")) {
    r.network_set = *n;
    r.network_error = short_text(j, "network_error", "");
    r.info["network_set"] = *n;
    if (auto c = get_bool(j, "network_changed")) r.info["network_changed"] = *c;
  }
  return r;
}

Result<Json> decode_hello_reply(const Json& j) {
  auto pid = get_int<int64_t>(j, "pid");
  if (!pid || *pid <= 0) return bad_reply("hello", "pid is not a positive integer");
  Json out = {{"pid", *pid}};
  bool ok = true;
  for (const char* key : {"version", "hostname", "numpy", "sandbox_id", "epoch"}) {
    if (!member(j, key)) continue;
    auto s = nullable_string(j, key, &ok);
    if (s && s->size() > 256) ok = false;
    out[key] = s ? Json(*s) : Json();
  }
  if (member(j, "python")) {
    auto p = get_bool(j, "python");
    if (!p) ok = false;
    out["python"] = p.value_or(false);
  }
  if (member(j, "uptime_ms")) {
    auto u = get_int<int64_t>(j, "uptime_ms");
    if (!u) ok = false;
    out["uptime_ms"] = u.value_or(0);
  }
  if (!ok) return bad_reply("hello", "a field has the wrong type or size");
  return out;
}

Result<StatReply> decode_stat_reply(const Json& j) {
  StatReply r;
  auto type = get_string(j, "type");
  auto size = get_int<uint64_t>(j, "size");
  auto mode = get_int<uint32_t>(j, "mode");
  auto mtime = get_int<int64_t>(j, "mtime");
  if (!type || !valid_type(*type))
    return bad_reply("file_stat", "type is not file, dir, symlink or other");
  if (!size || !mode || !mtime)
    return bad_reply("file_stat", "size, mode or mtime is not an integer");
  r.type = *type;
  r.size = *size;
  r.mode = *mode;
  r.mtime = *mtime;
  return r;
}

Result<Json> decode_list_reply(const Json& j) {
  const Json* entries = member(j, "entries");
  if (!entries || !entries->is_array()) return bad_reply("file_list", "entries is not an array");
  if (entries->size() > kMaxListEntries) return bad_reply("file_list", "more than 8192 entries");
  Json out = Json::array();
  for (const auto& e : *entries) {
    auto name = get_string(e, "name");
    auto type = get_string(e, "type");
    auto size = get_int<uint64_t>(e, "size");
    auto mode = get_int<uint32_t>(e, "mode");
    auto mtime = get_int<int64_t>(e, "mtime");
    if (!name || name->empty() || name->size() > 4096 || !type || !valid_type(*type) || !size ||
        !mode || !mtime) {
      return bad_reply("file_list", "an entry is not {name, type, size, mode, mtime}");
    }
    out.push_back(
        {{"name", *name}, {"type", *type}, {"size", *size}, {"mode", *mode}, {"mtime", *mtime}});
  }
  return out;
}

Result<ReadReply> decode_read_reply(const Json& j, size_t bin_len, size_t requested) {
  auto eof = get_bool(j, "eof");
  if (!eof) return bad_reply("file_read", "eof is not a boolean");
  if (bin_len > requested) {
    return bad_reply("file_read", "sent " + std::to_string(bin_len) + " bytes for a read of " +
                                      std::to_string(requested));
  }
  return ReadReply{*eof};
}

}  // namespace forkd::engine

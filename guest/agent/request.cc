#include "request.h"

#include <array>
#include <cerrno>
#include <cstring>

namespace forkd::agent {

tl::unexpected<AgentError> errno_agent_error(int err, std::string_view what) {
  std::string msg(what);
  msg += ": ";
  msg += std::strerror(err);
  return agent_error(err == ENOENT ? "not_found" : "io_error", std::move(msg));
}

tl::expected<Request, RequestError> parse_request(std::string_view json, std::string body) {
  Json j = Json::parse(json.begin(), json.end(), nullptr, false);
  if (j.is_discarded()) {
    return tl::unexpected(RequestError{0, {"bad_request", "request is not valid JSON"}});
  }
  if (!j.is_object()) {
    return tl::unexpected(RequestError{0, {"bad_request", "request is not a JSON object"}});
  }
  auto id_it = j.find("id");
  if (id_it == j.end() || !id_it->is_number_unsigned() || id_it->get<uint64_t>() == 0) {
    // A negative or zero id is as good as missing: 0 is reserved for frame-level errors.
    return tl::unexpected(RequestError{0, {"bad_request", "request needs a nonzero u64 \"id\""}});
  }
  Request req;
  req.id = id_it->get<uint64_t>();
  auto op_it = j.find("op");
  if (op_it == j.end() || !op_it->is_string()) {
    return tl::unexpected(RequestError{req.id, {"bad_request", "request needs a string \"op\""}});
  }
  req.op = op_it->get<std::string>();
  req.args = std::move(j);
  req.body = std::move(body);
  return req;
}

bool is_known_op(std::string_view op) {
  static constexpr std::array<std::string_view, 15> kOps = {
      "ping",   "exec",   "eval", "file_write", "file_read", "file_list", "file_stat", "mkdir",
      "remove", "rename", "sync", "resumed",    "hello",     "heartbeat", "signal"};
  for (auto known : kOps) {
    if (op == known) return true;
  }
  return false;
}

namespace {

const Json* find_field(const Json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

}  // namespace

AgentResult<std::string> get_string(const Json& obj, const char* key) {
  const Json* v = find_field(obj, key);
  if (v == nullptr) return bad_request(std::string("missing field \"") + key + "\"");
  if (!v->is_string()) return bad_request(std::string("field \"") + key + "\" must be a string");
  return v->get<std::string>();
}

AgentResult<bool> get_bool(const Json& obj, const char* key, bool def) {
  const Json* v = find_field(obj, key);
  if (v == nullptr) return def;
  if (!v->is_boolean()) return bad_request(std::string("field \"") + key + "\" must be a bool");
  return v->get<bool>();
}

AgentResult<uint64_t> get_u64(const Json& obj, const char* key, uint64_t def, uint64_t max) {
  const Json* v = find_field(obj, key);
  if (v == nullptr) return def;
  // Parsed text gives number_unsigned for non-negative integers; a value built in memory may be
  // number_integer, so accept that too when it is not negative.
  const bool non_negative =
      v->is_number_unsigned() || (v->is_number_integer() && v->get<int64_t>() >= 0);
  if (!non_negative) {
    return bad_request(std::string("field \"") + key + "\" must be an unsigned integer");
  }
  uint64_t n = v->get<uint64_t>();
  if (n > max) {
    return bad_request(std::string("field \"") + key + "\" exceeds " + std::to_string(max));
  }
  return n;
}

AgentStatus check_path(std::string_view path, std::string_view what) {
  if (path.empty()) return bad_request(std::string(what) + " is empty");
  if (path.size() > kMaxPathLen) return bad_request(std::string(what) + " is too long");
  if (path.find('\0') != std::string_view::npos) {
    return bad_request(std::string(what) + " contains a NUL byte");
  }
  return {};
}

AgentResult<std::string> get_path(const Json& obj, const char* key) {
  auto s = get_string(obj, key);
  if (!s) return s;
  if (auto ok = check_path(*s, std::string("field \"") + key + "\""); !ok) {
    return tl::unexpected(ok.error());
  }
  return s;
}

std::string to_wire(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Json ok_reply(uint64_t id, const Json& result) {
  Json r = Json::object();
  r["id"] = id;
  r["ok"] = true;
  if (result.is_object()) {
    for (auto it = result.begin(); it != result.end(); ++it) {
      if (it.key() != "id" && it.key() != "ok") r[it.key()] = it.value();
    }
  }
  return r;
}

Json error_reply(uint64_t id, const AgentError& err) {
  return Json{
      {"id", id}, {"ok", false}, {"error", Json{{"code", err.code}, {"message", err.message}}}};
}

}  // namespace forkd::agent

#include "cli/remote_client.h"

#include <httplib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>

#include "base/json_get.h"

namespace forkd::cli {

namespace {

using Json = nlohmann::json;

bool starts_with(const std::string& s, std::string_view p) { return s.rfind(p, 0) == 0; }

// The code whose stable name is name, if any.
std::optional<ErrorCode> code_from_name(std::string_view name) {
  for (int i = 0; i <= static_cast<int>(ErrorCode::kNoPython); ++i) {
    auto c = static_cast<ErrorCode>(i);
    if (error_code_name(c) == name) return c;
  }
  return std::nullopt;
}

}  // namespace

Error http_error(int status, const std::string& body) {
  Json j = json::parse_untrusted(body);
  std::string msg = "HTTP " + std::to_string(status);
  if (j.is_object()) {
    if (auto e = j.find("error"); e != j.end() && e->is_string()) msg = e->get<std::string>();
  }
  if (status == 401) {
    return Error(ErrorCode::kInvalidArgument, "unauthorized: set FORKD_TOKEN (" + msg + ")");
  }
  if (j.is_object()) {
    if (auto c = j.find("code"); c != j.end() && c->is_string()) {
      if (auto code = code_from_name(c->get<std::string>())) return Error(*code, msg);
    }
  }
  ErrorCode code = ErrorCode::kInternal;
  if (status == 404) {
    code = ErrorCode::kNotFound;
  } else if (status == 400) {
    code = ErrorCode::kInvalidArgument;
  } else if (status == 409) {
    code = ErrorCode::kAlreadyExists;
  } else if (status >= 500) {
    code = ErrorCode::kUnavailable;
  }
  return Error(code, msg);
}

Result<RemoteClient> RemoteClient::create(const std::string& url, std::string token,
                                          std::string ca_file) {
  RemoteClient c;
  c.url_ = url;
  c.token_ = std::move(token);
  if (!ca_file.empty() && ::access(ca_file.c_str(), R_OK) != 0) {
    return errno_error(errno, "FORKD_CA_CERT " + ca_file);
  }
  c.ca_file_ = std::move(ca_file);
  if (starts_with(url, "unix://")) {
    c.unix_socket_ = true;
    c.base_ = url.substr(7);
    if (c.base_.empty() || c.base_[0] != '/') {
      return make_error(ErrorCode::kInvalidArgument,
                        "--url " + url + ": want unix:///absolute/path.sock");
    }
    return c;
  }
  size_t scheme_end = url.find("://");
  std::string scheme = scheme_end == std::string::npos ? "" : url.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https") {
    return make_error(
        ErrorCode::kInvalidArgument,
        "--url " + url + ": want http://HOST:PORT, https://HOST:PORT or unix:///PATH");
  }
  std::string rest = url.substr(scheme_end + 3);
  size_t slash = rest.find('/');
  if (slash != std::string::npos) {
    if (rest.substr(slash) != "/") {
      return make_error(ErrorCode::kInvalidArgument,
                        "--url " + url + ": give the daemon's root, without a path");
    }
    rest.resize(slash);
  }
  if (rest.empty()) return make_error(ErrorCode::kInvalidArgument, "--url " + url + ": no host");
  c.base_ = scheme + "://" + rest;
  return c;
}

Result<Json> RemoteClient::get(const std::string& path) const {
  return request("GET", path, nullptr);
}

Result<Json> RemoteClient::post(const std::string& path, const Json& body) const {
  return request("POST", path, &body);
}

Status RemoteClient::del(const std::string& path) const {
  auto r = request("DELETE", path, nullptr);
  if (!r) return tl::unexpected(r.error());
  return {};
}

Result<std::string> RemoteClient::get_bytes(const std::string& path, size_t max_bytes) const {
  return raw_request("GET", path, nullptr, "", max_bytes);
}

Result<Json> RemoteClient::put_bytes(const std::string& path, const std::string& bytes) const {
  auto r = raw_request("PUT", path, &bytes, "application/octet-stream", 1 << 20);
  if (!r) return tl::unexpected(r.error());
  Json j = json::parse_untrusted(*r);
  if (j.is_discarded()) {
    return make_error(ErrorCode::kProtocol, "PUT " + path + ": daemon answered non-JSON");
  }
  return j;
}

Result<Json> RemoteClient::request(const std::string& method, const std::string& path,
                                   const Json* body) const {
  std::string text;
  if (body) text = body->dump(-1, ' ', false, Json::error_handler_t::replace);
  auto r =
      raw_request(method, path, method == "POST" ? &text : nullptr, "application/json", 256u << 20);
  if (!r) return tl::unexpected(r.error());
  if (r->empty()) return Json();
  Json j = json::parse_untrusted(*r);
  if (j.is_discarded()) {
    return make_error(ErrorCode::kProtocol, method + " " + path + ": daemon answered non-JSON");
  }
  return j;
}

Result<std::string> RemoteClient::raw_request(const std::string& method, const std::string& path,
                                              const std::string* body,
                                              const std::string& content_type,
                                              size_t max_bytes) const {
  std::unique_ptr<httplib::Client> cli;
  if (unix_socket_) {
    cli = std::make_unique<httplib::Client>(base_, 80);
    cli->set_address_family(AF_UNIX);
  } else {
    cli = std::make_unique<httplib::Client>(base_);
  }
  if (!cli->is_valid()) {
    return make_error(ErrorCode::kInvalidArgument, "--url " + url_ + ": not a usable address");
  }
  cli->set_connection_timeout(10, 0);
  // Snapshot creation boots a VM and exec may run long: the daemon bounds the work itself.
  cli->set_read_timeout(3600, 0);
  cli->set_write_timeout(60, 0);
  if (!token_.empty()) cli->set_bearer_token_auth(token_);
  if (!ca_file_.empty()) cli->set_ca_cert_path(ca_file_.c_str());
  cli->enable_server_certificate_verification(true);
  std::string received;
  bool too_large = false;
  int status = 0;
  auto keep = [&](const char* data, size_t len) {
    if (received.size() + len > max_bytes) {
      too_large = true;
      return false;
    }
    received.append(data, len);
    return true;
  };
  auto on_response = [&](const httplib::Response& resp) {
    status = resp.status;
    return true;
  };
  httplib::Result r = method == "GET" ? cli->Get(path, httplib::Headers{}, on_response, keep)
                      : method == "POST"
                          ? cli->Post(path, body ? *body : std::string(), content_type)
                      : method == "PUT" ? cli->Put(path, body ? *body : std::string(), content_type)
                                        : cli->Delete(path);
  if (too_large) {
    return make_error(ErrorCode::kInvalidArgument, method + " " + path + ": answer larger than " +
                                                       std::to_string(max_bytes) + " bytes");
  }
  if (!r) {
    std::string why = httplib::to_string(r.error());
    if (r.error() == httplib::Error::Connection) {
      why = "connection failed (is `forkd serve` running there?)";
    } else if (r.error() == httplib::Error::SSLServerVerification) {
      why = "TLS certificate not trusted (set FORKD_CA_CERT to the daemon's CA or certificate)";
    } else if (r.error() == httplib::Error::SSLConnection) {
      why = "TLS handshake failed (is the daemon serving https?)";
    }
    return make_error(ErrorCode::kUnavailable, "cannot reach forkd daemon at " + url_ + ": " + why);
  }
  if (method != "GET") {
    status = r->status;
    received = r->body;
  }
  if (status < 200 || status >= 300) {
    return tl::unexpected(http_error(status, received).wrap(method + " " + path));
  }
  return received;
}

std::string url_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '/') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

}  // namespace forkd::cli

#pragma once
// A small client of the forkd REST API v1 (shared/reference/forkd-rest-v1.md), for CLI client
// mode (`forkd --url URL VERB`). JSON in and out; HTTP errors become forkd::Error values.
#include <nlohmann/json.hpp>
#include <string>

#include "base/error.h"

namespace forkd::cli {

class RemoteClient {
 public:
  // url: http://host:port, https://host:port or unix:///path/to.sock (a trailing "/" is allowed,
  // other paths are refused). token: sent as "Authorization: Bearer <token>" when non-empty.
  // ca_file: for https, a PEM file of the CA (or self-signed certificate) to trust instead of the
  // system store; it must be readable. The server's certificate and host name are always checked.
  static Result<RemoteClient> create(const std::string& url, std::string token,
                                     std::string ca_file = {});

  Result<nlohmann::json> get(const std::string& path) const;
  Result<nlohmann::json> post(const std::string& path, const nlohmann::json& body) const;
  Status del(const std::string& path) const;
  // A raw body both ways (the file routes): GET refusing more than max_bytes, PUT of bytes.
  Result<std::string> get_bytes(const std::string& path, size_t max_bytes) const;
  Result<nlohmann::json> put_bytes(const std::string& path, const std::string& bytes) const;

  const std::string& url() const { return url_; }

 private:
  RemoteClient() = default;
  Result<nlohmann::json> request(const std::string& method, const std::string& path,
                                 const nlohmann::json* body) const;
  // The answer's body (2xx), else the error. body null: none.
  Result<std::string> raw_request(const std::string& method, const std::string& path,
                                  const std::string* body, const std::string& content_type,
                                  size_t max_bytes) const;

  std::string url_;   // as given, for messages
  std::string base_;  // scheme://host:port for httplib, or the socket path
  bool unix_socket_ = false;
  std::string token_;
  std::string ca_file_;  // empty: the system's CA store
};

// The error for a non-2xx answer: the body's `code` when it names one of ours, else by status
// (404 not_found, 400 invalid_argument, 401 "unauthorized", 409 already_exists, 5xx unavailable).
Error http_error(int status, const std::string& body);

// s with every byte outside [A-Za-z0-9-._~/] percent-encoded (a query parameter's value).
std::string url_encode(std::string_view s);

}  // namespace forkd::cli

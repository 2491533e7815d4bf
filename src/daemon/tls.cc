#include "daemon/tls.h"

#include <openssl/err.h>
#include <unistd.h>

#include <cerrno>

namespace forkd::daemon {

namespace {

// The oldest queued OpenSSL error as text, and the queue emptied (it is per thread).
std::string openssl_reason() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof buf);
  return buf;
}

// Readability first, so a missing file reads as "No such file or directory" and not as an
// OpenSSL code.
Status check_readable(const std::string& flag, const std::string& path) {
  if (::access(path.c_str(), R_OK) != 0) return errno_error(errno, flag + " " + path);
  return {};
}

}  // namespace

Status configure_tls(SSL_CTX& ctx, const std::string& cert_file, const std::string& key_file) {
  FORKD_TRY(check_readable("--tls-cert", cert_file));
  FORKD_TRY(check_readable("--tls-key", key_file));
  ERR_clear_error();
  // An encrypted key would otherwise make OpenSSL prompt on the terminal: refuse it instead.
  SSL_CTX_set_default_passwd_cb(&ctx, [](char*, int, int, void*) { return 0; });
  SSL_CTX_set_options(&ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION);
  if (SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION) != 1) {
    return make_error(ErrorCode::kInternal, "TLS: cannot require TLS 1.2: " + openssl_reason());
  }
  if (SSL_CTX_use_certificate_chain_file(&ctx, cert_file.c_str()) != 1) {
    return make_error(
        ErrorCode::kInvalidArgument,
        "--tls-cert " + cert_file + ": not a usable PEM certificate (" + openssl_reason() + ")");
  }
  if (SSL_CTX_use_PrivateKey_file(&ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return make_error(ErrorCode::kInvalidArgument,
                      "--tls-key " + key_file + ": not a usable unencrypted PEM private key (" +
                          openssl_reason() + ")");
  }
  if (SSL_CTX_check_private_key(&ctx) != 1) {
    return make_error(ErrorCode::kInvalidArgument, "--tls-key " + key_file +
                                                       " does not match the certificate in " +
                                                       cert_file + " (" + openssl_reason() + ")");
  }
  return {};
}

}  // namespace forkd::daemon

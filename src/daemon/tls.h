#pragma once
// TLS for the daemon's TCP listener: loads a PEM certificate chain and private key into an
// OpenSSL context, with errors that name the file at fault. The unix socket stays plain HTTP.
#include <openssl/ssl.h>

#include <string>

#include "base/error.h"

namespace forkd::daemon {

// Configures ctx (TLS 1.2 or newer, no compression) to serve cert_file (PEM, leaf first, then
// intermediates) with key_file (PEM, unencrypted). kInvalidArgument naming the file when one is
// unreadable, not PEM, or the key does not match the certificate. Not thread-safe on ctx.
Status configure_tls(SSL_CTX& ctx, const std::string& cert_file, const std::string& key_file);

}  // namespace forkd::daemon

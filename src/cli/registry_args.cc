#include "cli/registry_args.h"

#include "hub/oci_tag.h"

namespace forkd::cli {

void add_registry_options(CLI::App* sub, RegistryArgs* r) {
  sub->add_flag("--plain-http", r->plain_http,
                "Plain HTTP even for a registry that is not on loopback (loopback always is)");
  sub->add_option("--ca-file", r->ca_file, "PEM CA bundle for the registry's HTTPS");
  sub->add_option("--auth-file", r->auth_file,
                  "Docker-style config.json with the registry's credentials (also "
                  "$FORKD_REGISTRY_AUTH_FILE; or $FORKD_REGISTRY_USER + $FORKD_REGISTRY_PASSWORD)");
}

Result<hub::RegistryClient> registry_client(const RegistryArgs& r, hub::OciRef* ref) {
  return hub::open_registry(r.ref, r.plain_http, r.ca_file, r.auth_file, ref);
}

}  // namespace forkd::cli

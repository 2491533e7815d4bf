#include "cli/registry_args.h"

#include "hub/registry_auth.h"

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
  auto parsed = hub::parse_oci_ref(r.ref);
  if (!parsed) return tl::unexpected(parsed.error());
  *ref = *parsed;
  auto creds = hub::load_credentials(ref->registry_address(), r.auth_file);
  if (!creds) return tl::unexpected(creds.error());
  hub::RegistryClientOptions o;
  o.endpoint = hub::registry_endpoint(*ref, r.plain_http);
  o.repository = ref->repository;
  o.credentials = *creds;
  o.ca_file = r.ca_file;
  return hub::RegistryClient::create(std::move(o));
}

}  // namespace forkd::cli

#pragma once
// The registry options every verb that talks to an OCI registry shares (push, pull, image
// import): a reference plus --plain-http, --ca-file and --auth-file, made into a client.
#include <CLI/CLI.hpp>
#include <string>

#include "base/error.h"
#include "hub/oci_ref.h"
#include "hub/registry_client.h"

namespace forkd::cli {

struct RegistryArgs {
  std::string ref;
  bool plain_http = false;
  std::string ca_file;
  std::string auth_file;
};

// Adds --plain-http, --ca-file and --auth-file to sub (the reference is the verb's own).
void add_registry_options(CLI::App* sub, RegistryArgs* r);

// Parses r.ref into *ref and builds a client of its repository with the credentials found for
// its registry (--auth-file, $FORKD_REGISTRY_AUTH_FILE, $FORKD_REGISTRY_USER/PASSWORD).
Result<hub::RegistryClient> registry_client(const RegistryArgs& r, hub::OciRef* ref);

}  // namespace forkd::cli

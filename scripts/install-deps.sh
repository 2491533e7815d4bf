#!/usr/bin/env bash
# Installs every build and runtime dependency of forkd with apt-get. Idempotent: packages already
# present are skipped, and apt-get update runs only when something is missing.
set -euo pipefail

PKGS=(
  # toolchain
  build-essential cmake pkg-config g++ clang libclang-rt-14-dev
  # C++ libraries (see STYLE.md)
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libexpected-dev libcpp-httplib-dev
  libgtest-dev libgmock-dev libbenchmark-dev libssl-dev libxxhash-dev libzstd-dev libarchive-dev
  # the openssl CLI: certificates for the HTTPS test (tests/integration/daemon_tls_test.cc)
  openssl
  # VMM and guest images
  qemu-system-x86 qemu-utils busybox-static debootstrap cpio gzip e2fsprogs
  # guest kernel build
  linux-source-6.1 bc bison flex libelf-dev dwarves xz-utils kmod
  # benchmark charts, JSON in scripts
  python3 python3-matplotlib jq
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  SUDO=sudo
else
  SUDO=
fi
echo "install-deps: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-deps: done"

#!/usr/bin/env bash
# Installs every build and runtime dependency of forkd with apt-get. Idempotent: packages already
# present are skipped, and apt-get update runs only when something is missing.
# usage: install-deps.sh            everything
#        install-deps.sh --kernel   only what the guest kernel build needs (scripts/demo.sh
#                                   starts that build while it installs the rest)
#        install-deps.sh --demo     everything but what only the tests and benchmarks use
#                                   (make demo; make test and make bench install the rest)
set -euo pipefail

# The guest kernel build (guest/kernel/build.sh), toolchain included.
KERNEL_PKGS=(build-essential linux-source-6.1 bc bison flex libelf-dev dwarves xz-utils kmod)
PKGS=(
  # toolchain (build-essential: KERNEL_PKGS)
  cmake pkg-config g++ clang libclang-rt-14-dev
  # C++ libraries (see STYLE.md)
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libexpected-dev libcpp-httplib-dev
  libgtest-dev libgmock-dev libbenchmark-dev libssl-dev libxxhash-dev libzstd-dev libarchive-dev
  # the openssl CLI: certificates for the HTTPS test (tests/integration/daemon_tls_test.cc)
  openssl
  # VMM and guest images
  qemu-system-x86 qemu-utils busybox-static debootstrap cpio gzip e2fsprogs
  # per_child_netns: a network namespace, veth, tap and nftables rules per child
  iproute2 nftables
  # JSON in scripts; the Python SDK's install check (venv, setuptools)
  python3 jq python3-venv python3-setuptools python3-wheel python3-pip
)
# Only the tests and benchmarks use these: the hub tests' OCI registry (the reference
# distribution registry, on loopback only) and the benchmark charts (matplotlib brings scipy
# and the boost headers: most of a fresh machine's download).
TEST_PKGS=(docker-registry python3-matplotlib)
# forkd's static QEMU build (scripts/build-qemu-static.sh; make test and make bench build it),
# with meson 1.5+ and pycotap below; patch applies forkd's changes to its source.
TEST_PKGS+=(libglib2.0-dev libseccomp-dev libfdt-dev zlib1g-dev ninja-build curl xz-utils patch)
# The TypeScript SDK's tests and example need Node.js 20 or newer with npm. Debian 12's own
# nodejs is 18: take it only when there is no node at all (a newer one, e.g. NodeSource's, is
# kept; it bundles npm, which Debian's npm package would conflict with).
if ! command -v node >/dev/null; then
  TEST_PKGS+=(nodejs npm)
fi
kernel_only=0
full=0
case ${1:-} in
  --kernel)
    kernel_only=1
    PKGS=("${KERNEL_PKGS[@]}")
    ;;
  --demo) PKGS=("${KERNEL_PKGS[@]}" "${PKGS[@]}") ;;
  "")
    full=1
    PKGS=("${KERNEL_PKGS[@]}" "${PKGS[@]}" "${TEST_PKGS[@]}")
    ;;
  *)
    echo "usage: install-deps.sh [--kernel | --demo]" >&2
    exit 2
    ;;
esac

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ $(id -u) -ne 0 ]]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive

# QEMU 8.2 or newer: the jail needs a QEMU that maps a read-only tag copy-on-write
# (memory-backend-file readonly=on,rom=off), which Debian 12's 7.2 cannot. On Debian 12 this is
# QEMU 10 from bookworm-backports; only the QEMU packages and the newer SeaBIOS they need come
# from there, nothing else. It goes into the same apt-get install as the rest, so a fresh machine
# does not first install 7.2 and then replace it.
qemu_major_minor() {
  qemu-system-x86_64 --version 2>/dev/null | sed -n 's/.*version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -1
}
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
add_backports_list() {
  local list=/etc/apt/sources.list.d/forkd-backports.list
  if [[ ! -f $list ]]; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee "$list" >/dev/null
  fi
}
backports=0
if ((!kernel_only)); then
  read -r qmaj qmin <<<"$(qemu_major_minor)"
  if [[ -z ${qmaj:-} ]] || ((qmaj < 8 || (qmaj == 8 && qmin < 2))); then
    if [[ $codename == bookworm ]]; then
      backports=1
      add_backports_list
      kept=()
      for p in "${missing[@]}"; do
        [[ $p == qemu-system-x86 ]] || kept+=("$p")
      done
      # SeaBIOS named too: apt takes a dependency from backports on its own only when upgrading
      # an installed one, and QEMU 10 needs SeaBIOS 1.16.3 (bookworm has 1.16.2).
      missing=("${kept[@]}" qemu-system-x86/bookworm-backports
        qemu-system-common/bookworm-backports qemu-system-data/bookworm-backports
        seabios/bookworm-backports)
      echo "install-deps: QEMU 10 comes from bookworm-backports (the jail needs 8.2+)"
    else
      echo "install-deps: warning: QEMU ${qmaj:-?}.${qmin:-?} is older than 8.2; forkd runs QEMU" \
        "unjailed (see forkd doctor)" >&2
    fi
  fi
fi

# The static QEMU build's configure needs meson 1.5 or newer and pycotap; Debian 12 has them in
# bookworm-backports only (meson 1.0 in bookworm itself).
if ((full)); then
  from=
  [[ $codename == bookworm ]] && from=/bookworm-backports
  meson_version=$(meson --version 2>/dev/null || true)
  if [[ -z $meson_version || $(printf '%s\n1.5.0\n' "$meson_version" | sort -V | head -1) != 1.5.0 ]]; then
    missing+=("meson$from")
  fi
  if ! dpkg-query -W -f='${Status}' python3-pycotap 2>/dev/null | grep -q "install ok installed"; then
    missing+=("python3-pycotap$from")
  fi
  [[ -n $from && " ${missing[*]} " == *"$from "* ]] && add_backports_list
fi

# apt-get update, retried while another apt or dpkg holds the lists' lock (a fresh cloud machine's
# unattended-upgrades often does in its first minutes), for 10 minutes at most; `install`
# waits for dpkg's lock itself (DPkg::Lock::Timeout) and says so. The first try's output shows
# as it comes; a retry's only once it got past the lock, so waiting prints one message, not
# apt's lock error every 5 s.
apt_update() {
  local out i rc=1
  out=$(mktemp)
  for ((i = 0; i < 120; i++)); do
    if ((i == 0)); then
      $SUDO apt-get update -q 2>&1 | tee "$out" && rc=0
    else
      $SUDO apt-get update -q >"$out" 2>&1 && rc=0
    fi
    if ((rc == 0)) || ! grep -q 'Could not get lock' "$out"; then
      ((i == 0)) || cat "$out"
      break
    fi
    ((i == 0)) && echo "install-deps: another apt-get or dpkg holds apt's lock; waiting (10 min at most)"
    sleep 5
  done
  ((rc == 0 || i < 120)) ||
    echo "install-deps: apt's lock was still held after 10 minutes; try again once the other apt-get is done" >&2
  rm -f "$out"
  return "$rc"
}

if ((${#missing[@]} > 0)); then
  echo "install-deps: installing ${#missing[@]} packages: ${missing[*]}"
  apt_update
  $SUDO apt-get install -o DPkg::Lock::Timeout=600 -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#PKGS[@]} packages present"
fi
((kernel_only)) && exit 0
if ((backports)); then
  read -r qmaj qmin <<<"$(qemu_major_minor)"
  if [[ -z ${qmaj:-} ]] || ((qmaj < 8 || (qmaj == 8 && qmin < 2))); then
    echo "install-deps: QEMU from bookworm-backports did not install (qemu-system-x86_64" \
      "reports ${qmaj:-nothing}.${qmin:-}); see the apt-get output above" >&2
    exit 1
  fi
fi

# The jail's group and system user (forkd also creates it at first use as root).
if ! getent group forkd-qemu >/dev/null; then
  if [[ $(id -u) -eq 0 ]] || command -v sudo >/dev/null; then
    $SUDO useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin forkd-qemu
    echo "install-deps: created the system user forkd-qemu (the QEMU jail's group)"
  fi
fi
# docker-registry's own service (all interfaces, port 5000) is not wanted: the hub tests start a
# private registry on loopback. Where the package's install started it, stop it.
if pgrep -f 'docker-registry serve /etc/docker/registry/config.yml' >/dev/null 2>&1; then
  $SUDO invoke-rc.d docker-registry stop >/dev/null 2>&1 ||
    $SUDO pkill -f 'docker-registry serve /etc/docker/registry/config.yml' || true
  echo "install-deps: stopped the docker-registry service the package started"
fi
echo "install-deps: done"

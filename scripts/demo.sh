#!/usr/bin/env bash
# `make demo`: installs what is missing, builds what the tour needs, then runs it (forkd demo).
# On a fresh machine most of the time is the guest kernel build (CPU) and the python rootfs
# (debootstrap: network and disk); neither needs the forkd binary, so they run beside the C++
# build instead of inside `forkd demo`, and the terminal says what is happening and about how
# long is left:
#   1. the packages the kernel build needs, then the kernel build starts (guest/prebuild.sh)
#   2. the other packages but the tests' and benchmarks' (install-deps.sh --demo), then the
#      python rootfs starts (as root; debootstrap needs it)
#   3. the C++ build of forkd and forkd-agent only (`make build` builds the tests and fuzzers)
#   4. once 1 and 2 are done: the tour, which finds both in the cache and uses them
# Logs go to $BUILD/logs. A failure or Ctrl-C stops every build this script started.
# Environment (from the Makefile): BUILD (build dir), JOBS, CMAKE_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
JOBS=${JOBS:-$(nproc)}
CMAKE_ARGS=${CMAKE_ARGS:--DCMAKE_BUILD_TYPE=RelWithDebInfo}
logs=$BUILD/logs
mkdir -p "$logs"
t0=$SECONDS
tty=0
[[ -t 1 ]] && tty=1

# Background jobs: name -> pid (each the leader of its own process group, so that stopping it
# stops the compilers and debootstrap under it), and the log each writes.
declare -A pid=() log=() started=()
cleanup() {
  local n i
  for n in "${!pid[@]}"; do
    kill -TERM -- "-${pid[$n]}" 2>/dev/null || true
  done
  # Until every process of theirs is gone: the builds remove their work dirs on the way out, and
  # removing the kernel's unpacked source (~80,000 files) took about a minute on a slow host, so
  # a shorter bound killed the `rm` and left 0.8-1.5 GB in the temporary directory.
  for n in "${!pid[@]}"; do
    wait "${pid[$n]}" 2>/dev/null || true
    for ((i = 0; i < 600; i++)); do
      kill -0 -- "-${pid[$n]}" 2>/dev/null || break
      ((i == 4)) && echo "demo: waiting for the $n build to remove its work files (a minute or two)"
      sleep 0.5
    done
    kill -KILL -- "-${pid[$n]}" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted; stopping the builds it started"; exit 130' INT TERM

mmss() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
say() {
  ((tty)) && printf '\r\033[K'
  echo "demo [$(mmss $((SECONDS - t0)))] $*"
}

# start NAME LOG CMD...: runs CMD in the background in its own session.
start() {
  local name=$1
  log[$name]=$2
  shift 2
  setsid "$@" >"${log[$name]}" 2>&1 </dev/null &
  pid[$name]=$!
  started[$name]=$SECONDS
}

# The kernel's time left from its recent rate (scripts/lib/kernel-eta.sh).
# shellcheck source=scripts/lib/kernel-eta.sh
source scripts/lib/kernel-eta.sh

# What a job is doing, for the status line, from the last progress line of its log.
kernel_status() {
  local last pace=""
  last=$(grep -E '^\[kernel |^prebuild.sh' "${log[kernel]}" 2>/dev/null | tail -n 1) || true
  case $last in
    *"[kernel 4/4]"*) echo "kernel: done" ;;
    *"compiling: "*)
      [[ -n ${pid[cxx]:-}${pid[rootfs]:-} ]] && pace=" at this pace"
      if [[ $last =~ compiling:\ ([0-9]+)%.*about\ ([0-9]+)\ min ]]; then
        echo "kernel ${BASH_REMATCH[1]}%, ~$(kernel_left "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}") min left$pace"
      else
        echo "kernel: compiling"
      fi
      ;;
    *"[kernel 3/4]"*) echo "kernel: compiling, ~10 min left" ;;
    *"[kernel 2/4]"*) echo "kernel: configuring" ;;
    *"[kernel 1/4]"*) echo "kernel: unpacking the source" ;;
    *waiting*) echo "kernel: waiting for another build" ;;
    *) echo "kernel: starting" ;;
  esac
}
rootfs_status() {
  local last el
  last=$(grep -E '^\[python |^I: |^prebuild.sh' "${log[rootfs]}" 2>/dev/null | tail -n 1) || true
  el=$((SECONDS - started[rootfs]))
  case $last in
    *"[python 3/3]"*) echo "python rootfs: packing" ;;
    *"[python 2/3]"*) echo "python rootfs: trimming" ;;
    "I: Configuring"* | "I: Base system"*) echo "python rootfs: configuring packages" ;;
    "I: Extracting"* | "I: Unpacking"* | "I: Installing"*) echo "python rootfs: unpacking packages" ;;
    *) echo "python rootfs: downloading packages ($(mmss "$el") so far, usually 2-4 min)" ;;
  esac
}
cxx_status() {
  local pct el
  pct=$(grep -oE '^\[ *[0-9]+%\]' "${log[cxx]}" 2>/dev/null | tail -n 1 | tr -dc '0-9') || true
  el=$((SECONDS - started[cxx]))
  if [[ -z $pct ]]; then
    echo "forkd: configuring"
  elif ((pct < 5 || el < 20)); then
    echo "forkd ${pct}%"
  else
    echo "forkd ${pct}%, ~$(((el * (100 - pct) / pct + 59) / 60)) min left"
  fi
}
status_line() {
  local parts=() n
  for n in kernel rootfs cxx; do
    [[ -n ${pid[$n]:-} ]] && parts+=("$("${n}_status")")
  done
  local line
  line=$(printf '%s | ' "${parts[@]}")
  echo "${line% | }"
}

# finished NAME: reaps the job; on failure stops everything with the end of its log.
finished() {
  local name=$1 rc=0 what=$2
  wait "${pid[$name]}" || rc=$?
  unset "pid[$name]"
  if ((rc != 0)); then
    say "$what failed (exit $rc); the end of ${log[$name]}:"
    tail -n 25 "${log[$name]}" | sed 's/^/  /'
    exit 1
  fi
  if grep -q '^prebuild.sh: .* cached: ' "${log[$name]}"; then
    say "$what: already built (forkd's cache)"
  else
    say "$what done in $(mmss $((SECONDS - started[$name])))"
  fi
}

# Waits until the jobs named in $@ are all done, printing the status meanwhile: in place every
# 2 s on a terminal, a line every 30 s otherwise. Any job that fails ends the script.
wait_for() {
  local last_print=$SECONDS n done_all
  while :; do
    if [[ -n ${pid[kernel]:-} ]]; then kernel_eta_note "${log[kernel]}"; fi
    done_all=1
    for n in kernel rootfs cxx; do
      [[ -n ${pid[$n]:-} ]] || continue
      if ! kill -0 "${pid[$n]}" 2>/dev/null; then
        case $n in
          kernel) finished kernel "guest kernel" ;;
          rootfs) finished rootfs "python rootfs" ;;
          cxx) finished cxx "C++ build (forkd, forkd-agent)" ;;
        esac
      fi
    done
    for n in "$@"; do
      [[ -n ${pid[$n]:-} ]] && done_all=0
    done
    ((done_all)) && return 0
    if ((tty)); then
      printf '\r\033[K  %s' "$(status_line)"
    elif ((SECONDS - last_print >= 30)); then
      say "$(status_line)"
      last_print=$SECONDS
    fi
    sleep 2
  done
}

# deps LABEL ARGS...: install-deps.sh with its apt output in the log and its summary here.
deps() {
  local label=$1
  shift
  say "packages: $label"
  if ! bash scripts/install-deps.sh "$@" >>"$logs/deps.log" 2>&1; then
    say "installing packages failed; the end of $logs/deps.log:"
    tail -n 25 "$logs/deps.log" | sed 's/^/  /'
    exit 1
  fi
  grep '^install-deps: ' "$logs/deps.log" | tail -n 1 | sed 's/^/  /'
}

say "forkd demo: builds what is missing, then the tour (logs in $logs/)"
: >"$logs/deps.log"
deps "what the guest kernel build needs (seconds to a minute on a fresh machine)" --kernel
start kernel "$logs/kernel.log" bash guest/prebuild.sh kernel
deps "the rest (while the kernel builds)" --demo
if [[ $(id -u) -eq 0 ]]; then
  start rootfs "$logs/python-rootfs.log" bash guest/prebuild.sh python-rootfs
fi

say "C++: configuring and building forkd and forkd-agent with $JOBS jobs"
start cxx "$logs/cxx.log" bash -c "cmake -S . -B '$BUILD' $CMAKE_ARGS && \
  cmake --build '$BUILD' -j'$JOBS' --target binaries"
wait_for cxx kernel rootfs

say "guest kernel and python rootfs ready: the tour (forkd demo)"
trap - EXIT
exec "$BUILD/forkd" demo

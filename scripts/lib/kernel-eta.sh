# shellcheck shell=bash
# The guest kernel's time left for demo.sh's status line (sourced; bash).
# build.sh prints "[kernel 3/4] compiling: P% of about N files, about M min left" every 5 %, M
# from its rate since its start. While the C++ build and debootstrap share the two cores that
# rate is low, and M ran ~2x long once they were done. Here the rate is the one over the last
# 15 % seen instead.

# When the log first showed each percentage, in seconds of the caller's $SECONDS. A test sets
# kernel_eta_now to a fixed second instead: $SECONDS set by hand ticks on while the test runs.
declare -A kseen=()
kernel_eta_now=""

# kernel_eta_note LOG: records the latest percentage in LOG, if new. Call it every few seconds.
kernel_eta_note() {
  local p
  p=$(grep -oE '^\[kernel 3/4\] compiling: [0-9]+%' "$1" 2>/dev/null | tail -n 1) || true
  p=${p##* }
  p=${p%\%}
  [[ -n $p && -z ${kseen[$p]:-} ]] && kseen[$p]=${kernel_eta_now:-$SECONDS}
  return 0
}

# kernel_left P FALLBACK: whole minutes left at P % (at least 1) from the rate between P and the
# earliest percentage seen at most 15 below it; FALLBACK until two such percentages were seen.
kernel_left() {
  local p=$1 q best="" left
  for q in "${!kseen[@]}"; do
    ((q < p && q >= p - 15)) || continue
    if [[ -z $best ]] || ((q < best)); then best=$q; fi
  done
  if [[ -z $best || -z ${kseen[$p]:-} ]]; then
    echo "$2"
    return 0
  fi
  left=$(((kseen[$p] - kseen[$best]) * (100 - p) / (p - best) - (${kernel_eta_now:-$SECONDS} - kseen[$p])))
  echo $(((left + 59) / 60 > 1 ? (left + 59) / 60 : 1))
}

#!/usr/bin/env bash
# The benchmark suite (`make bench`): every `forkd bench` verb and the SDK figures, with the
# options of the recorded results; one JSON file per run; the charts; then the figures tables
# of bench/results/README.md and README.md (bench/make_tables.py).
#
#   bench/run-suite.sh [--forkd PATH] [--only LIST] [--quick] [--out DIR] [--list]
#
#   --forkd PATH  the forkd binary (default: build/forkd)
#   --only LIST   comma-separated kinds (boot, spawn, api, exec, branch, pack, sdk) or series
#                 (boot-python, spawn-minimal-100-warmpool, branch-256, ...); default: all
#   --quick       every run with the smallest options, to check that the suite works: the
#                 results, charts and README copies go to a temporary directory (removed at the
#                 end unless --out is given); the real ones are left alone
#   --out DIR     where results go (default: bench/results)
#   --list        print the plan and exit
# ONLY and QUICK=1 in the environment do the same as --only and --quick.
#
# Files are named SERIES-YYYY-MM-DD.json (the day the suite started). The runs happen in a
# throw-away FORKD_HOME linked to the real home's images and build cache (tests/lib/test-home.sh);
# api, branch and pack make their own inside it, and the SDK figures run against a daemon of
# tests/sdk/with-daemon.sh. Everything is removed at the end, Ctrl-C included. A failed run is
# reported and the suite goes on; the exit status is 1 when any failed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
forkd=$root/build/forkd
only=${ONLY:-}
quick=$([[ ${QUICK:-0} == 1 ]] && echo 1 || echo 0)
out=
list=0
while (($#)); do
  case $1 in
    --forkd) forkd=$(realpath "$2"); shift ;;
    --only) only=$2; shift ;;
    --quick) quick=1 ;;
    --out) out=$2; shift ;;
    --list) list=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-suite: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# The runs, in order: SERIES, its `forkd` options (for sdk: bench/sdk_figures.py's), and the
# smallest options for --quick. spawn runs fork from bench-min or bench-py (made first, as the
# recorded results were); without a pool they measure the 100 idle children's CPU for a minute
# (per child at /proc's 10 ms resolution: 0.02 % of a core). The -ksm run is the same batch
# with FORKD_KSM's merging (ksmd started and sped up for the run; needs Linux 6.10+).
boot="bench boot --machines microvm,pc --runs 5 --json" qboot="bench boot --machines microvm"
qboot+=" --runs 1 --execs 1 --json"
min="bench spawn --tag bench-min" py="bench spawn --tag bench-py" qspawn="-n 2 --idle 0"
qspawn+=" --no-baselines"
branch="bench branch --runs 10 --json" qbranch="bench branch --memory 256 --runs 1 --modes live"
qbranch+=" --baseline-runs 1 --chain-spawns 1 --json"
plan=(
  boot-minimal "$boot --image minimal" "$qboot --image minimal"
  boot-python "$boot --image python" "$qboot --image python"
  spawn-minimal-100 "$min -n 100 --idle 60" "$min $qspawn"
  spawn-minimal-100-warmpool "$min -n 100 --pool 100 --warm" "$min --pool 2 --warm $qspawn"
  spawn-minimal-100-ksm "$min -n 100 --idle 60 --no-baselines --ksm --ksm-pages 1000"
    "$min $qspawn --ksm"
  spawn-python-100 "$py -n 100 --idle 60" "$py $qspawn"
  spawn-python-100-warmpool "$py -n 100 --pool 100 --warm" "$py --pool 2 --warm $qspawn"
  spawn-python-100-ksm "$py -n 100 --idle 60 --no-baselines --ksm --ksm-pages 1000"
    "$py $qspawn --ksm"
  api "bench api --image minimal --runs 500 --json" "bench api --image minimal --runs 1 --json"
  exec-python "bench exec --image python --children 5 --runs 100 --json"
    "bench exec --image minimal --memory 128 --children 1 --runs 2 --json"
  branch-256 "$branch --memory 256" "$qbranch"
  branch-1024-dirty20 "$branch --memory 1024 --dirty-mibps 20" "$qbranch --dirty-mibps 20"
  pack-python512 "bench pack --runs 3 --json"
    "bench pack --runs 1 --image minimal --memory 128 --json"
  sdk "--json" "--json --runs 2 --mib 1"
)
declare -A options=()
series_list=()
for ((i = 0; i < ${#plan[@]}; i += 3)); do
  series_list+=("${plan[i]}")
  options[${plan[i]}]=${plan[i + 1 + quick]}
done

selected=()
for series in "${series_list[@]}"; do
  if [[ -z $only ]] || [[ ,$only, == *,$series,* ]] || [[ ,$only, == *,${series%%-*},* ]]; then
    selected+=("$series")
  fi
done
if ((${#selected[@]} == 0)); then
  echo "run-suite: --only $only names no run (kinds: boot spawn api exec branch pack sdk)" >&2
  exit 2
fi
total=${#selected[@]}
command_of() {  # the command line of a series, as words in $cmd
  local series=$1
  read -ra cmd <<<"${options[$series]}"
  if [[ $series == sdk ]]; then
    cmd=("$root/tests/sdk/with-daemon.sh" "$forkd" --
      python3 "$root/bench/sdk_figures.py" "${cmd[@]}")
  else
    cmd=("$forkd" "${cmd[@]}")
  fi
}
if ((list)); then
  n=0
  for series in "${selected[@]}"; do
    command_of "$series"
    echo "[$((n += 1))/$total] $series: ${cmd[*]#"$root/"}"
  done
  exit 0
fi

[[ -x $forkd ]] || { echo "run-suite: no forkd at $forkd (make build)" >&2; exit 2; }
# shellcheck source=../tests/lib/test-home.sh
source "$root/tests/lib/test-home.sh"
date=$(date +%F)
work=$(mktemp -d "${TMPDIR:-/tmp}/forkd-bench-suite.XXXXXX")
remove_out=0
if ((quick)) && [[ -z $out ]]; then
  out=$work/results
  remove_out=1
fi
results=${out:-$root/bench/results}
mkdir -p "$results"
home=
cleanup() {
  local status=$?
  set +e
  if [[ -n $home ]]; then remove_test_home "$forkd" "$home" || status=1; fi
  if ((remove_out)); then
    rm -rf "$work"
  else
    rm -rf "$work"/*.json "$work"/*.log
    rmdir "$work" 2>/dev/null
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "bench: $*" >&2; }
say "$total run(s)$( ((quick)) && echo ', quick (figures mean nothing)'), results in $results"
# Images and kernel are built (once per machine) in the real home, where the throw-away home
# links them from.
"$root/tests/prepare-images.sh" "$forkd" >&2
home=$(make_test_home "$(real_forkd_home "$forkd")")
export FORKD_HOME=$home

tags_made=" "
make_tag() {  # the spawn runs' tags, as the recorded results were made
  local tag=$1
  [[ $tags_made == *" $tag "* ]] && return 0
  say "making tag $tag"
  case $tag in
    bench-min) "$forkd" snapshot --tag bench-min --image minimal --memory 256 \
      --exec 'echo 41 > /tmp/counter' >/dev/null || return 1 ;;
    bench-py) "$forkd" snapshot --tag bench-py --image python --memory 512 \
      --eval 'import numpy, random' >/dev/null || return 1 ;;
  esac
  tags_made+="$tag "
}

n=0
failed=()
ran_kinds=" "
for series in "${selected[@]}"; do
  n=$((n + 1))
  command_of "$series"
  file=$results/$series-$date.json
  tmp=$work/$series.json
  say "[$n/$total] $series: ${cmd[*]#"$root/"}"
  start=$(date +%s)
  status=0
  case $series in
    spawn-*)
      if make_tag "$(sed -n 's/.*--tag \([^ ]*\).*/\1/p' <<<"${cmd[*]}")"; then
        "${cmd[@]}" --out "$tmp" || status=$?
      else
        status=1
      fi ;;
    *) "${cmd[@]}" >"$tmp" || status=$? ;;
  esac
  if ((status == 0)) && python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$tmp"; then
    mv "$tmp" "$file"
    ran_kinds+="${series%%-*} "
    say "[$n/$total] $series: done in $(($(date +%s) - start)) s: ${file#"$root/"}"
  else
    failed+=("$series")
    say "[$n/$total] $series: FAILED (exit $status) after $(($(date +%s) - start)) s"
  fi
done

# Charts of what ran, from the latest file of each series.
chart() {  # KIND SCRIPT PNG
  local files
  [[ $ran_kinds == *" $1 "* ]] || return 0
  if ! /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
    say "no matplotlib for /usr/bin/python3 (apt-get install python3-matplotlib): $3 not drawn"
    return 0
  fi
  mapfile -t files < <(python3 "$root/bench/make_tables.py" --results "$results" --latest "$1")
  /usr/bin/python3 "$root/bench/$2" "$results/$3" "${files[@]}" && say "drew ${results#"$root/"}/$3"
}
chart spawn plot_spawn.py spawn.png || failed+=("spawn.png")
chart branch plot_branch.py branch.png || failed+=("branch.png")

readmes=("$root/bench/results/README.md" "$root/README.md")
if [[ $results != "$root/bench/results" ]]; then  # quick or --out: into copies beside them
  cp "$root/bench/results/README.md" "$results/README.md"
  cp "$root/README.md" "$results/README-top.md"
  readmes=("$results/README.md" "$results/README-top.md")
fi
python3 "$root/bench/make_tables.py" --results "$results" "${readmes[@]}" || failed+=("tables")
if [[ $results != "$root/bench/results" ]]; then
  sed -n '/figures:begin summary/,/figures:end summary/p' "$results/README-top.md" >&2
fi

if ((${#failed[@]})); then
  say "$total run(s), failed: ${failed[*]}"
  exit 1
fi
say "$total run(s) done$( ((remove_out)) && echo '; quick results removed')"

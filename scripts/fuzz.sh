#!/usr/bin/env bash
# Fuzzes the targets in fuzz/ with cargo fuzz (libFuzzer, AddressSanitizer), each for SECONDS
# (default 600), and prints a line per target: time, executions, findings. Seeds come from
# fuzz/corpus/TARGET (read only); what a run learns stays in target/fuzz-corpus/TARGET, and
# findings in fuzz/artifacts/TARGET. A finding is fixed, then kept in fuzz/regressions/TARGET,
# which the tests replay (tests/fuzz_seeds.rs) with the seeds.
#
#   scripts/fuzz.sh [-t SECONDS] [-j JOBS] [TARGET...]      (scripts/setup.sh --fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=600
jobs=1
while getopts "t:j:" o; do
  case $o in
    t) secs=$OPTARG ;;
    j) jobs=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
command -v cargo-fuzz >/dev/null || { echo "fuzz.sh: cargo-fuzz is missing: scripts/setup.sh --fuzz installs it" >&2; exit 2; }
# cargo fuzz passes nightly-only flags (-Zsanitizer); this lets the stable compiler take them.
export RUSTC_BOOTSTRAP=1
export NASNET_FUZZ_MODEL="$PWD/fuzz/model"
fuzz() { cargo fuzz "$1" --fuzz-dir fuzz "${@:2}"; }
targets=("$@")
# Targets that do not read the zoo's formats build without it (far less to compile).
features=(--no-default-features)
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(fuzz list)
  features=()
fi
for t in "${targets[@]}"; do
  case $t in pth | safetensors | keras | registry) features=() ;; esac
done
for t in "${targets[@]}"; do fuzz build -O "${features[@]}" "$t" >&2; done
logs=target/fuzz-logs
mkdir -p "$logs"
run() {
  local t=$1
  mkdir -p "target/fuzz-corpus/$t"
  fuzz run -O "${features[@]}" "$t" "target/fuzz-corpus/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
    >"$logs/$t.log" 2>&1
}
status=0
pids=()
for t in "${targets[@]}"; do
  run "$t" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$jobs" ]; then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
printf '%-18s %8s %12s %s\n' target seconds executions findings
for t in "${targets[@]}"; do
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | grep -o '[0-9]*$' || echo "?")
  time=$(grep -o 'stat::.*' "$logs/$t.log" >/dev/null && echo "$secs" || echo "?")
  # A target that never ran has no artifacts directory.
  found=$( (ls "fuzz/artifacts/$t" 2>/dev/null || true) | wc -l)
  printf '%-18s %8s %12s %s\n' "$t" "$time" "$execs" "$found (fuzz/artifacts/$t, log $logs/$t.log)"
done
exit $status

#!/usr/bin/env bash
# Children per second through the Redis queue with 1 and with 2 local workers, on the
# synthetic evaluator (each child takes MS milliseconds of wall time and no CPU), so that what
# is measured is the queue: publishing, claiming, answering, collecting and journaling.
#
#   benches/queue_throughput.sh [BUDGET] [MS]      (default 200 children of 50 ms)
#
# Needs redis-server and a release build (cargo build --release -p nasnet-cli).
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${1:-200}
ms=${2:-50}
bin=./target/release/nasnet
port=$((20000 + RANDOM % 20000))
tmp=$(mktemp -d)
redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --dir "$tmp" >/dev/null &
redis=$!
pids=()
trap 'kill "${pids[@]}" $redis 2>/dev/null; rm -rf "$tmp"' EXIT
url="redis://127.0.0.1:$port/"
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done

for workers in 1 2; do
  queue=bench$workers
  pids=()
  for i in $(seq "$workers"); do
    $bin worker --redis "$url" --queue "$queue" --name "w$i" 2>"$tmp/w$workers-$i.log" &
    pids+=($!)
  done
  start=$(date +%s.%N)
  $bin search --strategy random --dataset "synthetic:$ms" --budget "$budget" \
    --workers $((2 * workers)) --redis "$url" --queue "$queue" --quiet -o "$tmp/s$workers" \
    >/dev/null 2>&1
  end=$(date +%s.%N)
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  awk -v w="$workers" -v b="$budget" -v s="$start" -v e="$end" -v ms="$ms" 'BEGIN {
    t = e - s; printf "%d worker(s): %d children of %d ms in %.2f s = %.1f children/s\n", w, b, ms, t, b / t }'
done

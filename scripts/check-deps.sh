#!/usr/bin/env bash
# The crate layout, checked: dependencies point down, and the lean builds stay lean.
#
#   core <- model <- {search, zoo}; core <- fetch <- {zoo, queue}; core <- runtime;
#   search <- queue; {runtime, zoo, search} <- nasnet (facade) <- examples; all <- cli;
#   runtime <- bindings (the C library).
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
# deps PACKAGE [cargo tree options]: the names of everything PACKAGE pulls in (normal edges).
deps() {
  local p=$1
  shift
  # The first line is the package itself.
  cargo tree --locked -q -p "$p" -e normal --prefix none "$@" | tail -n +2 | sed 's/ v[0-9].*//' | sort -u
}
# refuse PACKAGE PATTERN WHY [cargo tree options]
refuse() {
  local p=$1 pattern=$2 why=$3
  shift 3
  local found
  found=$(deps "$p" "$@" | grep -E "^($pattern)$" || true)
  if [ -n "$found" ]; then
    echo "check-deps: $p $* depends on $(echo "$found" | tr '\n' ' ')($why)" >&2
    fail=1
  else
    echo "check-deps: $p $* has no ${pattern//|/, }"
  fi
}

candle='candle-core|candle-nn'
refuse nasnet-core "$candle|nasnet-.*|tokio|reqwest" "the vocabulary has no numerical or network dependency"
refuse nasnet-runtime "$candle|nasnet-model" "the runtime pulls Candle only with its candle feature"
refuse nasnet-model "nasnet-runtime|nasnet-zoo|nasnet-search|nasnet-fetch|tokio|redis|reqwest" "the network knows nothing of serving, downloads or training"
refuse nasnet-zoo "nasnet-search|nasnet-queue|nasnet-runtime|redis" "the zoo needs the network, not training or search"
refuse nasnet-search "nasnet-runtime|nasnet-zoo|hf-hub|reqwest" "training reads data, it does not serve or download models"
refuse nasnet-queue "hf-hub|hdf5-pure|nasnet-zoo" "the queue does not depend on the model download stack"
refuse nasnet "$candle|hf-hub|nasnet-search" "the facade's tract-only build" --no-default-features --features tract
refuse nasnet-bindings "$candle|ort|ort-sys|nasnet-model" "the mobile C library is tract only" --no-default-features --features tract
# And the positive side: the features do bring what they name.
deps nasnet-runtime --features candle | grep -qx candle-core || { echo "check-deps: nasnet-runtime --features candle lacks Candle" >&2; fail=1; }
deps nasnet --features train | grep -qx nasnet-search || { echo "check-deps: nasnet --features train lacks nasnet-search" >&2; fail=1; }
exit $fail

#!/usr/bin/env bash
# Prints the path of the executable of the test or example target NAME as
# `cargo test --release --locked --workspace` builds it (nothing is compiled when that command
# ran before), so the test scripts run those binaries instead of building them again with
# another set of features.
#
#   scripts/test-binary.sh NAME
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: scripts/test-binary.sh NAME}
path=$(cargo test --release --locked --workspace --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])
        break' "$name")
[ -x "$path" ] || { echo "test-binary: no executable named $name (cargo test --release --workspace builds it)" >&2; exit 1; }
echo "$path"

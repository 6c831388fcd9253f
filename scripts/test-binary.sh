#!/usr/bin/env bash
# Prints the path of the executable of the target NAME of KIND (test, example or bin) as
# `cargo test --release --locked --workspace` builds it (nothing is compiled when that command
# ran before), so the test scripts run those binaries instead of building them again with
# another set of features.
#
#   scripts/test-binary.sh NAME KIND
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: scripts/test-binary.sh NAME KIND}
kind=${2:?usage: scripts/test-binary.sh NAME KIND}
path=$(cargo test --release --locked --workspace --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
found = []
for line in sys.stdin:  # all of it: cargo must not see a closed pipe
    m = json.loads(line)
    t = m.get("target", {})
    # A bin target also has a test harness of its own name: the program is the one built
    # without the test profile.
    wanted_test = sys.argv[2] == "test"
    if (m.get("reason") == "compiler-artifact" and t["name"] == sys.argv[1]
            and sys.argv[2] in t["kind"] and m.get("executable")
            and m.get("profile", {}).get("test", False) == wanted_test):
        found.append(m["executable"])
print(found[0] if found else "")' "$name" "$kind")
[ -x "$path" ] || { echo "test-binary: no executable named $name (cargo test --release --workspace builds it)" >&2; exit 1; }
echo "$path"

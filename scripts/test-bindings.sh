#!/usr/bin/env bash
# The C library end to end: build libnasnet, compile the C example, the threaded test, the
# misuse table (every export with null, zero and out-of-range arguments) and a caller built
# against the options of an older header with the system C compiler, compare the example's
# output with `nasnet classify --json`, and run them under valgrind (no leaks, no errors,
# error paths included). The fuzz target of nasnet_classify_image replays its seeds in
# `cargo test` (tests/fuzz_seeds.rs); scripts/fuzz.sh runs it. Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p nasnet-bindings -p nasnet-cli
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc=${CC:-gcc}
flags="-std=c11 -Wall -Wextra -Werror -O1 -g -Ibindings/include"
$cc $flags bindings/examples/classify.c -o "$work/classify" -Ltarget/release -lnasnet -Wl,-rpath,"$PWD/target/release"
$cc $flags -pthread bindings/examples/threads.c -o "$work/threads" -Ltarget/release -lnasnet -Wl,-rpath,"$PWD/target/release"
$cc $flags bindings/tests/misuse.c -o "$work/misuse" -Ltarget/release -lnasnet -Wl,-rpath,"$PWD/target/release"
$cc -std=c11 -Wall -Wextra -Werror -O1 -g bindings/tests/old_caller.c -o "$work/old_caller" -Ltarget/release -lnasnet -Wl,-rpath,"$PWD/target/release"

# A small synthetic model (Mobile wiring, F = 8) keeps valgrind fast.
./target/release/nasnet synthetic --arch nasnet-a-mobile --filters 8 --stem-multiplier 0.25 --classes 10 -o "$work/model"
images=(tests/fixtures/images/chelsea.jpg tests/fixtures/images/portrait.jpg)
"$work/classify" --top-k 5 "$work/model" "${images[@]}" > "$work/c.jsonl"
./target/release/nasnet classify --model "$work/model" --backend tract --top-k 5 --json "${images[@]}" > "$work/cli.jsonl"
python3 - "$work/c.jsonl" "$work/cli.jsonl" <<'PY'
import json, sys
c = [json.loads(l) for l in open(sys.argv[1])]
cli = [json.loads(l) for l in open(sys.argv[2])]
assert len(c) == len(cli) == 2, (len(c), len(cli))
for a, b in zip(c, cli):
    for k in ("input", "model", "backend"):
        assert a[k] == b[k], (k, a[k], b[k])
    assert [p["index"] for p in a["predictions"]] == [p["index"] for p in b["predictions"]]
    for p, q in zip(a["predictions"], b["predictions"]):
        assert p["label"] == q["label"]
        assert abs(p["probability"] - q["probability"]) <= 1e-6 * max(1.0, q["probability"]), (p, q)
        assert abs(p["logit"] - q["logit"]) <= 1e-6 * max(1.0, abs(q["logit"])), (p, q)
print("bindings: the C example prints what `nasnet classify --json` prints")
PY
"$work/threads" "$work/model" "${images[0]}" 4 3
"$work/old_caller" "$work/model" "${images[0]}"

vg="valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect --error-exitcode=99"
$vg "$work/classify" --check-errors "$work/model" "${images[0]}" > /dev/null
$vg "$work/threads" "$work/model" "${images[0]}" 2 1
$vg "$work/misuse" "$work/model" "${images[0]}"
echo "bindings: valgrind found no leaks and no errors"

# The mobile build: tract only, no ONNX Runtime, no Candle in its dependency tree.
if cargo tree --locked -p nasnet-bindings --no-default-features --features tract -e normal | grep -E " (candle-[a-z]+|ort|ort-sys) v"; then
  echo "bindings: the tract-only build depends on Candle or ONNX Runtime" >&2
  exit 1
fi
echo "bindings: the tract-only build needs neither ONNX Runtime nor Candle"

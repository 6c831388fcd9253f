#!/usr/bin/env bash
# The C library end to end, as an app gets it: the app build (tract reading NNEF models, no ONNX
# front end, image files decoded, the compact resizer: features `nnef,decode,compact`) installed
# with `cargo cinstall` into a prefix under target/ (the shared library with its SONAME, the
# static library, the header, nasnet.pc), then with the system C compiler and
# `pkg-config --cflags --libs nasnet`: the C example, the threaded test, the misuse table (every
# export with null, zero and out-of-range arguments) and a caller built against the options of
# an older header; the example again linked statically, and through a CMake project where CMake
# is installed. The model directory holds the model's NNEF form (`nasnet export --format nnef`).
# The example's output is compared with `nasnet classify --json`, and the programs run under
# valgrind (no leaks, no errors, error paths included). The library's symbol table must carry
# nothing of tract's ONNX front end. The default build (ONNX models, ONNX Runtime) runs through
# the same exports in `cargo test`. The fuzz target of nasnet_classify_image (its seeds, past
# findings and a thousand mutants, tests/fuzz_seeds.rs) runs here again under valgrind, from the
# test binary `cargo test` built: a read past the caller's pixel buffer is an error.
# Coverage-guided runs under libFuzzer and AddressSanitizer: scripts/fuzz.sh. Called by
# scripts/test.sh; needs cargo-c (scripts/setup.sh --capi).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-cinstall >/dev/null \
  || { echo "bindings: cargo-c is missing; scripts/setup.sh --capi installs it" >&2; exit 1; }
# The CLI as `cargo test --release --workspace` built it (building it with its own features
# would rebuild crates that the tests' build then rebuilds again).
nasnet=$(scripts/test-binary.sh nasnet bin)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# cargo-c builds in a target directory of its own (the cargo inside it is another version,
# whose build scripts would invalidate the workspace's), and into a fixed prefix: it rebuilds
# every dependency when the install paths change.
prefix=$PWD/target/capi/prefix
rm -rf "$prefix"
cargo cinstall --release --locked -p nasnet-bindings --no-default-features \
  --features nnef,decode,compact --target-dir target/capi --prefix "$prefix" --libdir "$prefix/lib" >&2
echo "bindings: cargo cinstall installed:"
find "$prefix" -type l -printf '  %P -> %l\n' -o -type f -printf '  %P\n' | sort
soname=$(readelf -d "$prefix/lib/libnasnet.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
version=$(sed -n 's/^version = "\([0-9]*\)\.\([0-9]*\)\..*/\1.\2/p' Cargo.toml | head -1)
[ "$soname" = "libnasnet.so.$version" ] \
  || { echo "bindings: SONAME is '$soname', expected libnasnet.so.$version" >&2; exit 1; }
[ -e "$prefix/lib/$soname" ] || { echo "bindings: $soname is not installed" >&2; exit 1; }
# tract's ONNX front end left out: no function of tract-onnx, tract-hir or prost in the
# library's symbol table (cargo-c's release build keeps it).
if nm "$prefix/lib/libnasnet.so" | grep -qE "tract_onnx|tract_hir|prost"; then
  echo "bindings: the app library carries tract's ONNX front end" >&2
  exit 1
fi

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cc=${CC:-gcc}
flags="-std=c11 -Wall -Wextra -Werror -O1 -g"
build() { # build OUT SOURCE [compiler flags]: against the installed shared library
  local out=$1 src=$2
  # shellcheck disable=SC2046
  $cc $flags "${@:3}" $(pkg-config --cflags nasnet) "$src" -o "$work/$out" \
    $(pkg-config --libs nasnet) -Wl,-rpath,"$prefix/lib"
}
build classify bindings/examples/classify.c
build threads bindings/examples/threads.c -pthread
build misuse bindings/tests/misuse.c
build old_caller bindings/tests/old_caller.c
# The static library: the same example with libnasnet.a and the system libraries it needs
# (tract's assembly kernels carry no .note.GNU-stack, so the stack is marked non-executable).
# shellcheck disable=SC2046
$cc $flags $(pkg-config --cflags nasnet) bindings/examples/classify.c -o "$work/classify-static" \
  "$prefix/lib/libnasnet.a" $(pkg-config --libs-only-l --static nasnet | sed 's/-lnasnet//') \
  -Wl,-z,noexecstack
if readelf -d "$work/classify-static" | grep -q 'libnasnet'; then
  echo "bindings: the static example still needs libnasnet.so" >&2
  exit 1
fi
if command -v cmake >/dev/null; then
  cmake -S bindings/examples -B "$work/cmake" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
  cmake --build "$work/cmake" >/dev/null
  echo "bindings: the CMake project built the example against the installed library"
else
  echo "bindings: SKIPPED the CMake build: cmake is not installed"
fi

# A small synthetic model (Mobile wiring, F = 8) keeps valgrind fast; its NNEF form goes into
# the directory (model.json records its sha256), where tract reads it before model.onnx.
"$nasnet" synthetic --arch nasnet-a-mobile --filters 8 --stem-multiplier 0.25 --classes 10 -o "$work/model"
"$nasnet" export --model "$work/model" --format nnef -o "$work/model/model.nnef.tar"
images=(tests/fixtures/images/chelsea.jpg tests/fixtures/images/portrait.jpg)
"$work/classify" --top-k 5 "$work/model" "${images[@]}" > "$work/c.jsonl"
"$work/classify-static" --top-k 5 "$work/model" "${images[@]}" > "$work/c-static.jsonl"
outputs=("$work/c.jsonl" "$work/c-static.jsonl")
if [ -x "$work/cmake/classify" ]; then
  "$work/cmake/classify" --top-k 5 "$work/model" "${images[@]}" > "$work/c-cmake.jsonl"
  outputs+=("$work/c-cmake.jsonl")
fi
# The installed library decodes JPEGs in pure Rust (no turbojpeg feature): so does the CLI here.
NASNET_JPEG_DECODER=rust "$nasnet" classify --model "$work/model" --backend tract --top-k 5 --json "${images[@]}" > "$work/cli.jsonl"
python3 - "$work/cli.jsonl" "${outputs[@]}" <<'PY'
import json, sys
cli = [json.loads(l) for l in open(sys.argv[1])]
for path in sys.argv[2:]:
  c = [json.loads(l) for l in open(path)]
  assert len(c) == len(cli) == 2, (path, len(c), len(cli))
  for a, b in zip(c, cli):
      for k in ("input", "model", "backend"):
          assert a[k] == b[k], (k, a[k], b[k])
      assert [p["index"] for p in a["predictions"]] == [p["index"] for p in b["predictions"]]
      for p, q in zip(a["predictions"], b["predictions"]):
          assert p["label"] == q["label"]
          assert abs(p["probability"] - q["probability"]) <= 1e-6 * max(1.0, q["probability"]), (p, q)
          assert abs(p["logit"] - q["logit"]) <= 1e-6 * max(1.0, abs(q["logit"])), (p, q)
print(f"bindings: the C example ({len(sys.argv) - 2} builds: shared, static, CMake where installed) prints what `nasnet classify --json` prints")
PY
"$work/threads" "$work/model" "${images[0]}" 4 3
"$work/old_caller" "$work/model" "${images[0]}"

vg="valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect --error-exitcode=99"
$vg "$work/classify" --check-errors "$work/model" "${images[0]}" > /dev/null
$vg "$work/threads" "$work/model" "${images[0]}" 2 1
$vg "$work/misuse" "$work/model" "${images[0]}"
echo "bindings: valgrind found no leaks and no errors"

# The fuzz target's replay under valgrind: random sizes, strides, formats and output lengths
# through nasnet_classify_image, each on a buffer exactly as large as its arguments say; an
# invalid read or write, a leak or a failed check stops the tests. (The test binary as
# `cargo test --release --workspace` built it: nothing is compiled here.)
fuzz_seeds=$(scripts/test-binary.sh fuzz_seeds test)
$vg "$fuzz_seeds" --exact c_classify_image_target --test-threads 1 -q --nocapture 2>&1 | grep -E "mutants|test result"
echo "bindings: the nasnet_classify_image fuzz replay passes under valgrind"

# The mobile builds: tract only, no ONNX Runtime, no Candle in the dependency tree; the app
# build (NNEF, pixels only) without tract's ONNX front end and without image decoders.
if cargo tree --locked -p nasnet-bindings --no-default-features --features tract -e normal | grep -E " (candle-[a-z]+|ort|ort-sys) v"; then
  echo "bindings: the tract-only build depends on Candle or ONNX Runtime" >&2
  exit 1
fi
if cargo tree --locked -p nasnet-bindings --no-default-features --features nnef -e normal | grep -E " (candle-[a-z]+|ort|ort-sys|tract-onnx|tract-hir|prost|image|jpeg-decoder|zune-jpeg|png) v"; then
  echo "bindings: the NNEF-only, pixels-only build depends on an ONNX front end or image decoders" >&2
  exit 1
fi
echo "bindings: the tract-only build needs neither ONNX Runtime nor Candle; the app build (nnef) has no ONNX front end and no image decoders"

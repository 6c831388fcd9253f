#!/usr/bin/env bash
# The test suite: formatting, lints, the crate layout, the facade's documentation, every test
# in release mode (the networks are too slow to test unoptimized), the examples, and the C
# library.
set -euo pipefail
cd "$(dirname "$0")/.."

# ONNX Runtime (once) for the `ort` backend's tests, Pillow for the Python example, cargo-c for
# the C library's install test, the CLI.
./scripts/setup.sh --ort --capi
cargo fmt --all -- --check
cargo clippy --release --locked --workspace --all-targets -- -D warnings
./scripts/check-deps.sh
RUSTDOCFLAGS="-D missing_docs -D warnings" cargo doc --release --locked --no-deps -p nasnet -p nasnet-runtime
NASNET_REQUIRE_ORT=1 cargo test --release --locked --workspace
# The CUDA tests run where a GPU is (scripts/gpu-check.sh); here they say why they skip. (With
# --workspace, as above: the same features, so nothing is built again; the examples below are
# the binaries that build made, for the same reason.)
cargo test --release --locked -q --workspace --test cuda -- --nocapture 2>&1 | grep -E "SKIPPED|test result"
# The examples of the one-call API, on a small synthetic model.
examples=$(mktemp -d)
cuda_log=$(mktemp)
cuda_pid=
trap 'rm -rf "$examples" "$cuda_log"; [ -z "$cuda_pid" ] || kill "$cuda_pid" 2>/dev/null || true' EXIT
./target/release/nasnet synthetic --arch nasnet-a-mobile --filters 8 --stem-multiplier 0.25 -o "$examples/model"
"$(scripts/test-binary.sh classify example)" "$examples/model" tests/fixtures/images/chelsea.jpg tests/fixtures/images/portrait.jpg
"$(scripts/test-binary.sh embed example)" "$examples/model" tests/fixtures/images/chelsea.jpg tests/fixtures/images/portrait.jpg
# The CUDA build compiles here, without a GPU: the compiler set from PyPI (scripts/cuda-env.sh),
# then a type check of the binary and of the CUDA tests with the feature on. It runs in a target
# directory of its own, beside the C library's tests (whose builds and valgrind runs leave a
# core idle much of the time), and its log is shown when it ends.
(
  . scripts/cuda-env.sh
  CARGO_TARGET_DIR=target/cuda cargo check --release --locked -p nasnet-cli -p nasnet-model \
    --features nasnet-cli/cuda,nasnet-model/cuda --all-targets
) >"$cuda_log" 2>&1 &
cuda_pid=$!
./scripts/test-bindings.sh
if ! wait "$cuda_pid"; then
  cuda_pid=
  cat "$cuda_log" >&2
  echo "test: the CUDA build does not compile" >&2
  exit 1
fi
cuda_pid=
grep -E "^cuda-env:|Finished" "$cuda_log"

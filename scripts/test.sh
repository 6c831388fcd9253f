#!/usr/bin/env bash
# The test suite: formatting, lints, and every test in release mode (the networks are too
# slow to test unoptimized).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --release --locked --workspace --all-targets -- -D warnings
NASNET_REQUIRE_ORT=1 cargo test --release --locked --workspace
./scripts/test-bindings.sh

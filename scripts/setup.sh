#!/usr/bin/env bash
# Set-up: builds the `nasnet` binary (release) and writes a demo model directory with
# synthetic weights (models/demo-mobile) so the pipeline can be tried before importing
# pretrained weights.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
cargo build --release --locked -p nasnet-cli
if [ ! -f models/demo-mobile/model.json ]; then
  ./target/release/nasnet synthetic --arch nasnet-a-mobile -o models/demo-mobile
fi
echo "setup: ready: ./target/release/nasnet --help" >&2

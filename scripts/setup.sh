#!/usr/bin/env bash
# Set-up: builds the `nasnet` binary (release) with the Rust toolchain alone; with --ort, also
# installs the ONNX Runtime shared library from PyPI's onnxruntime wheel (the `ort` backend
# loads it at run time; the default tract backend needs nothing), with Pillow beside it for the
# Python example (examples/python/classify.py); with --capi, also cargo-c, which builds and
# installs the C library (`cargo cinstall -p nasnet-bindings`); with --fuzz, also cargo-fuzz
# (scripts/fuzz.sh).
#
#   scripts/setup.sh          the CLI only (Rust toolchain)
#   scripts/setup.sh --ort    also ONNX Runtime, CPU (needs python3 with venv, once)
#   scripts/setup.sh --capi   also cargo-c (cargo cbuild / cinstall), from crates.io
#   scripts/setup.sh --fuzz   also cargo-fuzz (libFuzzer), from crates.io
#   scripts/setup.sh --cuda   also onnxruntime-gpu with its NVIDIA libraries (CUDA 13, driver R580+)
#
# ONNX Runtime goes to $NASNET_HOME/onnxruntime (default ~/.cache/nasnet/onnxruntime), where
# the runtime looks for it; ORT_DYLIB_PATH overrides that location.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=${ORT_VERSION:-1.32.0}
ORT_GPU_VERSION=${ORT_GPU_VERSION:-1.31.1}
home=${NASNET_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/nasnet}
ort=0
cuda=0
capi=0
fuzz=0
CARGO_FUZZ_VERSION=${CARGO_FUZZ_VERSION:-0.13.2}
# cargo-c from crates.io; the version pins the cargo it embeds, which must read this workspace.
CARGO_C_VERSION=${CARGO_C_VERSION:-0.10.24+cargo-0.98.0}
for arg in "$@"; do
  case $arg in
    --ort) ort=1 ;;
    --cuda) ort=1 cuda=1 ;;
    --capi) capi=1 ;;
    --fuzz) fuzz=1 ;;
    *) echo "setup: unknown option $arg (--ort, --capi, --fuzz, --cuda)" >&2; exit 2 ;;
  esac
done

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
if [ "$ort" = 1 ]; then
  command -v python3 >/dev/null || { echo "setup: python3 not found (needed once, to fetch ONNX Runtime from PyPI)" >&2; exit 1; }
fi

# install_ort VENV PACKAGE DEST: pip-install PACKAGE into VENV, copy its shared libraries to DEST.
install_ort() {
  local venv=$1 package=$2 dest=$3
  if [ -e "$dest/libonnxruntime.so" ]; then
    echo "setup: ONNX Runtime already in $dest" >&2
    return
  fi
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$package"
  local site libs
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  libs="$site/onnxruntime/capi"
  mkdir -p "$dest.partial"
  cp "$libs"/libonnxruntime.so.* "$dest.partial/libonnxruntime.so"
  cp "$libs"/libonnxruntime_providers_*.so "$dest.partial/"
  [ -d "$site/nvidia" ] && ln -sfn "$site/nvidia" "$dest.partial/nvidia"
  rm -rf "$dest" && mv "$dest.partial" "$dest"
  echo "setup: installed $package into $dest" >&2
}

if [ "$ort" = 1 ]; then
  install_ort "$home/venv-ort" "onnxruntime==$ORT_VERSION" "$home/onnxruntime"
  # Pillow in the same environment runs the Python example.
  if [ -x "$home/venv-ort/bin/python" ] && ! "$home/venv-ort/bin/python" -c 'import PIL' 2>/dev/null; then
    "$home/venv-ort/bin/pip" install --quiet --disable-pip-version-check "pillow==${PILLOW_VERSION:-12.0.0}"
  fi
fi
if [ "$cuda" = 1 ]; then
  install_ort "$home/venv-ort-gpu" "onnxruntime-gpu[cuda,cudnn]==$ORT_GPU_VERSION" "$home/onnxruntime-gpu"
fi

if [ "$capi" = 1 ]; then
  if cargo cinstall --version 2>/dev/null | grep -qF "${CARGO_C_VERSION%%+*}"; then
    echo "setup: cargo-c ${CARGO_C_VERSION%%+*} already installed" >&2
  else
    # An unoptimized build: cargo-c's own speed does not matter, its build time does.
    cargo install --locked --debug --version "=$CARGO_C_VERSION" cargo-c
  fi
fi

if [ "$fuzz" = 1 ]; then
  if cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
    echo "setup: cargo-fuzz $CARGO_FUZZ_VERSION already installed" >&2
  else
    cargo install --locked --debug --version "=$CARGO_FUZZ_VERSION" cargo-fuzz
  fi
fi

cargo build --release --locked -p nasnet-cli
echo "setup: ready: ./target/release/nasnet --help" >&2

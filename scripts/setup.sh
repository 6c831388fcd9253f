#!/usr/bin/env bash
# Set-up: builds the `nasnet` binary (release), installs the ONNX Runtime shared library from
# PyPI's onnxruntime wheel (the `ort` backend loads it at run time; tract needs nothing), and
# writes a demo model directory with synthetic weights (models/demo-mobile).
#
#   scripts/setup.sh          CPU
#   scripts/setup.sh --cuda   also onnxruntime-gpu with its NVIDIA libraries (CUDA 13, driver R580+)
#
# ONNX Runtime goes to $NASNET_HOME/onnxruntime (default ~/.cache/nasnet/onnxruntime), where
# the runtime looks for it; ORT_DYLIB_PATH overrides that location.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=${ORT_VERSION:-1.32.0}
ORT_GPU_VERSION=${ORT_GPU_VERSION:-1.31.1}
home=${NASNET_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/nasnet}
cuda=0
[ "${1:-}" = "--cuda" ] && cuda=1

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
command -v python3 >/dev/null || { echo "setup: python3 not found (needed once, to fetch ONNX Runtime from PyPI)" >&2; exit 1; }

# install_ort VENV PACKAGE DEST: pip-install PACKAGE into VENV, copy its shared libraries to DEST.
install_ort() {
  local venv=$1 package=$2 dest=$3
  if [ -e "$dest/libonnxruntime.so" ]; then
    echo "setup: ONNX Runtime already in $dest" >&2
    return
  fi
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$package"
  local site capi
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  capi="$site/onnxruntime/capi"
  mkdir -p "$dest.partial"
  cp "$capi"/libonnxruntime.so.* "$dest.partial/libonnxruntime.so"
  cp "$capi"/libonnxruntime_providers_*.so "$dest.partial/"
  [ -d "$site/nvidia" ] && ln -sfn "$site/nvidia" "$dest.partial/nvidia"
  rm -rf "$dest" && mv "$dest.partial" "$dest"
  echo "setup: installed $package into $dest" >&2
}

install_ort "$home/venv-ort" "onnxruntime==$ORT_VERSION" "$home/onnxruntime"
if [ "$cuda" = 1 ]; then
  install_ort "$home/venv-ort-gpu" "onnxruntime-gpu[cuda,cudnn]==$ORT_GPU_VERSION" "$home/onnxruntime-gpu"
fi

cargo build --release --locked -p nasnet-cli
if [ ! -f models/demo-mobile/model.json ]; then
  ./target/release/nasnet synthetic --arch nasnet-a-mobile -o models/demo-mobile
fi
echo "setup: ready: ./target/release/nasnet --help" >&2

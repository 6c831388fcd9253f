#!/usr/bin/env bash
# The GPU checks in one go, on a machine with one NVIDIA GPU (driver R580 or newer for CUDA
# 13), a Rust toolchain and python3 (with pip access, or the wheels in pip's cache):
#
#   1. builds the CLI and the CUDA tests with `--features cuda` (compiler from PyPI, see
#      scripts/cuda-env.sh; CUDA_COMPUTE_CAP from nvidia-smi);
#   2. runs the CUDA tests (the depthwise and pooling paths and the network against the CPU);
#   3. checks `--backend candle --device cuda` and `--backend ort --device cuda`
#      (onnxruntime-gpu, `scripts/setup.sh --cuda`) against the CPU logits;
#   4. times batch-32 inference for Mobile and Large, and a training step, beside PyTorch on
#      the same GPU where PyTorch is installed;
#
# and writes every figure to ${GPU_CHECK_OUT:-gpu-check}/figures.txt. Without a GPU it exits
# at once (status 3) saying so.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  echo "gpu-check: no NVIDIA GPU here (nvidia-smi lists none); nothing was checked" >&2
  exit 3
fi
out=${GPU_CHECK_OUT:-gpu-check}
mkdir -p "$out"
figures=$out/figures.txt
: > "$figures"
say() { echo "$*" | tee -a "$figures"; }
t0=$(date +%s)

gpu=$(nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader | head -1)
say "gpu: $gpu"
if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
  CUDA_COMPUTE_CAP=$(echo "$gpu" | awk -F', ' '{print $3}' | tr -d '.')
  export CUDA_COMPUTE_CAP
fi
# shellcheck source=scripts/cuda-env.sh
. scripts/cuda-env.sh
./scripts/setup.sh --cuda > "$out/setup.log" 2>&1 || { echo "gpu-check: setup failed, see $out/setup.log" >&2; exit 1; }

# 1-2. Build with CUDA and run the CUDA tests.
cargo build --release --locked -p nasnet-cli --features cuda 2>&1 | tail -1
say "build: $(( $(date +%s) - t0 )) s"
cargo test --release --locked -p nasnet-model --features cuda --test cuda -- --nocapture 2>&1 | tee "$out/cuda-tests.log" | grep -E "^test |SKIPPED|test result"
grep -q "SKIPPED" "$out/cuda-tests.log" && { echo "gpu-check: the CUDA tests skipped" >&2; exit 1; }
say "cuda tests: $(grep 'test result' "$out/cuda-tests.log" | head -1)"

# 3. Conformance on the GPU against the CPU, through the binary.
nasnet=./target/release/nasnet
img=tests/fixtures/images/chelsea.jpg
for arch in mobile large; do
  m=$out/model-$arch
  [ -f "$m/model.json" ] || $nasnet synthetic --arch "nasnet-a-$arch" -o "$m" > /dev/null
  for run in "candle cpu" "candle cuda" "ort cpu" "ort cuda"; do
    set -- $run
    $nasnet classify --model "$m" --backend "$1" --device "$2" --top-k 1000 --json "$img" > "$out/$arch-$1-$2.json"
  done
  python3 - "$out" "$arch" <<'PY' | tee -a "$figures"
import json, sys
out, arch = sys.argv[1], sys.argv[2]
def logits(name):
    rec = json.loads(open(f"{out}/{arch}-{name}.json").readline())
    return {p["index"]: p["logit"] for p in rec["predictions"]}
ok = True
for backend in ("candle", "ort"):
    a, b = logits(f"{backend}-cuda"), logits(f"{backend}-cpu")
    d = max(abs(a[i] - b[i]) for i in b)
    m = max(abs(v) for v in b.values())
    good = d <= 1e-4 * m
    ok &= good
    print(f"conformance {arch} {backend} cuda vs cpu: max |diff| {d:.3e}, relative {d / m:.3e} ({'ok' if good else 'FAIL'})")
sys.exit(0 if ok else 1)
PY
done

# 4. Timings: batch-32 inference and a training step, nasnet and (if installed) PyTorch.
cargo build --release --locked --example latency --features cuda 2>&1 | tail -1
for arch in mobile large; do
  for backend in candle ort; do
    say "inference $arch b32: $(./target/release/examples/latency "$out/model-$arch" $backend 32 20 - cuda)"
  done
  if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    say "inference $arch b32 pytorch eager: $(python3 - "$out/model-$arch" "nasnet-a-$arch" <<'PY' 2>&1 | tail -1
import sys, torch
sys.path.insert(0, "benches/compare")
from compare import median_ms, torch_model
net = torch_model(sys.argv[2], f"{sys.argv[1]}/model.safetensors").cuda()
s = 331 if "large" in sys.argv[2] else 224
x = torch.randn(32, 3, s, s, device="cuda")
def run():
    with torch.no_grad():
        net(x)
    torch.cuda.synchronize()
ms = median_ms(run, 20)
print(f'{{"stack": "pytorch eager", "batch": 32, "median_ms": {ms:.3f}, "images_per_s": {32e3 / ms:.3f}}}')
PY
)"
  fi
done
NASNET_BENCH_DEVICE=cuda cargo bench --locked --features cuda --bench train_step -- --noplot 2>&1 | grep -E "time:|thrpt:" | tee -a "$figures"
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  say "train step pytorch: $(python3 benches/compare/train_step.py --cells 2 --filters 16 --image-size 32 --batch 32 --device cuda)"
else
  say "train step pytorch: PyTorch with CUDA is not installed here"
fi
say "total: $(( $(date +%s) - t0 )) s"
echo "gpu-check: figures in $figures" >&2

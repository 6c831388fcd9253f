# Source this file (`. scripts/cuda-env.sh`) before building with `--features cuda`.
#
# It installs, once, the CUDA 13.4 compiler set from PyPI into $NASNET_HOME/venv-cuda and
# exports PATH, CUDA_ROOT, CUDA_HOME and CUDA_COMPUTE_CAP (default 90: Hopper; set it to your
# GPU's, e.g. 89 for Ada, 80 for A100). No GPU and no system CUDA are needed to compile.
#
# The versions are matched on purpose: cudarc 0.19 (candle 0.11) rejects nvcc 13.5 ("Unsupported
# cuda toolkit version"), and ptxas refuses PTX from a newer nvvm than itself, so nvcc, nvvm,
# crt and the runtime headers all come from 13.4.
nasnet_cuda_home=${NASNET_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/nasnet}
nasnet_cuda_venv=${NASNET_CUDA_VENV:-$nasnet_cuda_home/venv-cuda}
nasnet_cuda_py=$nasnet_cuda_venv/bin/python
if ! [ -x "$nasnet_cuda_venv/bin/nvcc-ready" ]; then
  python3 -m venv "$nasnet_cuda_venv" || return 1 2>/dev/null || exit 1
  "$nasnet_cuda_venv/bin/pip" install --quiet --disable-pip-version-check \
    "nvidia-cuda-nvcc==13.4.*" "nvidia-nvvm==13.4.*" "nvidia-cuda-crt==13.4.*" \
    "nvidia-cuda-runtime==13.4.*" "nvidia-cuda-cccl" || return 1 2>/dev/null || exit 1
  printf '#!/bin/sh\n' > "$nasnet_cuda_venv/bin/nvcc-ready" && chmod +x "$nasnet_cuda_venv/bin/nvcc-ready"
fi
nasnet_cuda_root=$("$nasnet_cuda_py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13
export CUDA_ROOT=$nasnet_cuda_root CUDA_HOME=$nasnet_cuda_root CUDA_PATH=$nasnet_cuda_root
export PATH=$nasnet_cuda_root/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
echo "cuda-env: $(nvcc --version | tail -1) from $nasnet_cuda_root, compute capability $CUDA_COMPUTE_CAP" >&2

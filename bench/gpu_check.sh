#!/usr/bin/env bash
# One command for a GPU machine: build fastgeo with its CUDA kernels, run the whole test suite on
# the GPU (Triton natively, opcheck, torch.compile), then the GPU benchmarks and the solver on
# CUDA tensors against the CPU.
#   bash bench/gpu_check.sh [--quick]      (from the repository root; no downloads needed)
# Needs: a CUDA torch, triton, nvcc. Prints every step; stops at the first failure.
set -euxo pipefail
cd "$(dirname "$0")/.."

nvidia-smi || true
python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'triton', triton.__version__, 'gpu', torch.cuda.get_device_name())"

# torch's cpp_extension must see the real toolkit, not a wrapper script's folder.
if [ -z "${CUDA_HOME:-}" ]; then
  nvcc_path="$(command -v nvcc)"
  real="$(grep -o '/[^ "]*/bin/nvcc' "$nvcc_path" | head -1 || true)"
  CUDA_HOME="$(dirname "$(dirname "${real:-$(readlink -f "$nvcc_path")}")")"
  export CUDA_HOME
fi
echo "CUDA_HOME=$CUDA_HOME"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$(python -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}"

FASTGEO_CUDA=1 python setup.py build_ext --inplace
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the in-place build, without installing
python -c "import fastgeo; print(fastgeo.availability())"

# Native Triton (not the interpreter): the Triton tests then run on CUDA tensors.
export TRITON_INTERPRET=0
export TORCHINDUCTOR_CACHE_DIR="${TMPDIR:-/tmp}/fastgeo_inductor_$$"
python -m pytest -q -rs tests

python bench/bench_ops_gpu.py "$@"
python bench/bench_ops_gpu.py --dtype float64 --quick
# The whole solver on CUDA tensors (its kernels' PyTorch references there) against the CPU.
(cd bench && python bench_solver_device.py --device cuda)

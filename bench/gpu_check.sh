#!/usr/bin/env bash
# One command for a GPU machine (issue 17): build fastgeo with its CUDA kernels, run the GPU tests
# (Triton natively, the CUDA C++ kernels, opcheck, torch.compile), the op benchmarks, the solver
# on CUDA tensors against the CPU, all-pairs on CUDA against the CPU, then the whole test suite.
#
#   bash bench/gpu_check.sh [STEP ...]      (from anywhere; no downloads needed)
#
# STEPs (default: all but gputests, in this order of priority): env build ops suite solver tf32x3
# pairwise ops64 (gputests: only the GPU-specific test files, a quicker first look than the suite).
# Logs and JSON go to $OUT (or ./gpu_check_out): gpu_check.log (everything), build.log,
# suite.log, ops.json, pairwise_device.json, pairwise_cpu.json. GPU_CHECK_BUDGET (seconds,
# default 3600) bounds the whole run: every step's timeout is cut to the time left, so that a lease is never overrun; a step
# that fails or times out is reported and the next one runs (only a failed build stops it).
# Needs: a CUDA torch, triton, nvcc; pytest-xdist for the suite.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUTDIR"
exec > >(tee -a "$OUTDIR/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
STEPS="${*:-env build ops suite solver tf32x3 pairwise ops64}"
DEADLINE=$(( $(date +%s) + ${GPU_CHECK_BUDGET:-3600} ))
SUMMARY=""

# run STEP-NAME MAX-SECONDS COMMAND...: the command under a timeout cut to the time left.
run() {
  local name="$1" limit="$2"; shift 2
  local left=$(( DEADLINE - $(date +%s) - 5 ))
  (( left < limit )) && limit=$left
  if (( limit < 10 )); then
    echo "=== $name: skipped, no time left"; SUMMARY+="$name: skipped (no time left)"$'\n'; return 1
  fi
  echo "=== $name (timeout ${limit}s): $*"
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  echo "=== $name: rc $rc after $(( $(date +%s) - t0 ))s"
  SUMMARY+="$name: rc $rc, $(( $(date +%s) - t0 ))s"$'\n'
  return $rc
}
want() { [[ " $STEPS " == *" $1 "* ]]; }

if want env; then
  nvidia-smi || true
  c++ --version | head -n 1; c++ -v 2>&1 | grep -o 'with-default-libstdcxx-abi=[^ ]*' || true
  "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'triton', triton.__version__, 'gpu', torch.cuda.get_device_name())"
fi

# torch's cpp_extension must see the real toolkit, not a wrapper script's folder.
if [ -z "${CUDA_HOME:-}" ] && ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME=/usr/local/cuda PATH="/usr/local/cuda/bin:$PATH"
fi
if [ -z "${CUDA_HOME:-}" ]; then
  nvcc_path="$(command -v nvcc)"
  real="$(grep -o '/[^ "]*/bin/nvcc' "$nvcc_path" | head -1 || true)"
  CUDA_HOME="$(dirname "$(dirname "${real:-$(readlink -f "$nvcc_path")}")")"
  export CUDA_HOME
fi
echo "CUDA_HOME=$CUDA_HOME"; "$CUDA_HOME/bin/nvcc" --version | tail -n 2
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the in-place build, without installing
# Native Triton (not the interpreter): the Triton tests then run on CUDA tensors.
export TRITON_INTERPRET=0
export TORCHINDUCTOR_CACHE_DIR="${TMPDIR:-/tmp}/fastgeo_inductor_$$"

if want build; then
  run build 400 env FASTGEO_CUDA=1 "$PY" setup.py build_ext --inplace >"$OUTDIR/build.log" 2>&1
  rc=$?
  tail -n 30 "$OUTDIR/build.log"
  if (( rc != 0 )); then echo "build failed"; printf '%s' "$SUMMARY"; exit 1; fi
fi
"$PY" -c "import fastgeo; print(fastgeo.availability())"
# A failed TORCH_CHECK in a kernel must raise, not crash the process (a C++ ABI mismatch does).
"$PY" -c "
import torch, fastgeo
try:
    torch.ops.fastgeo.segment_sqdist(torch.randn(2, 1, 3))
except RuntimeError as e:
    print('a failed check raises RuntimeError:', str(e).splitlines()[0])"
echo "=== failed-check test: rc $?"

if want gputests; then
  run gputests 180 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_triton_ops.py \
    tests/test_cuda_sources.py tests/test_forward_habits.py tests/test_low_precision.py
fi
if want ops; then
  run ops_float32 150 "$PY" bench/bench_ops_gpu.py --reps "${OPS_REPS:-5}" --json "$OUTDIR/ops.json"
fi
if want suite; then
  # One thread per xdist worker: the workers already fill the cores.
  # The import-contract test needs import-linter, a development tool, not a GPU matter.
  deselect=()
  command -v lint-imports >/dev/null || deselect=(--deselect tests/test_layers.py::test_import_contracts_hold)
  echo "suite: ${deselect[*]:-nothing deselected}"
  run suite 900 env OMP_NUM_THREADS=1 "$PY" -m pytest -q -rs -p no:cacheprovider \
    -n "${SUITE_WORKERS:-12}" --timeout 240 "${deselect[@]}" tests >"$OUTDIR/suite.log" 2>&1
  tail -n 60 "$OUTDIR/suite.log"
fi
if want solver; then
  # The whole solver on CUDA tensors (its kernels' PyTorch references there) against the CPU.
  pushd bench >/dev/null && run solver 150 "$PY" bench_solver_device.py --device cuda
  # The candidate order the op benchmark suggests (Triton segment_sqdist 7.5x the reference).
  run solver_triton_segments 150 "$PY" bench_solver_device.py --device cuda \
    --order segment_sqdist=triton,reference; popd >/dev/null
fi
if want pairwise; then
  # The device run, then the CPU run (forked workers, a process of its own) compared with it.
  pushd bench >/dev/null
  # Two small M first: the estimate of the next M is then a line through two runs (on the GPU a
  # call's kernel launches follow its iterations more than its curves: time grows sublinearly).
  run pairwise_device 240 "$PY" bench_pairwise_device.py --device cuda --ms 128,256,512,2000 \
    --budget-s "${PAIRWISE_BUDGET:-120}" --save "$OUTDIR/pairwise_device.pt" --json "$OUTDIR/pairwise_device.json"
  run pairwise_cpu 200 "$PY" bench_pairwise_device.py --device cpu --ms 128,256,512,2000 \
    --budget-s "${PAIRWISE_BUDGET:-80}" --against "$OUTDIR/pairwise_device.pt" --json "$OUTDIR/pairwise_cpu.json"
  rm -f "$OUTDIR/pairwise_device.pt"
  popd >/dev/null
fi
if want tf32x3; then
  # The tensor-core candidate for the Triton dots: its accuracy (the Triton tests) and its speed.
  run tf32x3_tests 120 env FASTGEO_TRITON_DOT=tf32x3 "$PY" -m pytest -q -p no:cacheprovider \
    tests/test_triton_ops.py
  run tf32x3_ops 120 env FASTGEO_TRITON_DOT=tf32x3 "$PY" bench/bench_ops_gpu.py --reps 5 \
    --ops rbf_precision,rbf_segment_sqdist
fi
if want ops64; then
  run ops_float64 60 "$PY" bench/bench_ops_gpu.py --dtype float64 --quick
fi
echo "=== summary"
printf '%s' "$SUMMARY"

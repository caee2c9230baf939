#!/usr/bin/env bash
# One command for a GPU machine (issue 17): build fastgeo with its CUDA kernels, check that a failed
# C++ argument check raises, then the measurements the next GPU run owes (bench/RESULTS.md, "On an
# H200"): the ops' bar, the solver and all pairs on CUDA tensors, the chain check on CUDA, a
# profile of an all-pairs call; then float64 ops, the GPU test files, the CPU side of all pairs,
# the tensor-core Triton dots, and last the whole test suite with whatever time is left.
#
#   bash bench/gpu_check.sh [STEP ...]      (from anywhere; no downloads needed)
#
# STEPs (default: all, in this order of priority): env build ops solver pairwise chains profile
# ops64 gputests pairwise_cpu tf32x3 suite. Logs and JSON go to $OUT (or ./gpu_check_out):
# gpu_check.log (everything), build.log, gputests.log, suite.log, ops*.json,
# pairwise_device.json, pairwise_cpu.json. GPU_CHECK_BUDGET (seconds, default 540: one command
# may run 600) bounds the whole run: every step's timeout is cut to the time left, and a step with
# under 10 s left is skipped; a step that fails or times out is reported and the next one runs
# (only a failed build stops it). The summary is printed however the script ends.
# Needs: a CUDA torch, triton, nvcc; pytest-xdist and pytest-timeout for the tests.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUTDIR"
# tee ignores TERM: a stop of the whole process group still leaves it to write the summary.
exec > >(trap '' TERM INT; exec tee -a "$OUTDIR/gpu_check.log") 2>&1
TEE_PID=$!
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
STEPS="${*:-env build ops solver pairwise chains profile ops64 gputests pairwise_cpu tf32x3 suite}"
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-540}
DEADLINE=$(( START + BUDGET ))
SUMMARY=""

finish() {
  local rc=$?
  echo "=== summary ($(( $(date +%s) - START )) s of a ${BUDGET} s budget)"
  printf '%s' "$SUMMARY"
  # Only what tee has written comes back: close its pipe and let it drain before returning.
  exec >&- 2>&-
  wait "$TEE_PID" 2>/dev/null
  exit "$rc"
}
trap finish EXIT
trap 'echo "=== stopped by a signal"; exit 143' TERM INT

# run [--log FILE] STEP-NAME MAX-SECONDS COMMAND...: the command under a timeout cut to the time
# left (its output to FILE if given), or a "skipped, no time left" line and status 125.
run() {
  local log=""
  if [[ "$1" == --log ]]; then log="$2"; shift 2; fi
  local name="$1" limit="$2"; shift 2
  local left=$(( DEADLINE - $(date +%s) - 5 ))
  (( left < limit )) && limit=$left
  if (( limit < 10 )); then
    echo "=== $name: skipped, no time left"; SUMMARY+="$name: skipped (no time left)"$'\n'; return 125
  fi
  echo "=== $name (timeout ${limit}s): $*${log:+ >$log}"
  local t0 rc
  t0=$(date +%s)
  if [[ -n "$log" ]]; then
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  else
    timeout --kill-after=10 "$limit" "$@"
  fi
  rc=$?
  local how="rc $rc"
  (( rc == 124 || rc == 137 )) && how="timed out (rc $rc)"
  echo "=== $name: $how after $(( $(date +%s) - t0 ))s"
  SUMMARY+="$name: $how, $(( $(date +%s) - t0 ))s"$'\n'
  return $rc
}
want() { [[ " $STEPS " == *" $1 "* ]]; }
# pytest's failures in a log, also of a run cut short (-v writes each outcome as it comes).
failures() {
  [[ -f "$1" ]] || return 0
  grep -oE '(FAILED|ERROR) tests/[^ ]+' "$1" | sort -u | head -n 40
  grep -E '^SKIPPED' "$1" | head -n 10; tail -n 2 "$1"
}

if want env; then
  timeout 30 nvidia-smi || true
  c++ --version | head -n 1; c++ -v 2>&1 | grep -o 'with-default-libstdcxx-abi=[^ ]*' || true
  timeout 60 "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'triton', triton.__version__, 'gpu', torch.cuda.get_device_name())"
fi

# torch's cpp_extension must see the real toolkit, not a wrapper script's folder.
if [ -z "${CUDA_HOME:-}" ] && ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME=/usr/local/cuda PATH="/usr/local/cuda/bin:$PATH"
fi
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null; then
  nvcc_path="$(command -v nvcc)"
  real="$(grep -o '/[^ "]*/bin/nvcc' "$nvcc_path" | head -1 || true)"
  CUDA_HOME="$(dirname "$(dirname "${real:-$(readlink -f "$nvcc_path")}")")"
  export CUDA_HOME
fi
echo "CUDA_HOME=${CUDA_HOME:-not found}"; "${CUDA_HOME:-/nonexistent}/bin/nvcc" --version | tail -n 2
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$(timeout 60 "$PY" -c \
  "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the in-place build, without installing
# Native Triton (not the interpreter): the Triton tests then run on CUDA tensors.
export TRITON_INTERPRET=0
export TORCHINDUCTOR_CACHE_DIR="${TMPDIR:-/tmp}/fastgeo_inductor_$$"

if want build; then
  run --log "$OUTDIR/build.log" build 200 env FASTGEO_CUDA=1 "$PY" setup.py build_ext --inplace
  rc=$?
  tail -n 30 "$OUTDIR/build.log"
  if (( rc != 0 )); then echo "build failed"; exit 1; fi
fi
run availability 60 "$PY" -c "import fastgeo; print(fastgeo.availability())"
# A failed TORCH_CHECK in a kernel must raise, not crash the process (it did on the H200:
# SIGSEGV, rc 139). The kernels' argument checks raise ValueError (TORCH_CHECK_VALUE), others RuntimeError.
PROBE="
import torch, fastgeo
try:
    torch.ops.fastgeo.segment_sqdist(torch.randn(2, 1, 3))
except (RuntimeError, ValueError) as e:
    print(f'a failed check raises {type(e).__name__}:', str(e).splitlines()[0])
else:
    raise SystemExit('a failed check raised nothing')"
run failed_check 60 "$PY" -X faulthandler -c "$PROBE"
rc=$?
if (( rc != 0 && rc != 125 )); then
  # The leads of RESULTS.md: the error's C++ stack-trace capture, and which libstdc++ is loaded.
  run failed_check_no_stacktraces 60 env TORCH_SHOW_CPP_STACKTRACES=0 "$PY" -X faulthandler -c "$PROBE"
  run loaded_libstdcxx 30 "$PY" -c "import re, torch, fastgeo._C
print(*sorted(set(re.findall(r'/\S*lib(?:stdc\+\+|gcc_s)\S*', open('/proc/self/maps').read()))), sep='\n')"
fi

if want ops; then
  # The bar (rbf_segment_sqdist forward+backward, B = 65,536, d = 2) first, then the other ops.
  run ops_float32 100 "$PY" bench/bench_ops_gpu.py --reps "${OPS_REPS:-5}" --batches 65536,1024 \
    --ops rbf_segment_sqdist,segment_sqdist,rbf_precision --json "$OUTDIR/ops.json"
fi
pushd bench >/dev/null
if want solver; then
  # The whole solver on CUDA tensors (its kernels' PyTorch references there) against the CPU.
  run solver 60 "$PY" bench_solver_device.py --device cuda
  # The candidate order the op benchmark suggests (Triton segment_sqdist 7.5x the reference).
  run solver_triton_segments 60 "$PY" bench_solver_device.py --device cuda \
    --order segment_sqdist=triton,reference
fi
if want pairwise; then
  # Two small M first: the estimate of the next M is then a line through two runs (on the GPU a
  # call's kernel launches follow its iterations more than its curves: time grows sublinearly).
  # Matrices and JSON are written after each M, so a timeout keeps what was measured.
  run pairwise_device 170 "$PY" bench_pairwise_device.py --device cuda --ms 128,256,512,2000 \
    --budget-s "${PAIRWISE_BUDGET:-100}" --save "$OUTDIR/pairwise_device.pt" --json "$OUTDIR/pairwise_device.json"
fi
if want chains; then
  # bench_chain_check.py (chains off, then on; RESULTS.md's digits sample) with its metric and
  # codes on CUDA: the script unchanged, its two loaders wrapped.
  run chains 90 "$PY" - cuda --generator digits --m 80 --seed 3 <<'EOF'
import sys

import bench_chain_check as check

device = sys.argv.pop(1)
load, draw = check.generator, check.random_codes


def on_device(name):
    metric, *rest = load(name)
    return (metric.to(device=device), *rest)


check.generator = on_device
check.random_codes = lambda *a: draw(*a).to(device)
check.main()
EOF
fi
if want profile; then
  # Where an all-pairs call on the GPU spends its time: kernel launches and host synchronizations
  # against the GPU's busy time (RESULTS.md: bound by operations per call, not yet profiled there).
  run profile 60 "$PY" - cuda 32 <<'EOF'
import sys
import time

import torch
from workloads import generator

import fastgeo

device, M = torch.device(sys.argv[1]), int(sys.argv[2])
metric, Z, _ = generator("digits")
metric, z = metric.to(device=device), Z[:M].to(device)


def call():
    with torch.no_grad():
        fastgeo.pairwise_distances(metric, z, workers=1, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()


call()  # the latent graph, compiled kernels, warm caches
start = time.perf_counter()
call()
plain = time.perf_counter() - start
activities = [torch.profiler.ProfilerActivity.CPU]
if device.type == "cuda":
    activities.append(torch.profiler.ProfilerActivity.CUDA)
start = time.perf_counter()
with torch.profiler.profile(activities=activities) as prof:
    call()
profiled = time.perf_counter() - start
events = prof.key_averages()
print(events.table(sort_by="self_cpu_time_total", row_limit=25))


def count(*words):
    return sum(e.count for e in events if any(w in e.key for w in words))


kernels = [e for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
busy = sum(getattr(e, "device_time_total", 0) for e in kernels) / 1e6
print(f"M = {M} ({M * (M - 1) // 2} pairs): {plain:.2f} s, {profiled:.2f} s profiled")
print(f"aten calls (nested included) {count('aten::')}, kernel launches {count('LaunchKernel')}")
print(f"synchronizations {count('Synchronize')}, copies {count('Memcpy')}")
print(f"GPU busy {busy:.2f} s in {sum(e.count for e in kernels)} kernels")
EOF
fi
popd >/dev/null

if want ops64; then
  # float64: the Triton launches that halve their K block for the shared memory (RESULTS.md).
  run ops_float64 45 "$PY" bench/bench_ops_gpu.py --dtype float64 --quick --json "$OUTDIR/ops64.json"
fi
GPU_TESTS=(tests/test_triton_ops.py tests/test_cuda_sources.py tests/test_forward_habits.py tests/test_low_precision.py)
gputests_done=0
if want gputests; then
  # The GPU-specific test files (Triton natively, the CUDA C++ kernels, opcheck, torch.compile).
  run --log "$OUTDIR/gputests.log" gputests 120 "$PY" -m pytest -v -rfEs -p no:cacheprovider \
    --timeout 100 "${GPU_TESTS[@]}"
  rc=$?
  (( rc == 0 || rc == 1 )) && gputests_done=1  # pytest finished (1: some failed)
  failures "$OUTDIR/gputests.log"
fi
if want pairwise_cpu; then
  # The CPU side (forked workers, a process of its own), on the M the device run saved.
  if [[ -f "$OUTDIR/pairwise_device.pt" ]]; then
    pushd bench >/dev/null
    run pairwise_cpu 120 "$PY" bench_pairwise_device.py --device cpu --ms 128,256,512,2000 \
      --budget-s "${PAIRWISE_CPU_BUDGET:-80}" --against "$OUTDIR/pairwise_device.pt" --json "$OUTDIR/pairwise_cpu.json"
    popd >/dev/null
  else
    echo "=== pairwise_cpu: skipped, no device matrices (pairwise_device.pt)"
    SUMMARY+="pairwise_cpu: skipped (no device matrices)"$'\n'
  fi
fi
rm -f "$OUTDIR/pairwise_device.pt" "$OUTDIR"/*.tmp  # the matrices are large; .tmp: a write cut short
if want tf32x3; then
  # The tensor-core candidate for the Triton dots: its accuracy (the Triton tests) and its speed.
  run tf32x3_tests 90 env FASTGEO_TRITON_DOT=tf32x3 "$PY" -m pytest -q -rfEs -p no:cacheprovider \
    --timeout 80 tests/test_triton_ops.py
  run tf32x3_ops 60 env FASTGEO_TRITON_DOT=tf32x3 "$PY" bench/bench_ops_gpu.py --reps 5 \
    --batches 65536,1024 --ops rbf_segment_sqdist,rbf_precision --json "$OUTDIR/ops_tf32x3.json"
fi
if want suite; then
  # Last, with the time left. One thread per xdist worker: the workers already fill the cores.
  # The import-contract test needs import-linter, a development tool, not a GPU matter.
  skip=()
  command -v lint-imports >/dev/null || skip=(--deselect tests/test_layers.py::test_import_contracts_hold)
  if (( gputests_done )); then for f in "${GPU_TESTS[@]}"; do skip+=(--ignore "$f"); done; fi
  echo "suite: ${skip[*]:-nothing left out}"
  run --log "$OUTDIR/suite.log" suite 900 env OMP_NUM_THREADS=1 "$PY" -m pytest -v -rfEs -p no:cacheprovider \
    -n "${SUITE_WORKERS:-12}" --timeout 240 "${skip[@]}" tests
  failures "$OUTDIR/suite.log"
fi
exit 0

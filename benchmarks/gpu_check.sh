#!/usr/bin/env bash
# The CUDA check for a machine with a GPU: the gpu-marked tests, the model workflow on CUDA
# (bench_workflow, bench_minilm_compress, bench_scale: issues 16 and 18), then the forward benchmark
# in float32 and bfloat16 on CUDA, then the fused Triton kernel and CUDA graphs (bench_cuda.py),
# with a short table last.  Results go to $OUT (or benchmarks/out).
#   bash benchmarks/gpu_check.sh            # full grid: batches 1 64 1024 8192, bonds 4 8 16
#   bash benchmarks/gpu_check.sh --quick    # a few minutes at most
# On a lent device (15 minutes in all, its start included) run --quick first with a timeout of
# about 420 s; each leg prints '[gpu_check +N s] ... done', which sizes the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python -c "import torch, opt_einsum, numpy" 2>/dev/null || {
  echo "gpu_check: needs torch (CUDA build), opt_einsum and numpy in this python" >&2; exit 2; }
python -c "import scipy" 2>/dev/null || echo "gpu_check: scipy missing (only the stack tests need it)" >&2
python -c "import triton" 2>/dev/null || echo "gpu_check: triton not importable; the fused-kernel tests skip and bench_cuda reports its rows skipped" >&2
python -c "import tltorch" 2>/dev/null || echo "gpu_check: tensorly-torch not importable; its rows are left out" >&2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec python benchmarks/gpu_check.py "$@"

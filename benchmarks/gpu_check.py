"""The CUDA check: the ``gpu``-marked tests, then the forward benchmark on the GPU in float32 and
bfloat16, then the fused Triton kernel and CUDA graphs (``bench_cuda.py``), its short table last.
Run through ``benchmarks/gpu_check.sh`` on a CUDA machine.

    python benchmarks/gpu_check.py [--out DIR] [--batches 1 64 1024 8192] [--quick]

Writes ``DIR/gpu_tests.txt``, ``DIR/bench_<network>_<mode>_<dtype>.json`` / ``.md`` (MPO forward and
training step in float32 and bfloat16; Tucker and CP forward in bfloat16) and ``DIR/bench_cuda.json`` /
``.md`` (DIR defaults to $OUT or ``benchmarks/out``).  Exit status: the tests' status, or 1 if a
benchmark raised.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

#: Test files with ``gpu``-marked tests: strategies and layers, the fused Triton kernel, CUDA graphs.
GPU_TESTS = ["tests/test_gpu.py", "tests/test_nn_fused.py", "tests/test_nn_graphs.py"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT") or str(HERE / "out"))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024, 8192])
    p.add_argument("--ranks", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--quick", action="store_true", help="batches 1 1024, ranks 4 16, 5 repeats")
    p.add_argument("--skip-tests", action="store_true")
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch %s); nothing to check" % torch.__version__)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"gpu_check: {torch.cuda.get_device_name()} torch {torch.__version__} cuda {torch.version.cuda}", flush=True)

    status = 0
    if not args.skip_tests:
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", *GPU_TESTS, "-q", "-rs", "-p", "no:cacheprovider"]
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
        (out / "gpu_tests.txt").write_text(res.stdout + res.stderr)
        tail = (res.stdout + res.stderr).strip().splitlines()[-15:]
        print("\n".join(tail), flush=True)
        status = res.returncode

    import json

    import bench_forward

    if args.quick:
        args.batches, args.ranks, args.repeats = [1, 1024], [4, 16], 5
    summary = []
    # (network, mode, dtype, in/out dims, ranks): MPO forward in both dtypes first, then the training
    # step (forward + backward), the Tucker / CP fast paths ('modes') and the tensor ring ('ring')
    runs = [("mpo", "eval", "float32", [8, 8, 8, 8], args.ranks), ("mpo", "eval", "bfloat16", [8, 8, 8, 8], args.ranks),
            ("mpo", "step", "float32", [8, 8, 8, 8], args.ranks), ("mpo", "step", "bfloat16", [8, 8, 8, 8], args.ranks),
            ("tucker", "eval", "bfloat16", [64, 64], [16, 32]), ("cp", "eval", "bfloat16", [8, 8, 8, 8], [64, 256]),
            ("tr", "eval", "bfloat16", [8, 8, 8, 8], [4, 8])]
    if args.quick:
        runs = runs[:3]
    for network, mode, dtype, dims, ranks in runs:
        ns = bench_namespace(network, mode, dtype, dims, ranks, args.batches, args.repeats)
        tag = f"{network}_{mode}_{dtype}"
        try:
            result = bench_forward.run(ns)
        except Exception as exc:  # keep the test result; report the failure
            print(f"benchmark {tag} failed: {type(exc).__name__}: {exc}", flush=True)
            status = status or 1
            continue
        (out / f"bench_{tag}.json").write_text(json.dumps(result, indent=2))
        (out / f"bench_{tag}.md").write_text(bench_forward.markdown(result) + "\n")
        dtype = tag
        for row in result["rows"]:
            if row["method"] == "TNLinear auto":
                best_tl = max((r["speedup_vs_dense"] for r in result["rows"] if r["batch"] == row["batch"]
                               and r["rank"] == row["rank"] and r["method"].startswith("tltorch")), default=float("nan"))
                best_tn = max(r["speedup_vs_dense"] for r in result["rows"] if r["batch"] == row["batch"]
                              and r["rank"] == row["rank"] and r["method"].startswith("TNLinear"))
                summary.append((dtype, row, best_tn, best_tl))
        print(f"\n{dtype}: targets", flush=True)
        for line in bench_forward.targets(result):
            print("  " + line)
    print(f"\nSummary ({torch.cuda.get_device_name()}; speed-up vs nn.Linear, higher is better)")
    print(f"{'run':22} {'batch':>6} {'bond':>4} {'flops drop':>10} {'auto':>7} {'chose':>10} {'best TN':>8} {'tltorch':>8} {'vs best(dense,rebuilt)':>23}")
    for dtype, row, best_tn, best_tl in summary:
        print(f"{dtype:22} {row['batch']:>6} {row['rank']:>4} {row['flops_drop']:>9.1f}x {row['speedup_vs_dense']:>6.2f}x "
              f"{row['auto_chose']:>10} {best_tn:>7.2f}x {best_tl:>7.2f}x {row['vs_best_dense_rebuilt']:>22.2f}x")
    tests_status = status
    cuda_lines = _bench_cuda(out, args.quick)
    if cuda_lines is None:
        status = status or 1
    else:
        print(f"\nFused Triton kernel and CUDA graphs ({torch.cuda.get_device_name()}; bench_cuda.md has every row)")
        print("\n".join(cuda_lines))
    print(f"\ngpu tests: {'passed' if tests_status == 0 else 'FAILED (see gpu_tests.txt)'}; "
          f"bench_cuda: {'ran' if cuda_lines is not None else 'FAILED (its error is printed above)'}")
    return status


def bench_namespace(network: str, mode: str, dtype: str, dims: list[int], ranks: list[int], batches: list[int],
                    repeats: int, device: str = "cuda") -> argparse.Namespace:
    """The arguments of one ``bench_forward.run`` (every field its command line has)."""
    return argparse.Namespace(device=device, dtype=dtype, mode=mode, input_grad=False, batches=batches, ranks=ranks,
                              in_dims=dims, out_dims=dims, repeats=repeats, network=network, no_tltorch=False,
                              verbose=False)


def _bench_cuda(out: Path, quick: bool) -> list[str] | None:
    """Run bench_cuda.py (its ``--quick`` grid with ``quick``); its summary lines, None if it raised."""
    import json

    import bench_cuda

    try:
        result = bench_cuda.run(bench_cuda.parse_args(["--quick"] if quick else []))
    except Exception as exc:  # keep the test result; report the failure
        print(f"benchmark bench_cuda failed: {type(exc).__name__}: {exc}", flush=True)
        return None
    (out / "bench_cuda.json").write_text(json.dumps(result, indent=2))
    (out / "bench_cuda.md").write_text(bench_cuda.markdown(result) + "\n")
    return bench_cuda.summary(result)


if __name__ == "__main__":
    raise SystemExit(main())

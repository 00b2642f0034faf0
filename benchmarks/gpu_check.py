"""The CUDA check: the ``gpu``-marked tests, then the model workflow on the GPU (issues 16 and 18),
then the forward benchmark on the GPU in float32 and bfloat16, then the fused Triton kernel and
CUDA graphs (``bench_cuda.py``), its short table last.  Run through ``benchmarks/gpu_check.sh`` on a
CUDA machine.

    python benchmarks/gpu_check.py [--out DIR] [--batches 1 64 1024 8192] [--quick]

The workflow legs, each with its table in DIR and its lines in the summary:

* ``bench_workflow.py --device cuda``: the interactive MiniLM / digits steps of issue 16 as a user
  meets them (Run compression, the CLI as a whole process, sensitivity, healing, Spectra), on the
  GPU (``workflow_cuda.md``); issue 16 item 6 asks for the MiniLM workflow in under 1 s.
* ``bench_minilm_compress.py``: the MiniLM compression on CUDA against the CPU in one run, with its
  quality (``minilm_compress.json``).
* ``bench_scale.py --data-aware --devices cuda cpu``: a LLaMA-shaped sharded folder compressed
  data-aware, block by block and whole, on the GPU and the CPU: seconds per weight (``scale_cuda.md``;
  issue 18, the data-aware path's throughput on the GPU).  nccl on one GPU (world size 1) is a
  ``gpu`` test of ``tests/test_model_distributed.py``: tiny LLaMA, Qwen2 and GPT-2 folders under
  ``torchrun --nproc-per-node=1``, byte-identical to the single-process folder.

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
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

#: Test files with ``gpu``-marked tests: strategies and layers, the fused Triton kernel, CUDA graphs, calibration,
#: block by block and nccl on one GPU (tests/test_benchmarks.py checks that no such file is missing).
GPU_TESTS = ["tests/test_gpu.py", "tests/test_nn_fused.py", "tests/test_nn_graphs.py", "tests/test_model_blockwise.py",
             "tests/test_model_calibrate.py", "tests/test_model_distributed.py"]


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
    began = time.perf_counter()

    def mark(leg: str) -> None:  # where the device's minutes went, for the next session's timeout
        print(f"[gpu_check +{time.perf_counter() - began:4.0f} s] {leg} done", flush=True)

    if not args.skip_tests:
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", *GPU_TESTS, "-q", "-rs", "-p", "no:cacheprovider"]
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
        (out / "gpu_tests.txt").write_text(res.stdout + res.stderr)
        tail = (res.stdout + res.stderr).strip().splitlines()[-15:]
        print("\n".join(tail), flush=True)
        status = res.returncode

    mark("gpu tests")
    workflow_lines = _workflow(out, args.quick)
    mark("model workflow")
    if workflow_lines is None:
        status = status or 1
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
    mark("forward benchmarks")
    cuda_lines = _bench_cuda(out, args.quick)
    mark("bench_cuda")
    if cuda_lines is None:
        status = status or 1
    else:
        print(f"\nFused Triton kernel and CUDA graphs ({torch.cuda.get_device_name()}; bench_cuda.md has every row)")
        print("\n".join(cuda_lines))
    print(f"\nThe model workflow on {torch.cuda.get_device_name()} (issues 16 and 18; the tables are in {out})")
    print("\n".join(workflow_lines or ["  FAILED (the errors are printed above)"]))
    print(f"\ngpu tests: {'passed' if tests_status == 0 else 'FAILED (see gpu_tests.txt)'}; "
          f"bench_cuda: {'ran' if cuda_lines is not None else 'FAILED (its error is printed above)'}")
    return status


#: The workflow steps whose target on the GPU is issue 16 item 6's: the MiniLM workflow in under 1 s.
GPU_TARGETS = {"Tensorize: MiniLM Run compression (data-aware, FFN at 2x)": 1.0}


def _workflow(out: Path, quick: bool, device: str = "cuda") -> list[str] | None:
    """The model workflow on CUDA: bench_workflow's steps, bench_minilm_compress (CUDA against the
    CPU), bench_scale's data-aware folder (CUDA against the CPU).  Its summary lines; None if a leg
    failed (the others still run).  ``device="cpu"`` rehearses the legs where there is no GPU."""
    import json

    import bench_workflow

    lines, failed = [], False
    try:
        bench_workflow.DEVICE = device
        rows = bench_workflow.steps(1 if quick else 3)
        header = bench_workflow.machine()
        (out / f"workflow_{device}.md").write_text(bench_workflow.markdown(rows, f"{header}, device {device}",
                                                                            1 if quick else 3))
        for r in rows:
            target = GPU_TARGETS.get(r["step"])
            met = "" if target is None else f"  target < {target:g} s: {'met' if r['seconds'] < target else 'NOT met'}"
            lines.append(f"  {r['step'][:78]:78} {r['seconds']:7.2f} s{met}")
    except Exception as exc:  # keep the other legs
        print(f"benchmark bench_workflow ({device}) failed: {type(exc).__name__}: {exc}", flush=True)
        failed = True
    finally:
        bench_workflow.DEVICE = "cpu"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    devices = list(dict.fromkeys([device, "cpu"]))
    legs = [("bench_minilm_compress", [str(HERE / "bench_minilm_compress.py"), "--out", str(out), "--devices",
                                       ",".join(devices)]
             + (["--methods", "mpo", "--placements", "auto"] if quick else [])),
            ("bench_scale", [str(HERE / "bench_scale.py"), "--data-aware", "--devices", *devices,
                             "--sizes", "0.25", *([] if quick else ["--whole-at", "0.25"])])]
    for name, cmd in legs:
        res = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True, env=env)
        (out / f"{name}_{device}.txt").write_text(res.stdout + res.stderr)
        if res.returncode != 0:
            print(f"benchmark {name} failed (exit {res.returncode}):\n" + (res.stdout + res.stderr)[-2000:], flush=True)
            failed = True
            continue
        if name == "bench_minilm_compress":
            rows = json.loads((out / "minilm_compress.json").read_text())["rows"]
            for r in rows:
                if r["bond_split"] in ("data", "-") and r["placement"] in ("auto", "-", "chain") and not r["order_search"]:
                    lines.append(f"  MiniLM FF 2x {r['method']:<4} {'data-aware' if r['data_aware'] else 'plain':<10} "
                                 f"{r['placement']:<6} on {r['device']:<4}: {r['seconds']:6.2f} s, cosine {r['cosine']:.4f}")
        else:  # its rows, printed as they finish and again in its table: once each, under the table's header
            table = [ln for ln in res.stdout.splitlines() if ln.startswith("| ")]
            header = [ln for ln in table if ln.startswith("| folder")][:1]
            lines += ["  " + ln for ln in dict.fromkeys(header + [ln for ln in table if ln[2:3].isdigit()])]
    return None if failed else lines


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

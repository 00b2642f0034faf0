"""The CUDA paths of issue 7: the fused Triton MPO kernel (``tnviz.nn.fused``) and CUDA-graph replay
of small batches (``tnviz.nn.graphs``), against ``nn.Linear`` (eager and graphed) and the ``chain``
strategy, in one run per (dtype, batch, bond).

    python benchmarks/bench_cuda.py                 # CUDA: float32 and bfloat16, batches 1 8 64 1024 8192
    python benchmarks/bench_cuda.py --quick         # bfloat16 and float32, batches 1 64 1024, bonds 4 16
    python benchmarks/bench_cuda.py --device cpu    # smoke run: no kernel, no graphs (rows say so)

Inference rows (``eval``): eval mode under ``no_grad``; ``graphed`` = wrapped in
:class:`tnviz.nn.graphs.GraphedModule` (replayed at batches up to its ``max_batch``; eager above).
Training rows (``step``): forward, then backward from an output gradient ``g``, for chain and
fused.  Every row also reports its error against a float64 dense reference, so a wrong kernel shows in the table.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tnviz  # noqa: E402
from tnviz.nn import TNLinear  # noqa: E402
from tnviz.nn.fused import FUSED  # noqa: E402
from tnviz.nn.fused_launch import available, triton_importable  # noqa: E402
from tnviz.nn.graphs import GraphedModule  # noqa: E402
from tnviz.nn.measure import time_interleaved  # noqa: E402


def _step(module: nn.Module, x: torch.Tensor, g: torch.Tensor) -> Callable[[], None]:
    def run():
        for p in module.parameters():
            p.grad = None
        module(x).backward(g)
    return run


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    dims = args.dims
    n = math.prod(dims)
    rows = []
    skipped = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for rank in args.ranks:
            net = tnviz.mpo(dims, dims, ranks=rank)
            torch.manual_seed(0)
            tn = TNLinear(net, device=device, dtype=dtype, strategy="chain")
            auto = TNLinear(net, device=device, dtype=dtype)
            auto.load_state_dict(tn.state_dict())
            dense = tn.to_linear()  # the same weight, so every row computes the same function
            ref_w = tn.to_dense().detach().double()
            ref_b = tn.bias.detach().double()
            eval_methods = {
                "nn.Linear": dense, "nn.Linear graphed": GraphedModule(dense, args.max_graph_batch),
                "TNLinear auto": auto, "TNLinear auto graphed": GraphedModule(auto, args.max_graph_batch),
                "TNLinear chain": tn,
            }
            step_methods = {"nn.Linear": dense, "TNLinear chain": tn}
            if FUSED.supports(net):
                fused = TNLinear(net, device=device, dtype=dtype, strategy="fused")
                fused.load_state_dict(tn.state_dict())
                eval_methods["TNLinear fused"] = fused
                eval_methods["TNLinear fused graphed"] = GraphedModule(fused, args.max_graph_batch)
                step_methods["TNLinear fused"] = fused
            elif not skipped:  # the optional dependency is missing: said once, in the result
                skipped.append(f"TNLinear fused: {_fused_missing()}")
            for batch in args.batches:
                x = torch.randn(batch, n, device=device, dtype=dtype)
                g = torch.randn(batch, n, device=device, dtype=dtype)
                ref = x.double() @ ref_w.T + ref_b
                for m in eval_methods.values():
                    m.eval()
                with torch.no_grad():
                    outs = {k: m(x) for k, m in eval_methods.items()}
                    ms = time_interleaved({k: (lambda m=m: m(x)) for k, m in eval_methods.items()}, device,
                                          args.repeats, min_seconds=0.01)
                for k in eval_methods:
                    rows.append(_row(dtype_name, rank, batch, "eval", k, ms[k], ms["nn.Linear"], outs[k], ref))
                if batch in args.step_batches:
                    step = step_methods
                    for m in step.values():
                        m.train()
                    outs = {k: m(x).detach() for k, m in step.items()}
                    ms = time_interleaved({k: _step(m, x, g) for k, m in step.items()}, device, args.repeats,
                                          min_seconds=0.01)
                    for k in step:
                        rows.append(_row(dtype_name, rank, batch, "step", k, ms[k], ms["nn.Linear"], outs[k], ref))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke run)"
    return {"machine": f"{name}, torch {torch.__version__}", "device": str(device), "dims": dims,
            "fused_kernel": available(device), "graphs": device.type == "cuda", "rows": rows, "skipped": skipped}


def _fused_missing() -> str:
    return ("skipped: triton is not installed (optional dependency)" if not triton_importable()
            else "skipped: the strategy does not fit this network")


def _row(dtype, rank, batch, mode, method, ms, dense_ms, out, ref) -> dict[str, Any]:
    err = float((out.double() - ref).abs().max() / ref.abs().max())
    return {"dtype": dtype, "bond": rank, "batch": batch, "mode": mode, "method": method, "ms": ms,
            "speedup_vs_dense": dense_ms / ms, "rel_error": err}


def markdown(result: dict[str, Any]) -> str:
    dims = tuple(result["dims"])
    out = [f"Machine: {result['machine']} ({result['device']}); MPO {math.prod(dims)}x{math.prod(dims)} as {dims}x{dims}; "
           f"fused kernel ran: {result['fused_kernel']}, graphs replayed: {result['graphs']}. "
           "Speed-up = nn.Linear ms / method ms in the same mode (eager nn.Linear).",
           *(["", *result.get("skipped", [])] if result.get("skipped") else []),
           "", "| dtype | bond | batch | mode | method | ms | speed-up vs nn.Linear | max rel. error |",
           "|---|---:|---:|---|---|---:|---:|---:|"]
    for r in result["rows"]:
        out.append(f"| {r['dtype']} | {r['bond']} | {r['batch']} | {r['mode']} | {r['method']} | {r['ms']:.4f} | "
                   f"{r['speedup_vs_dense']:.2f}x | {r['rel_error']:.1e} |")
    return "\n".join(out)


def summary(result: dict[str, Any]) -> list[str]:
    """One line per (dtype, bond, batch, mode): the fastest method and the fused / graphed ratios."""
    lines = [f"{'dtype':9} {'bond':>4} {'batch':>6} {'mode':5} {'fastest':22} {'fused/chain':>11} "
             f"{'graphed/eager auto':>18} {'worst err':>9}"]
    groups: dict[tuple, dict[str, dict]] = {}
    for r in result["rows"]:
        groups.setdefault((r["dtype"], r["bond"], r["batch"], r["mode"]), {})[r["method"]] = r
    for (dtype, bond, batch, mode), g in groups.items():
        fastest = min(g.values(), key=lambda r: r["ms"])
        fused = g.get("TNLinear fused", {}).get("ms")
        chain = g["TNLinear chain"]["ms"]
        versus_chain = f"{chain / fused:.2f}x" if fused else "skipped"
        graphed = g.get("TNLinear auto graphed", {}).get("ms")
        ratio = f"{g['TNLinear auto']['ms'] / graphed:.2f}x" if graphed else "-"
        worst = max(r["rel_error"] for r in g.values())
        lines.append(f"{dtype:9} {bond:>4} {batch:>6} {mode:5} {fastest['method']:22} {versus_chain:>11} "
                     f"{ratio:>18} {worst:>9.1e}")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--dims", type=int, nargs="+", default=[8, 8, 8, 8])
    p.add_argument("--ranks", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64, 1024, 8192])
    p.add_argument("--step-batches", type=int, nargs="+", default=[64, 1024],
                   help="batches at which the training step (chain vs fused vs dense) is timed too")
    p.add_argument("--max-graph-batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="batches 1 64 1024, bonds 4 16, step at 1024, 5 repeats")
    p.add_argument("--json", help="write the result as JSON here")
    p.add_argument("--md", help="write the markdown table here")
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.ranks, args.step_batches, args.repeats = [1, 64, 1024], [4, 16], [1024], 5
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    table = markdown(result)
    if args.md:
        Path(args.md).write_text(table + "\n")
    print(table)
    print()
    print("\n".join(summary(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

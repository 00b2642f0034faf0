"""Forward time of TNLinear (every strategy and auto) against nn.Linear and TensorLy-Torch.

One process, one device, interleaved repeats, medians; results are ratios ``dense ms / method ms``
(higher is better) measured in the same run.  Layer: 4096 -> 4096 as (8,8,8,8) -> (8,8,8,8) by
default, MPO bonds 4, 8, 16, batches 1, 64, 1024.

    python benchmarks/bench_forward.py                       # CPU, float32, the SPEC grid
    python benchmarks/bench_forward.py --device cuda --dtype bfloat16 --batches 1 64 1024 8192
    python benchmarks/bench_forward.py --json out.json --quick

Modes: ``eval`` (default; ``model.eval()`` under ``torch.no_grad()``, where the rebuilt weight and
merged cores are cached), ``train`` (gradients enabled, nothing cached; forward only) and ``step``
(one training step of the layer: forward, then backward from an output gradient ``g`` into every
parameter's ``.grad``; with ``--input-grad`` into the input's too, as for a layer inside a network).
In ``step`` mode the FLOPs drop is that of the training step, forward and backward (nn.Linear does
2 matmuls, 3 with the input's gradient), not the forward's: ``tnviz.cost``'s
``training_step_flops``.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from typing import Any

import torch

import tnviz
from tnviz.nn import STRATEGIES, TNLinear
from tnviz.nn.measure import time_interleaved as _time_interleaved
from tnviz.cost import training_step_flops
from tnviz.nn.chain import plan_chain
from tnviz.nn.strategies import measured_only


#: --network: how the layer is tensorized at a given rank (TensorLy-Torch is compared on mpo only)
NETWORKS = {
    "mpo": lambda i, o, r: tnviz.mpo(i, o, ranks=r),
    "tucker": lambda i, o, r: tnviz.tucker(i, o, ranks=r),
    "cp": lambda i, o, r: tnviz.cp(i, o, rank=r),
    "tr": lambda i, o, r: tnviz.tensor_ring(i, o, ranks=r),
}


def tltorch_layers(in_dims, out_dims, rank, device, dtype) -> dict[str, torch.nn.Module]:
    try:
        from tltorch import FactorizedLinear
    except Exception:  # not installed or does not import with this torch
        return {}
    out = {}
    for impl in ("factorized", "reconstructed"):
        out[f"tltorch blocktt {impl}"] = FactorizedLinear(
            in_tensorized_features=tuple(in_dims), out_tensorized_features=tuple(out_dims),
            factorization="blocktt", rank=rank, implementation=impl, device=device, dtype=dtype,
        )
    return out


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = " load average %.1f %.1f %.1f at start," % __import__("os").getloadavg()
    except OSError:
        load = ""
    return f"{cpu}, {torch.get_num_threads()} threads,{load} torch {torch.__version__}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    in_dims, out_dims = args.in_dims, args.out_dims
    n_in, n_out = math.prod(in_dims), math.prod(out_dims)
    torch.manual_seed(0)
    rows = []
    dense = torch.nn.Linear(n_in, n_out, device=device, dtype=dtype)
    train = args.mode in ("train", "step")
    step = args.mode == "step"
    input_grad = args.input_grad
    for batch in args.batches:
        x = torch.randn(batch, n_in, device=device, dtype=dtype, requires_grad=step and input_grad)
        g = torch.randn(batch, n_out, device=device, dtype=dtype)
        for rank in args.ranks:
            net = NETWORKS[getattr(args, "network", "mpo")](in_dims, out_dims, rank)
            c = tnviz.cost(net, batch=batch)
            layers: dict[str, torch.nn.Module] = {"nn.Linear": dense}
            tn = {}
            runnable = [s for s in STRATEGIES if STRATEGIES[s].supports(net)
                        and not (measured_only(s) and not STRATEGIES[s].available(device))]
            for name in ["auto", *runnable]:
                tn[name] = TNLinear(net, device=device, dtype=dtype, strategy=name)
                tn[name].load_state_dict(tn.get("auto", tn[name]).state_dict())
                layers[f"TNLinear {name}"] = tn[name]
            tuned = TNLinear(net, device=device, dtype=dtype, autotune=True)  # auto by measured time
            tuned.load_state_dict(tn["auto"].state_dict())
            layers["TNLinear auto (autotune)"] = tuned
            if not args.no_tltorch and getattr(args, "network", "mpo") == "mpo":
                layers.update(tltorch_layers(in_dims, out_dims, rank, device, dtype))
            for m in layers.values():
                m.train(train)
            ctx = torch.enable_grad if train else torch.no_grad
            with ctx():
                if step:
                    fns = {name: (lambda m=m: _train_step(m, x, g)) for name, m in layers.items()}
                else:
                    fns = {name: (lambda m=m: m(x)) for name, m in layers.items()}
                ms = _time_interleaved(fns, device, args.repeats, min_seconds=0.02)
            ref = ms["nn.Linear"]
            best_of_dense_rebuilt = min(ref, ms.get("TNLinear rebuilt", ref))
            chose = tn["auto"].last_strategy
            tuned_chose = tuned.last_strategy
            segments = plan_chain(net, batch, not train).describe() if "chain" in tn else ""
            if step:
                layer_flops, dense_flops = training_step_flops(net, batch, input_grad)
                flops_ratio = dense_flops / layer_flops
            else:
                flops_ratio = c.dense_flops / c.flops
            for name, t in ms.items():
                rows.append({
                    "batch": batch, "rank": rank, "method": name, "ms": t, "speedup_vs_dense": ref / t,
                    "params": sum(p.numel() for p in layers[name].parameters()),
                    "flops_drop": flops_ratio,
                    "auto_chose": chose if name == "TNLinear auto" else tuned_chose if name == "TNLinear auto (autotune)" else "",
                    "chain_segments": segments if name in ("TNLinear chain", "TNLinear auto") else "",
                    "vs_best_dense_rebuilt": t / best_of_dense_rebuilt,
                })
            if args.verbose:
                print(f"B={batch} r={rank} flops drop {flops_ratio:.1f}x  auto->{chose}  "
                      + "  ".join(f"{k}: {v:.3f}ms ({ref / v:.2f}x)" for k, v in ms.items()), file=sys.stderr)
    return {
        "device": str(device), "machine": machine(device), "dtype": args.dtype, "mode": args.mode,
        "network": getattr(args, "network", "mpo"), "input_grad": step and input_grad,
        "in_dims": in_dims, "out_dims": out_dims, "repeats": args.repeats,
        "tltorch": _tltorch_version(), "rows": rows,
    }


def _train_step(module: torch.nn.Module, x: torch.Tensor, g: torch.Tensor) -> None:
    """Forward, then backward from the output gradient ``g`` (what the layers above would send);
    grads reset first.  No loss is computed: ``(y * g).sum()`` costs two full-size products and
    allocations, a fixed cost that is not the layer's and that hid a fast layer's speed-up (it was
    a quarter of a Tucker step at batch 1024)."""
    for p in module.parameters():
        p.grad = None
    x.grad = None
    module(x).backward(g)


def _tltorch_version() -> str:
    try:
        import tltorch

        return tltorch.__version__
    except Exception as exc:  # report why, do not fail the benchmark
        return f"not available ({type(exc).__name__})"


def targets(result: dict[str, Any]) -> list[str]:
    """SPEC 5 targets, checked on the auto strategy: (a) never slower than 1.1x the better of dense
    and rebuilt; (b) where FLOPs drop >= 4x, at least half that factor faster than nn.Linear."""
    lines = []
    for row in result["rows"]:
        if row["method"] not in ("TNLinear auto", "TNLinear auto (autotune)"):
            continue
        a = row["vs_best_dense_rebuilt"] <= 1.1
        need = row["flops_drop"] / 2 if row["flops_drop"] >= 4 else None
        b = need is None or row["speedup_vs_dense"] >= need
        lines.append(
            f"B={row['batch']:<5} r={row['rank']:<3} {'tuned' if 'autotune' in row['method'] else 'auto '}={row['auto_chose']:<10} "
            f"{row['speedup_vs_dense']:6.2f}x dense (FLOPs allow {row['flops_drop']:.1f}x) "
            f"[<=1.1x best(dense,rebuilt): {'ok' if a else 'MISSED'}; "
            f"{'>= ' + format(need, '.1f') + 'x: ' + ('ok' if b else 'MISSED') if need else 'flop drop < 4x'}]"
        )
    return lines


def markdown(result: dict[str, Any]) -> str:
    mode = result["mode"]
    if mode == "step":
        mode += (" (input with gradient: a layer inside a network" if result.get("input_grad")
                 else " (input without gradient: a first layer") + "; FLOPs drop of the training step)"
    out = [f"Machine: {result['machine']} ({result['device']}), {result['dtype']}, mode {mode}, "
           f"{result.get('network', 'mpo')} layer {math.prod(result['in_dims'])}x{math.prod(result['out_dims'])} as {tuple(result['in_dims'])}"
           f"x{tuple(result['out_dims'])}, TensorLy-Torch {result['tltorch']}. Speed-up = nn.Linear ms / method ms.",
           "", "| batch | bond | FLOPs drop | method | ms | speed-up vs nn.Linear | note |",
           "|---:|---:|---:|---|---:|---:|---|"]
    for row in result["rows"]:
        note = row["auto_chose"] and f"chose {row['auto_chose']}"
        if row["chain_segments"] and row["method"] == "TNLinear chain":
            note = f"segments {row['chain_segments']}".replace("|", "\\|")
        out.append(f"| {row['batch']} | {row['rank']} | {row['flops_drop']:.1f}x | {row['method']} | "
                   f"{row['ms']:.3f} | {row['speedup_vs_dense']:.2f}x | {note} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    p.add_argument("--mode", default="eval", choices=["eval", "train", "step"])
    p.add_argument("--input-grad", action="store_true",
                   help="step mode: the input needs its gradient too (a layer inside a network); "
                        "default: it does not (a first layer)")
    p.add_argument("--network", default="mpo", choices=list(NETWORKS), help="tensorization (rank = bond / Tucker rank / CP rank)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    p.add_argument("--ranks", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--in-dims", type=int, nargs="+", default=[8, 8, 8, 8])
    p.add_argument("--out-dims", type=int, nargs="+", default=[8, 8, 8, 8])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice); 1 gives steadier ratios on a shared machine")
    p.add_argument("--no-tltorch", action="store_true")
    p.add_argument("--quick", action="store_true", help="batches 1 64, ranks 4 16, 3 repeats (smoke run)")
    p.add_argument("--json", help="write the result as JSON here")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.batches, args.ranks, args.repeats = [1, 64], [4, 16], 3
    result = run(args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    print(markdown(result))
    print()
    print("SPEC 5 targets (auto strategy):")
    for line in targets(result):
        print("  " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

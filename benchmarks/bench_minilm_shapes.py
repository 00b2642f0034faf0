"""Does a TN layer run its fastest strategy on real shapes?  MiniLM's linear layers, every
strategy, ``auto``, ``nn.Linear`` and TensorLy-Torch, eval and train, batch 1 / 64 / 1024.

The networks are the ones tnviz writes: all 36 linear layers of all-MiniLM-L6-v2 (bundled, loaded
offline) compressed by ``tnviz.compress`` with the defaults (MPO, ratio 2, data-aware, legs placed
inputs-last), which gives 3 distinct networks (24 attention 384x384 weights, 6 intermediate
384->1536, 6 output 1536->384); plus, for each of the 3 shapes, the plain chain MPO at uniform
bond 8 and 32 (one input and one output leg per core), the layout TensorLy-Torch's block-TT
``FactorizedLinear`` also has, so that it is compared on exactly the same ranks.

One process, interleaved repeats, medians (:func:`tnviz.nn.timing.time_interleaved`); each row
gives ms and the ratio ``nn.Linear ms / method ms``.  ``auto / best`` is auto's time over the best
of tnviz's own strategies and of TensorLy-Torch's two implementations in the same cell; the issue's
target is <= 1.1 in every cell.  ``train`` is a forward with gradients on (nothing cached);
``eval`` is ``model.eval()`` under ``torch.no_grad()`` (the rebuilt weight and merged cores
cached).

    python benchmarks/bench_minilm_shapes.py                      # the full table (~3 min)
    python benchmarks/bench_minilm_shapes.py --quick --out /tmp/s # batch 1 and 64, 3 repeats
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_forward import machine, tltorch_layers, _tltorch_version  # noqa: E402

import tnviz  # noqa: E402
from tnviz.nn import STRATEGIES, TNLinear  # noqa: E402
from tnviz.nn.strategies import decide, measured_only  # noqa: E402
from tnviz.nn.timing import time_interleaved  # noqa: E402

MODES = ("eval", "train")


def minilm_networks() -> list[dict[str, Any]]:
    """The distinct networks of MiniLM compressed with the defaults, with how many layers each
    stands for; then the uniform chain MPOs on the same legs."""
    result = tnviz.compress("minilm", ratio=2.0, layers=r"encoder\.layer\.")
    found: dict[str, dict[str, Any]] = {}
    for layer in result.layers:
        net = layer.network
        key = net.to_json()
        entry = found.setdefault(key, {"name": layer.name, "network": net, "count": 0, "kind": "tnviz default"})
        entry["count"] += 1
    out = list(found.values())
    for entry in list(out):
        net = entry["network"]
        for bond in (8, 32):
            out.append({"name": entry["name"], "count": 0, "kind": f"chain bond {bond}",
                        "network": tnviz.mpo(list(net.in_dims), list(net.out_dims), ranks=bond), "bond": bond})
    return out


def cell(entry: dict[str, Any], batch: int, mode: str, repeats: int, with_tltorch: bool) -> dict[str, Any]:
    net = entry["network"]
    train = mode == "train"
    torch.manual_seed(0)
    x = torch.randn(batch, net.in_features)
    layers: dict[str, torch.nn.Module] = {"nn.Linear": torch.nn.Linear(net.in_features, net.out_features)}
    auto = TNLinear(net)
    layers["auto"] = auto
    own = [s for s in STRATEGIES if STRATEGIES[s].supports(net)
           and not (measured_only(s) and not STRATEGIES[s].available("cpu"))]
    for name in own:
        layer = TNLinear(net, strategy=name)
        layer.load_state_dict(auto.state_dict())
        layers[name] = layer
    if with_tltorch and "bond" in entry:
        layers.update({k.replace("tltorch blocktt ", "tltorch "): m for k, m in
                       tltorch_layers(net.in_dims, net.out_dims, entry["bond"], "cpu", torch.float32).items()})
    for m in layers.values():
        m.train(train)
    ctx = torch.enable_grad if train else torch.no_grad
    with ctx():
        ms = time_interleaved({k: (lambda m=m: m(x)) for k, m in layers.items()}, "cpu", repeats, min_seconds=0.02)
    decision = decide(net, batch, cached=not train)
    contenders = {k: v for k, v in ms.items() if k not in ("nn.Linear", "auto")}
    best = min(contenders, key=contenders.get)
    return {
        "layer": entry["name"], "kind": entry["kind"], "count": entry["count"],
        "shape": f"{net.in_features}->{net.out_features}", "batch": batch, "mode": mode,
        "ms": ms, "auto_chose": auto.last_strategy, "model_pick": decision.strategy,
        "estimates": decision.estimates, "best": best, "auto_over_best": ms["auto"] / ms[best],
        "auto_over_best_own": ms["auto"] / min(ms[s] for s in own),
        "speedup": {k: ms["nn.Linear"] / v for k, v in ms.items()},
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Machine: {result['machine']}; TensorLy-Torch {result['tltorch']}. Cells: ms of auto, "
             "its pick, the fastest contender, and speed-ups vs nn.Linear (higher is better).", "",
             "| layer (count) | network | mode | batch | auto ran | auto x | best | best x | tltorch x | auto / best |",
             "|---|---|---|---:|---|---:|---|---:|---:|---:|"]
    for r in result["rows"]:
        tl = [v for k, v in r["speedup"].items() if k.startswith("tltorch")]
        short = r["layer"].replace("encoder.layer.", "").replace(".dense", "")
        lines.append(f"| {short} ({r['count']}) {r['shape']} | {r['kind']} | {r['mode']} | {r['batch']} | "
                     f"{r['auto_chose']} | {r['speedup']['auto']:.2f}x | {r['best']} | "
                     f"{r['speedup'][r['best']]:.2f}x | {f'{max(tl):.2f}x' if tl else '-'} | "
                     f"{r['auto_over_best']:.2f} |")
    ratios = [r["auto_over_best"] for r in result["rows"]]
    met = sum(x <= 1.1 for x in ratios)
    lines += ["", f"auto within 1.1x of the best in {met} of {len(ratios)} cells "
              f"(median auto / best {statistics.median(ratios):.2f}, worst {max(ratios):.2f})."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-tltorch", action="store_true")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice); 1 gives steadier ratios on a shared machine")
    p.add_argument("--quick", action="store_true", help="batches 1 and 64, 3 repeats")
    p.add_argument("--out", help="a folder: writes minilm_shapes.json and minilm_shapes.md there")
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.repeats = [1, 64], 3
    if args.threads:
        torch.set_num_threads(args.threads)
    entries = minilm_networks()
    rows = [cell(e, b, m, args.repeats, not args.no_tltorch)
            for e in entries for m in args.modes for b in args.batches]
    for r in rows:
        r.pop("estimates")
    result = {"machine": machine(torch.device("cpu")), "tltorch": _tltorch_version(), "rows": rows}
    text = markdown(result)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "minilm_shapes.json").write_text(json.dumps(result, indent=2))
        (out / "minilm_shapes.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

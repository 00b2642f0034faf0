"""Per-call fixed overhead of ``TNLinear`` at batch 1 with a cached weight (issue 16.4: < 10 µs).

In eval mode without gradients a ``TNLinear`` whose strategy rebuilds the dense weight caches it,
so a batch-1 call does the matmul ``nn.Linear`` does plus tnviz's own bookkeeping (the layers here
are built with ``strategy="rebuilt"``, so the matmul is the same at every size; ``auto`` picks
``chain`` for the larger ones, faster than ``nn.Linear``, which would hide the overhead): the weight
version check, the plan lookup, the bias.  This script times both modules on the same input,
interleaved, one torch thread, and reports the minimum over rounds (the least-disturbed
measurement of a fixed cost) and the difference: the overhead.  2-D inputs ``(1, in)`` and 3-D
``(1, 1, in)`` (a sequence of one token), MPO layers of three sizes.

    python benchmarks/bench_overhead.py [--rounds 40] [--round-ms 20]
"""
from __future__ import annotations

import argparse
import os
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SHAPES = [((4, 8, 12), 8), ((8, 8, 16), 8), ((8, 12, 16), 16)]  # in dims (= out dims), bond: 384, 1024, 1536


def machine() -> str:
    from bench_scale import machine as host  # the CPU's name, cores, RAM and torch, as every table here says

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{host()} (1 thread), load average {load:.2f} at start"


def measure(rounds: int = 40, round_s: float = 0.02, shapes=SHAPES) -> list[dict]:
    import torch

    import tnviz
    from tnviz.nn import TNLinear

    torch.set_num_threads(1)
    rows = []
    with torch.no_grad():
        for dims, bond in shapes:
            net = tnviz.mpo(dims, dims, ranks=bond)
            layer = TNLinear(net, strategy="rebuilt").eval()  # the cached dense weight: nn.Linear's matmul
            dense = torch.nn.Linear(net.in_features, net.out_features).eval()
            for lead in ((1,), (1, 1)):
                x = torch.randn(*lead, net.in_features)
                layer(x)  # plan and cache made once
                calls = max(3, int(round_s / max(timeit.timeit(lambda: dense(x), number=20) / 20, 1e-7)))
                best = {"tn": float("inf"), "linear": float("inf")}
                for _ in range(rounds):
                    for name, module in (("tn", layer), ("linear", dense)):
                        t = timeit.timeit(lambda m=module: m(x), number=calls) / calls
                        best[name] = min(best[name], t)
                rows.append({"layer": f"{net.in_features}x{net.out_features} bond {bond}", "input": f"{len(lead) + 1}-D",
                             "strategy": layer.last_strategy, "tn_us": best["tn"] * 1e6,
                             "linear_us": best["linear"] * 1e6, "overhead_us": (best["tn"] - best["linear"]) * 1e6})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| layer | input | strategy | TNLinear µs | nn.Linear µs | overhead µs | target < 10 µs |",
             "|---|---|---|---:|---:|---:|:-:|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['input']} | {r['strategy']} | {r['tn_us']:.1f} | {r['linear_us']:.1f} | "
                     f"{r['overhead_us']:.1f} | {'yes' if r['overhead_us'] < 10 else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40, help="interleaved rounds (the minimum is reported)")
    ap.add_argument("--round-ms", type=float, default=20.0, dest="round_ms", help="milliseconds per round and module")
    args = ap.parse_args(argv)
    print(f"Machine: {machine()}. Minimum over {args.rounds} interleaved rounds of about {args.round_ms:g} ms "
          f"per module.\n")
    print(markdown(measure(args.rounds, args.round_ms / 1000)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Time the whole MiniLM compression on CUDA against the CPU in one run, and measure its quality.

For each device (CUDA skipped when absent) and method: load all-MiniLM-L6-v2, collect calibration
statistics (bundled sentences), decompose and replace the chosen layers, all timed end to end
(model load excluded); then the held-out embedding cosine against the original. With
``--heal STEPS`` each variant is also healed layer-wise and measured again.

    python benchmarks/bench_minilm_compress.py                     # FF layers at 2x, svd + mpo
    python benchmarks/bench_minilm_compress.py --layers all --heal 100 --out benchmarks/out
    python benchmarks/bench_minilm_compress.py --devices cpu --data-aware-only --placements auto \
        --order-search --ratio 4                                   # + the MPO after the neuron-order search

Prints a short table; ``--out DIR`` also writes ``minilm_compress.json``.

Latest result (2026-11-27, this repo's 2-core x86_64 CPU shared with other jobs, torch 2.13.0+cpu,
so the seconds are noisy; no CUDA machine was available): the 12 feed-forward weights at 2.0x,
236 calibration sentences, held-out cosine vs the original (78 sentences). ``healed``: layer-wise,
30 steps per layer (sequential, compressed inputs, lr 5e-4); ``distil``: instead, every TN layer
distilled jointly to the original's embeddings (``heal_distill``, 60 steps, lr 2e-4), from the
same unhealed model. ``data err``: mean over the 12 weights of ``||(W - W~) X|| / ||W X||``.
``placement``: where the MPO's legs sit (``chain``: the builder's default, one input and one
output leg per core; ``inputs-last``: every input leg on the last core, the output legs spread
over the others, ``in_cores=(2,2,2), out_cores=(0,0,1)``, the data-aware default;
``inputs-first``: ``in_cores=(0,0,0)``, outputs as in the chain). ``split``: how the parameter
budget is spread over the bonds (``uniform``: one cap for every bond; ``data``: chosen by the data
error, ``apply_plan(bond_split='data')``, the default). FLOPs: the 12 layers' forward at batch 1
from ``tnviz.cost`` (dense 14.2 M).

    python benchmarks/bench_minilm_compress.py --heal 30 --distill 60 --placements auto \
        --bond-splits data,uniform --devices cpu

    method  placement     split    data-aware  params  FLOPs   data err  cosine  healed  distil
    svd     -             -        no          3.53 M    7.1 M  -         0.6312  0.7707  0.8360
    svd     -             -        yes         3.53 M    7.1 M  0.116     0.8850  0.8897  0.9022
    mpo     chain         uniform  no          3.49 M  395.8 M  -         0.5345  0.7920  0.7835
    mpo     inputs-last   data     yes         3.53 M   10.4 M  0.126     0.8715  0.8802  0.8886
    mpo     inputs-last   uniform  yes         3.53 M    9.9 M  0.137     0.8569  0.8743  0.8874
    earlier rows (same day, unchanged by the split, which applies to inputs-last only):
    mpo     chain         uniform  yes         3.49 M  395.8 M  0.20      0.7600  0.8119     -    (Kronecker + refit)
    mpo     inputs-first  uniform  yes         3.46 M    8.0 M  -         0.6508  0.7126     -

The issue's target (data-aware MPO at least as good as whitened SVD at the same parameters after
layer-wise healing) is NOT met: 0.8802 vs 0.8897 (and 0.8886 vs 0.9022 distilled). Why, measured
per weight in the whitened coordinates (where the data error is a Frobenius norm):

* With every input leg on the last core, ``W~ = U(A, B)·C``: the input core is whitened SVD's
  input projection and the output side ``U`` (out x r2) is itself a two-core train, A over
  ``(o1 o2)`` with bond b1, B over ``o3``. Its error is the first unfolding's truncation at b1
  plus the rank-r2 truncation. The first unfolding of every FF weight is spectrally flat: for the
  six 1536-output weights, cutting b1 from 192 to the uniform 159 alone costs 0.11-0.17 relative
  error (the neuron index has no Kronecker structure to exploit).
* So every split that truncates b1 loses. Over b1 in {96, 115, 134, 154, 159, 173, 192} at equal
  parameters the data error falls monotonically with b1 (block 0 intermediate: 0.249, 0.219,
  0.194, 0.174, 0.171, 0.162, 0.157; whitened SVD 0.141); the best (b1 = 192, chosen by the
  data split) makes A a square 192x192 core, i.e. a rank-134 factorization carrying 36,864
  parameters that buy nothing, against SVD's rank 153. The 384-output weights already sit there
  (b1 = 64 = o1·o2: rank 151 + 4,096 idle parameters vs 153). Mean data error: uniform 0.137,
  data split 0.126, whitened SVD 0.116.
* Alternating least squares over the cores in the data norm does not move this: from TT-SVD at
  b1 = 153, 5 sweeps take block 0 intermediate from 0.1751 to 0.1748; at b1 = 192 TT-SVD is
  already the optimum. Healing cannot close it either: at b1 = 192 the MPO is a subset of the
  rank-134 matrices, which whitened SVD's rank 153 contains. An exact layer-wise least-squares
  refit on the compressed model's inputs (W* = W C_oc C_cc^-1 re-decomposed under C_cc)
  overfits the 236 sentences (SVD 0.885 -> 0.844 held out), so it is not used.
* Longer layer-wise healing keeps the gap (100 steps: SVD 0.8919, MPO 0.8834; 50 steps at
  lr 1e-3: 0.8904, 0.8812).

An MPO reaches whitened SVD only by collapsing to two cores (all outputs on one core, all inputs
on the other: ``in_cores=(1,1,1), out_cores=(0,0,0)``), which *is* the rank-153 SVD (measured:
cosine 0.8850, data error 0.116, as whitened SVD); the data split does not do that on its own.

Neuron-order search (issue 19 item 2; 2026-12-03, same CPU shared with other jobs, 236 calibration
/ 78 held-out sentences, no healing; ``--order-search``: ``apply_plan(order_search=True)``, which
re-orders each pair's 1536 hidden neurons (rows of ``intermediate.dense``, columns of
``output.dense``; the function is unchanged) before the data-aware MPO with its defaults
(inputs-last, data split).  ``search s``: the six searches, on one torch thread; the rest of the
run as before.  Parameters are the 12 weights' total.)

    ratio  method                         params  data err  cosine   search s
    2x     svd (whitened)                 3.53 M  0.1160    0.8850   -
    2x     mpo                            3.53 M  0.1257    0.8715   -
    2x     mpo + order search             3.53 M  0.1257    0.8715   16
    4x     svd (whitened)                 1.75 M  0.1865    0.7604   -
    4x     mpo                            1.76 M  0.2012    0.7279   -
    4x     mpo + order search             1.76 M  0.1997    0.7367   16

The goal (the best TN method with the order search >= whitened SVD at equal parameters, before
healing) is NOT met at either ratio; the search cost goal (< 30 s) is (16 s; 7-15 s per weight
when torch used both threads of this loaded machine, hence one thread).  Why, measured per weight
(block 0 intermediate, whitened, the first unfolding ``(o1 o2) = 192`` rows x ``(o3 = 8, 384)``):

* The search aims at the data split's best *factorized* candidate (output bond below its maximum
  192, where the order matters) and lowers it by 1-4%: at 2x, b1 = 168: 0.1646 -> 0.1614 (blocks
  1-5: 0.1517 -> 0.1470, 0.1499 -> 0.1448, 0.1629 -> 0.1582, 0.1842 -> 0.1805, 0.2117 -> 0.2091);
  at b1 = 96: 0.2494 -> 0.2354.  But the unfactorized split (b1 = 192, a square first core, which
  no order changes) stays best at 0.157, so at 2x the search changes nothing; whitened SVD is
  0.141.  At 4x the search moves the split from b1 = 168 to 144 (block 0: 0.2406 -> 0.2371; mean
  over the 12 weights 0.2012 -> 0.1997, cosine +0.009), still above SVD's 0.2186 (mean 0.1865).
  To reach SVD at b1 = 96 and 2x the error there would have to fall from 0.249 to 0.141.
* There is no structure in the neuron index for an order to expose.  A surrogate with the same
  singular values and Haar-random neuron directions (``Q·S·V^T``, ``Q`` a random orthonormal
  1536x384 frame) has the same first-unfolding errors in its stored order (b1 = 96: 0.2545 vs
  MiniLM's 0.2494; b1 = 168: 0.1665 vs 0.1646) and the same Kronecker content (a neuron's row
  reshaped to (8, 48) puts 0.561 of its energy in its leading Kronecker factor, MiniLM's 0.546);
  the spectral order gains 0.005 on the surrogate and 0.014 on MiniLM.  The whitened weights behave
  like their spectrum with random neuron directions, and a permutation cannot change that.
* Which starts win: the spectral order (principal coordinates of the whitened rows cut along the
  leg sizes) on every weight; the nearest-Kronecker start (exact on a shuffled Kronecker product,
  ``tests/test_decompose_order.py``) finds 0.2390 at b1 = 96 (spectral 0.2354); the alternating
  assignment to the TT reconstruction makes no improving step on any MiniLM weight (each neuron is
  already the closest to its own reconstructed row); random orders are worse than the stored one.

``method="auto"`` (issue 19; 2026-12-03, the same 2-core CPU under heavy load from other jobs, load
average 4-8, so the seconds are 3-10x a quiet machine's). Per weight, the search
(:mod:`tnviz.model.auto`) scores 11 candidates at the weight's budget: whitened SVD and the MPO with
every input leg on the last core for 3 and 4 legs a side (exact, from singular values), and the MPO
along the chain, Tucker, tensor ring and CP for 2 and 3 legs a side (decomposed; CP is not run at these
budgets, its rank would be 2,457-5,084). ``budget``: ``each`` = the ratio for every weight; ``spread``
= one global target spread by sensitivity (``--spread``). ``top5``: overlap of the held-out sentences'
5 nearest neighbours against the original's. ``search``: seconds of the candidates' scoring, summed over
the weights (they run two at a time, so this exceeds the wall clock). Distilled: 60 steps, as above.

    python benchmarks/bench_minilm_compress.py --methods auto,svd --ratio 2 --data-aware-only --devices cpu --distill 60
    python benchmarks/bench_minilm_compress.py --methods auto,svd --ratio 4 --data-aware-only --devices cpu --distill 60
    python benchmarks/bench_minilm_compress.py --methods auto --ratio 2 --spread --data-aware-only --devices cpu --distill 60

    method  kept  budget  chosen   seconds  search  data err  cosine  top5   distil  top5
    auto    0.5x  each    svd:12     79.5   116.1   0.116     0.8850  0.659  0.9022  0.700
    svd     0.5x  each    -          23.3       -   0.116     0.8850  0.659  0.9022  0.700
    auto    0.5x  spread  svd:12     43.7    54.0   0.104     0.8629  0.615  0.8919  0.656
    auto    0.25x each    svd:12     32.7    45.9   0.187     0.7604  0.495  0.8211  0.587
    svd     0.25x each    -           9.7       -   0.187     0.7604  0.495  0.8211  0.587
    auto    0.25x spread  svd:12     53.0    29.8   0.171     0.7646  0.497  0.8216  0.556

(the first auto row ran before the search shared one Kronecker approximation per leg
factorization; its search time is the old code's.) Search cost on a quiet moment of the same machine,
one weight at a time (``compress_layer`` with ``method='auto'``): 0.8-1.0 s per FFN weight, so about
11 s for the 12, under the 30 s target; under load it rose to 10-60 s per weight.

The issue's goals (auto distilled >= 0.95 at 0.5x; >= 0.90 at 0.25x) are NOT met: 0.9022 and
0.8211. Measured why:

* On every one of the 12 weights, at both budgets, the lowest data error of the 11 candidates is
  whitened SVD's; auto therefore builds exactly the whitened-SVD model (same cosine to 4 digits).
  At 0.5x the runner-up is the inputs-last MPO on all 12 (block 0 intermediate 0.157 vs SVD 0.141,
  output 0.0352 vs 0.0348); the decomposed families are 2.5-4x worse (0.37-0.51 on block 0 intermediate):
  the Kronecker whitening is far from this covariance, and the neuron order has no Kronecker
  structure (the docstring above). Without a network that beats SVD per weight, auto cannot beat it.
* Whitened SVD needs about 0.8x of the parameters for 0.95 before healing: 0.9559 at ratio 1.25,
  0.9316 at 1.5, 0.8850 at 2 (cosine; top-5 0.795, 0.731, 0.659).
* Distillation saturates: 60 steps 0.9022, 120 steps 0.9004, 180 steps 0.8988 (rounds of 60 from
  the same model; it starts to fit the 236 calibration sentences), so more steps do not close the gap to 0.95.
* Spreading the target by sensitivity lowers the mean data error (0.104 vs 0.116) but the held-out
  cosine too (0.863 vs 0.885): the allocation's proxy (each weight's relative error) does not weigh
  a weight by its effect on the embedding.
What is left to try is the neuron-order search of the same issue (item 2), which could give the
tensor-network candidates structure to exploit; auto will pick those up as candidates.

``method="auto"`` with the neuron order as a dimension (issue 19; 2026-12-03, later the same day, the
machine shared with other jobs at load average 5-9 on 2 cores, so the seconds are several times a
quiet run's). Per feed-forward pair (:mod:`tnviz.model.auto_order`) one order is searched on the
intermediate weight and both weights' candidates are scored in the stored and the searched order;
the searched order is adopted iff it lowers the pair's summed best error. ``reordered``: pairs that
adopted it.

    python benchmarks/bench_minilm_compress.py --methods auto --ratio 2 --data-aware-only --devices cpu --distill 60
    python benchmarks/bench_minilm_compress.py --methods auto --ratio 4 --data-aware-only --devices cpu --distill 60

    method  kept  chosen   reordered  seconds  search  data err  cosine  top5   distil  top5
    auto    0.5x  svd:12   0 of 6      600.1   572.8   0.116     0.8850  0.659  0.9022  0.700
    auto    0.25x svd:12   0 of 6      443.7   411.3   0.187     0.7604  0.495  0.8211  0.587

The order changes nothing on MiniLM: on every pair the searched order lowers no weight's best error
(block 0 at 0.5x: summed best error 0.1758 in both orders), because every weight's winner is whitened
SVD, whose error no permutation changes, and the factorized candidates stay above it in either order
(the order-search measurements above: 1-4% lower, still above SVD). The goals (TN >= whitened SVD; auto
distilled >= 0.95 / 0.90) therefore stay unmet for the reasons measured above. Search cost: per pair,
measured on block 0 at 0.5x in CPU seconds: order search 4.4, candidates 12.7 + 14.8 (intermediate,
stored / searched order) and 11.6 + 8.2 (output; its svd and inputs-last MPO are order-invariant and
copied), 52.5 CPU s per pair (200 s wall under that load), about 2.3x the stored-order search; scaled
from the stored-order search's quiet 11 s, an estimated 25-30 s for MiniLM; measured on a quiet
moment (18:00 UTC, load 0.9, a slow evening): 67.4 s for the whole auto compression, over the 30 s
target, and far above it under load (573 s).

Search cost after the pair stage became jobs (2026-12-04; :func:`tnviz.model.auto_order.decide_pairs`:
each pair's order search and each member's candidates in each order run as independent jobs on the
two per-weight workers with single-threaded torch, as the weights' decompositions already did;
before, they ran one after the other on torch's two intra-op threads, which spin at every call's
barrier on these medium-size SVDs and eigen-problems).  Also cut, none of it changing a number: the
candidates share the data error's denominator and the exact SVDs of equal matrices (TT-SVD and
TR-SVD start from the same unfolding), and the order search's k-means++ seeding computes its
distances in one buffer.  Profile before (block by block, CPU seconds on one thread, 61 s in all):
order searches 13 (Kronecker start's k-means 8 of it); candidates 46: Tucker 14.7, TR 11.3, chain
MPO 9.1, inputs-last MPO 10.3 (4 legs on the intermediate weights 6.5), svd 1.0; by order: stored
24.8, searched 21.6.  The same candidates and winners (216 candidates' errors within 1.1e-13
relative of the old code's, from the thread count; svd on all 12, stored order on 6 of 6 pairs).
Measured back to back, ``--methods auto --ratio 2 --data-aware-only --devices cpu`` (no
distillation; ``seconds`` includes calibration, ``search`` summed over the weights):

    code    load (1-min avg, start -> end)  seconds  calibration  search
    new     0.14 -> 0.83                       31.8      2.0        55.8
    old     0.83 -> 2.24 (another job began)   99.1     15.4        81.6
    new     2.22 -> 2.95                       62.9     13.6        93.0
    new     4-5.5 (shared machine)             68.6     10.4       109.8
    old     4-5.5                             305.3     12.8       290.1
    new     4-5.5                              61.2      9.4        97.0
    new     1.73 -> 2.84                       67.2     13.7        99.2
    old     2.84 -> 2.85                      208.8      9.8       198.0

On a quiet machine the search is now about 30 s (31.8 s whole, 2.0 s of it calibration), and
27.4 s in a rerun with nothing else running (19:46 UTC, load 0.6 -> 1.1; the same winners, cosine
0.885): under the 30 s target.  Under load the old code's intra-op threads cost 3-5x.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tnviz.model.apply import apply_plan, calibration_stats  # noqa: E402
from tnviz.model.data import sentences  # noqa: E402
from tnviz.model.evaluate import NEIGHBOURS, cosine_vs, embed, neighbour_overlap  # noqa: E402
from tnviz.model.demos import load_minilm  # noqa: E402
from tnviz.model.heal import heal_distill, heal_layerwise  # noqa: E402
from tnviz.model.plan import Rule, make_plan  # noqa: E402
from tnviz.model.surgery import to_device  # noqa: E402

PATTERNS = {"ff": r"layer\.\d+\.(intermediate|output)\.dense$", "all": r"encoder\.layer\."}


def _measure(reference: torch.Tensor, model: torch.nn.Module) -> tuple[float, float]:
    """Mean held-out embedding cosine against the original's and the top-5 neighbour overlap of
    the held-out sentences (the MiniLM subject's metrics, :meth:`tnviz.model.subject.Subject.measure`)."""
    embeddings = embed(sentences("heldout"), model)
    return round(float(cosine_vs(reference, embeddings).mean()), 4), round(neighbour_overlap(reference, embeddings), 4)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(device_name: str, methods: list[str], pattern: str, ratio: float, heal: int, reference: torch.Tensor,
        data_aware_only: bool, placements: list[str], bond_splits: list[str], distill: int = 0,
        order_search: bool = False, spread: bool = False) -> list[dict]:
    device = torch.device(device_name)
    model = load_minilm(device)
    calibration = model.batches(sentences("calibration"), 32, device)
    rows = []
    # warm-up: kernels, cuBLAS/cuSOLVER handles, tokenizer (not timed)
    apply_plan(model, make_plan(model, [Rule(r"layer\.0\.intermediate\.dense$", "svd", {"ratio": ratio})]),
               data_aware=False, device=device)
    for aware in ([True] if data_aware_only else [False, True]):
        _sync(device)
        t0 = time.perf_counter()
        names = make_plan(model, [Rule(pattern, methods[0], {"ratio": ratio})]).names()
        stats = calibration_stats(model, [to_device(b, device) for b in calibration], names, device) if aware else None
        _sync(device)
        calib_s = time.perf_counter() - t0
        variants = [(m, p, b, False) for m in methods for p in (placements if m == "mpo" and aware else ["auto"])
                    for b in (bond_splits if m == "mpo" and aware and p == "auto" else ["data"])]
        if order_search and aware and "mpo" in methods:  # the data-aware MPO's defaults, after the neuron-order search
            variants.append(("mpo", "auto", "data", True))
        for method, placement, bond_split, searched in variants:
            _sync(device)
            t1 = time.perf_counter()
            rules = [Rule(pattern, method, {"ratio": ratio})]
            covs = {n: stats[n].second_moment for n in names} if aware and spread else None
            plan = (make_plan(model, rules, target_ratio=ratio, covariances=covs, device=device) if spread
                    else make_plan(model, rules))
            result = apply_plan(model, plan, stats=stats, data_aware=aware, device=device, placement=placement,
                                bond_split=bond_split, order_search=searched)
            _sync(device)
            seconds = time.perf_counter() - t1 + calib_s
            cosine, neighbours = _measure(reference, result.model)
            found = [r.search for r in result.layers if r.search is not None]
            row = {"device": device_name, "method": method, "data_aware": aware, "budget": "spread" if spread else "each",
                   "chosen": (" ".join(f"{m}{'/searched' if o == 'searched' else ''}:"
                                       f"{sum((s['chosen']['method'], s.get('order', 'stored')) == (m, o) for s in found)}"
                                       for m, o in dict.fromkeys((s["chosen"]["method"], s.get("order", "stored"))
                                                                 for s in found))
                              if found else "-"),
                   "pairs_reordered": len(result.permutations),
                   "search_s": round(sum(s["search_seconds"] for s in found), 2) if found else None,
                   "placement": (placement if aware else "chain") if method == "mpo" else "-",
                   "bond_split": bond_split if method == "mpo" and aware and placement == "auto" else "-",
                   "data_error": (round(sum(r.data_error for r in result.layers) / len(result.layers), 4)
                                  if aware else None),
                   "layers": len(result.layers), "ratio": round(result.totals["ratio"], 3),
                   "flops": result.totals["flops_after"], "seconds": round(seconds, 3),
                   "calibration_s": round(calib_s if aware else 0.0, 3), "cosine": cosine, "neighbours": neighbours,
                   "order_search": searched, "params": result.totals["params_after"],
                   "per_weight": {r.name: {"data_error": None if r.data_error is None else round(r.data_error, 4),
                                           "ranks": dict(r.ranks)} for r in result.layers}}
            if searched:  # what the search saw per pair: its error at the ranks it scored, before and after
                row["order_search_s"] = round(sum(p.seconds for p in result.permutations), 2)
                row["search"] = {p.pair: {"ranks": list(p.ranks), "before": round(p.error_before, 4),
                                          "after": round(p.error_after, 4), "start": p.start}
                                 for p in result.permutations}
            if distill:
                copied = copy.deepcopy(result.model)
                report = heal_distill(copied, model, calibration, steps=distill)
                row["cosine_distilled"], row["neighbours_distilled"] = _measure(reference, copied)
                row["distill_s"] = round(report.seconds, 2)
                del copied
            if heal:
                report = heal_layerwise(result.model, model, calibration, steps=heal, lr=5e-4)
                row["cosine_healed"], row["neighbours_healed"] = _measure(reference, result.model)
                row["heal_s"] = round(report.seconds, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="svd,mpo", help="comma-separated decomposition methods")
    parser.add_argument("--layers", choices=sorted(PATTERNS), default="ff", help="ff: the 12 feed-forward weights")
    parser.add_argument("--ratio", type=float, default=2.0, help="compression ratio of each chosen weight")
    parser.add_argument("--heal", type=int, default=0, help="layer-wise healing steps per layer (0: none)")
    parser.add_argument("--distill", type=int, default=0,
                        help="also distil every TN layer jointly to the original's outputs, this many steps (0: none)")
    parser.add_argument("--data-aware-only", action="store_true", help="skip the plain (weight-only) variants")
    parser.add_argument("--placements", default="auto,chain",
                        help="data-aware MPO leg placements to compare (tnviz.model.apply.PLACEMENTS)")
    parser.add_argument("--bond-splits", default="data",
                        help="data-aware MPO bond splits to compare (tnviz.model.apply.BOND_SPLITS)")
    parser.add_argument("--spread", action="store_true",
                        help="--ratio as one global target over the chosen weights, spread by sensitivity "
                             "(make_plan(target_ratio=...)), instead of the same ratio for each weight")
    parser.add_argument("--devices", default="cuda,cpu", help="devices to time (cuda skipped when absent)")
    parser.add_argument("--order-search", action="store_true", dest="order_search",
                        help="also the data-aware MPO after the neuron-order search (apply_plan(order_search=True))")
    parser.add_argument("--out", type=Path, default=None, help="folder for minilm_compress.json")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    devices = [d for d in args.devices.split(",") if d != "cuda" or torch.cuda.is_available()]
    if "cuda" in args.devices and not torch.cuda.is_available():
        print("bench_minilm_compress: CUDA not available; timing the CPU only", file=sys.stderr)
    reference = embed(sentences("heldout"), load_minilm("cpu"))
    rows = []
    for device in devices:
        rows += run(device, methods, PATTERNS[args.layers], args.ratio, args.heal, reference, args.data_aware_only,
                    [p.strip() for p in args.placements.split(",") if p.strip()],
                    [b.strip() for b in args.bond_splits.split(",") if b.strip()], args.distill, args.order_search,
                    args.spread)
    machine = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{platform.machine()} CPU"
    print(f"\nMiniLM ({args.layers} layers, {args.ratio}x each), whole compression incl. calibration; {machine}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    top = f"top{NEIGHBOURS}"
    head = (f"{'device':<6} {'method':<6} {'data-aware':<10} {'place':<6} {'split':<7} {'budget':<6} {'order':<5} "
            f"{'layers':>6} {'ratio':>6} {'params':>8} {'seconds':>8} {'search':>7} {'data err':>8} {'cosine':>7} {top:>6}")
    print(head + (f" {'healed':>7} {top:>6}" if args.heal else "") + (f" {'distil':>7} {top:>6}" if args.distill else "")
          + "  chosen")
    for r in rows:
        err = "-" if r["data_error"] is None else f"{r['data_error']:.4f}"
        search = "-" if r["search_s"] is None else f"{r['search_s']:.1f}"
        order = f"{r['order_search_s']:.0f}s" if r.get("order_search") else "-"
        line = (f"{r['device']:<6} {r['method']:<6} {str(r['data_aware']):<10} {r['placement']:<6} {r['bond_split']:<7} "
                f"{r['budget']:<6} {order:<5} {r['layers']:>6} {r['ratio']:>6.2f} {r['params'] / 1e6:>7.2f}M "
                f"{r['seconds']:>8.2f} {search:>7} {err:>8} {r['cosine']:>7.4f} {r['neighbours']:>6.3f}")
        print(line + (f" {r['cosine_healed']:>7.4f} {r['neighbours_healed']:>6.3f}" if args.heal else "")
              + (f" {r['cosine_distilled']:>7.4f} {r['neighbours_distilled']:>6.3f}" if args.distill else "")
              + f"  {r['chosen']}")
    for method in methods:
        for aware in (False, True):
            t = {r["device"]: r["seconds"] for r in rows
                 if r["method"] == method and r["data_aware"] == aware and r["bond_split"] in ("data", "-")
                 and not r.get("order_search")
                 and (r["placement"] in ("auto", "-") or not aware)}  # the defaults
            if "cuda" in t and "cpu" in t:
                print(f"speed-up cuda vs cpu, {method} {'data-aware' if aware else 'plain'}: {t['cpu'] / t['cuda']:.1f}x")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "minilm_compress.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

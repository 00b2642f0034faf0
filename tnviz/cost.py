"""What a layer costs, from shapes alone: parameters, FLOPs (forward, backward, rebuild),
memory, the contraction path step by step, useful ranks, and the batch crossover.

FLOPs are counted as opt_einsum's ``opt_cost`` counts them: a pairwise step over the index
set ``U`` costs ``prod(U)``, doubled when an index is summed.  The dense layer therefore costs
``2·B·in·out``.

>>> from tnviz.builders import mpo
>>> c = cost(mpo([8, 8], [8, 8], ranks=4), batch=1)
>>> c.dense_flops, c.params, c.dense_params
(8192, 512, 4096)
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Sequence

from .errors import BudgetError
from .network import BATCH_INDEX, TensorNetwork
from .paths import (  # noqa: F401  (re-exported: tnviz.cost is where scripts look for them)
    BEST, DEFAULT_OPTIMIZER, INPUT_NAME, MAX_DP_OPERANDS, MAX_OPTIMAL_OPERANDS, OPTIMIZERS, PathCost, Step,
    _path_cost, best_candidates, check_batch, check_optimizer, forward_path, grad_flops, input_first,
    left_to_right, rebuild_path, sequence_to_path,
)

DTYPE_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}

# The path machinery lives in tnviz.paths; these names stay importable from here.
_sequence_to_path = sequence_to_path
_left_to_right = left_to_right
_input_first = input_first
_check_optimizer = check_optimizer
_grad_flops = grad_flops
_check_batch = check_batch


# ---------------------------------------------------------------------- useful ranks
def max_useful_ranks(net: TensorNetwork, *, exhaustive_limit: int = 12) -> dict[str, int]:
    """For each bond, the largest size that can carry information.

    Cutting the network into a part ``S`` holding one end of the bond, the bond's rank cannot
    exceed ``prod(open legs in S) * prod(other indices crossing the cut)``: above that the part
    ``S``, seen as a matrix from the bond to everything else, is rank-deficient and the bond
    could be shrunk without changing the layer.  For a chain this is ``min(prod left, prod
    right)``.  All parts are tried for networks up to ``exhaustive_limit`` tensors; larger ones
    use single tensors and the two sides of each bridge.  Hyperedges (CP ranks) have no such
    bound and are left out.
    """
    return dict(_max_useful_ranks(net, exhaustive_limit))


@lru_cache(maxsize=256)
def _max_useful_ranks(net: TensorNetwork, exhaustive_limit: int) -> tuple[tuple[str, int], ...]:
    if len(net.tensors) > exhaustive_limit:
        return _bridge_ranks(net)
    # Parts are bit masks over the tensors, so a part's bound is a pass over the indices.
    sizes = net.sizes
    names = net.tensor_names
    bit = {n: 1 << k for k, n in enumerate(names)}
    counts = net.index_counts
    owners = {i: sum(bit[n] for n in net.tensors_on(i)) for i in counts}

    def bound(part: int, bond: str) -> int:
        value = 1
        for i, mask in owners.items():
            if i != bond and mask & part and (counts[i] == 1 or mask & ~part):
                value *= sizes[i]
        return value

    def candidate_parts(bond: str):
        a, b = net.tensors_on(bond)
        rest = [bit[n] for n in names if n not in (a, b)]
        for k in range(len(rest) + 1):
            for combo in itertools.combinations(rest, k):
                extra = sum(combo)
                yield bit[a] | extra
                yield bit[b] | extra

    return tuple((bond, min(bound(p, bond) for p in candidate_parts(bond)))
                 for bond, c in counts.items() if c == 2)


def _bridge_ranks(net: TensorNetwork) -> tuple[tuple[str, int], ...]:
    """The bound from single tensors and, for a bond that is a bridge (removing it splits the
    network), from the two sides, whose only crossing index is the bond: the product of each
    side's open legs.  One depth-first search finds every bridge and every side's product
    (Tarjan), so this is linear in the network's size."""
    sizes, counts = net.sizes, net.index_counts
    # a graph of tensors and hyperedges: a bond is an edge, a hyperedge a node joined to its tensors
    nodes = [*net.tensor_names, *(f"\0{i}" for i, c in counts.items() if c >= 3)]
    where = {n: k for k, n in enumerate(nodes)}
    weight = [1] * len(nodes)
    edges: list[list[tuple[int, int, str]]] = [[] for _ in nodes]  # (other node, edge id, index)
    for t in net.tensors:
        for i in t.indices:
            if counts[i] == 1:
                weight[where[t.name]] *= sizes[i]
    side_ids: list[str] = []
    for i, c in counts.items():
        owners = net.tensors_on(i)
        if c == 2:
            a, b = where[owners[0]], where[owners[1]]
            edges[a].append((b, len(side_ids), i))
            edges[b].append((a, len(side_ids), i))
            side_ids.append(i)
        elif c >= 3:
            h = where[f"\0{i}"]
            for o in owners:
                edges[where[o]].append((h, len(side_ids), i))
                edges[h].append((where[o], len(side_ids), i))
                side_ids.append(i)
    order = [-1] * len(nodes)
    low = [0] * len(nodes)
    below = weight[:]  # product of open legs in each DFS subtree
    side: dict[str, tuple[int, int]] = {}  # bridge bond -> (open product below it, of its whole part)
    counter = 0
    for root in range(len(nodes)):
        if order[root] >= 0:
            continue
        component = []
        order[root] = low[root] = counter
        counter += 1
        stack = [(root, -1, "", iter(edges[root]))]
        while stack:
            node, via, _, todo = stack[-1]
            advanced = False
            for nxt, edge, index in todo:
                if edge == via:
                    continue
                if order[nxt] < 0:
                    order[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append((nxt, edge, index, iter(edges[nxt])))
                    advanced = True
                    break
                low[node] = min(low[node], order[nxt])
            if advanced:
                continue
            _, _, index, _ = stack.pop()
            component.append(node)
            if stack:
                parent = stack[-1][0]
                low[parent] = min(low[parent], low[node])
                below[parent] *= below[node]
                if low[node] > order[parent] and counts[index] == 2:
                    side[index] = (below[node], 0)
        total = below[root]
        for bond, (under, _) in list(side.items()):
            if side[bond][1] == 0:
                side[bond] = (under, total)
    out = []
    for bond, c in counts.items():
        if c != 2:
            continue
        a, b = net.tensors_on(bond)
        candidates = [math.prod(sizes[i] for i in net.tensor(n).indices if i != bond) for n in (a, b)]
        if bond in side:
            under, total = side[bond]
            candidates += [under, total // under]
        out.append((bond, min(candidates)))
    return tuple(out)


def rank_warnings(net: TensorNetwork) -> list[str]:
    sizes = net.sizes
    return [
        f"bond {bond!r} has size {sizes[bond]} but at most {useful} is useful "
        f"(the tensors on one side of it have only {useful} other dimensions, open legs and other "
        f"bonds, to span); the rest is wasted"
        for bond, useful in max_useful_ranks(net).items()
        if sizes[bond] > useful
    ]


# ---------------------------------------------------------------------- the report
@dataclass(frozen=True)
class LayerCost:
    """Every cost of a layer at one batch size (SPEC 2.2 ``tnviz cost --json``).

    ``optimize`` is the optimizer asked for; ``path_optimizer`` the one whose path ``path``,
    ``steps`` and ``flops`` describe (for ``"best"``, the winner) and ``searched`` the FLOPs of
    every candidate that ran, as ``(optimizer, flops)``.
    """

    name: str
    batch: int
    optimize: str
    params: int
    dense_params: int
    flops: int
    factorized_flops: int  # the input contracted through the tensors one at a time ("input-first")
    dense_flops: int
    backward_flops: int
    dense_backward_flops: int
    reconstruct_flops: int
    rebuild_flops: int
    peak_elements: int
    largest_intermediate: int
    path: tuple[tuple[int, ...], ...]
    steps: tuple[Step, ...]
    max_useful_ranks: dict[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    path_optimizer: str = ""
    searched: tuple[tuple[str, int], ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def path_note(self) -> str:
        """Which optimizer found the path, for people: ``"best: dp, of optimal, dp, ..."``."""
        if self.optimize != BEST or not self.searched:
            return self.path_optimizer or self.optimize
        return f"best: {self.path_optimizer}, of {', '.join(name for name, _ in self.searched)}"

    @property
    def compression(self) -> float:
        return self.dense_params / self.params

    def peak_bytes(self, dtype: str = "float32") -> int:
        return self.peak_elements * DTYPE_BYTES[dtype]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = [list(p) for p in self.path]
        d["steps"] = [
            {**asdict(s), "operands": list(s.operands), "operand_indices": [list(i) for i in s.operand_indices],
             "result_indices": list(s.result_indices), "summed": list(s.summed)}
            for s in self.steps
        ]
        d["warnings"] = list(self.warnings)
        d["searched"] = [{"optimizer": name, "flops": flops} for name, flops in self.searched]
        d["skipped"] = [{"optimizer": name, "reason": why} for name, why in self.skipped]
        d["compression"] = self.compression
        d["peak_bytes_float32"] = self.peak_bytes("float32")
        return d


def cost(net: TensorNetwork, batch: int = 1, optimize: str = DEFAULT_OPTIMIZER) -> LayerCost:
    """All the costs of ``net`` as a layer applied to a batch of ``batch`` inputs.

    ``optimize`` (a key of :data:`OPTIMIZERS`) defaults to ``"best"``: the cheapest path the
    optimizers that fit the network's size find, so ``flops`` is the best path found."""
    fwd = forward_path(net, batch, optimize)
    rebuild = rebuild_path(net, optimize)
    dense = 2 * batch * net.in_features * net.out_features
    return LayerCost(
        name=net.name,
        batch=batch,
        optimize=optimize,
        params=net.params,
        dense_params=net.dense_params,
        flops=fwd.flops,
        factorized_flops=forward_path(net, batch, "input-first").flops,
        dense_flops=dense,
        # dense backward: grad_x = g W and grad_W = g^T x, each as costly as the forward
        backward_flops=fwd.backward_flops,
        dense_backward_flops=2 * dense,
        reconstruct_flops=rebuild.flops,
        rebuild_flops=rebuild.flops + dense,
        peak_elements=fwd.peak_elements,
        largest_intermediate=fwd.largest_intermediate,
        path=fwd.path,
        steps=fwd.steps,
        max_useful_ranks=max_useful_ranks(net),
        warnings=tuple(rank_warnings(net)),
        path_optimizer=fwd.optimizer,
        searched=fwd.searched,
        skipped=fwd.skipped,
    )


def training_step_flops(net: TensorNetwork, batch: int = 1, input_grad: bool = True,
                        optimize: str = "auto") -> tuple[int, int]:
    """FLOPs of one training step (forward, then backward from the output gradient into every
    tensor, and into the input when ``input_grad``) as ``(layer, dense)``: the layer on the best
    path of ``optimize``, the dense layer as ``x W^T`` with ``W`` stored (2 matmuls, 3 with the
    input's gradient).  Without ``input_grad`` (a first layer) the gradient of every contraction
    that reads the input is not counted for the input."""
    fwd = forward_path(net, batch, optimize)
    layer = fwd.flops + fwd.backward_flops
    if not input_grad:
        sizes = {BATCH_INDEX: batch, **net.sizes}
        for s in fwd.steps:
            if INPUT_NAME in s.operands and len(s.operands) == 2:
                k = s.operands.index(INPUT_NAME)
                x_ix, other_ix = set(s.operand_indices[k]), set(s.operand_indices[1 - k])
                layer -= _grad_flops(x_ix, other_ix, set(s.result_indices), sizes)
    dense = 2 * batch * net.in_features * net.out_features
    return layer, dense * (3 if input_grad else 2)


# ---------------------------------------------------------------------- batch sweep
@dataclass(frozen=True)
class BatchSweep:
    """FLOPs per batch size of three ways to run a layer:

    * ``factorized``: the input contracted through the tensors one at a time ("input-first" path);
    * ``rebuilt``: rebuild the dense weight from the tensors, then one matmul;
    * ``best``: the path of the chosen optimizer at each batch (``forward_path(net, b,
      optimize).flops``, the figure :func:`cost` reports; it may mix both), or ``None`` when
      ``best_skipped`` says why it was not searched at every batch;
    plus ``dense`` (a stored dense weight: one matmul) for reference.
    """

    batches: tuple[int, ...]
    factorized: tuple[int, ...]
    rebuilt: tuple[int, ...]
    best: tuple[int, ...] | None
    dense: tuple[int, ...]
    crossovers: tuple[tuple[int, str], ...]  # (first batch where the cheaper of factorized/rebuilt changes, new winner)
    optimize: str = DEFAULT_OPTIMIZER
    best_skipped: str = ""

    def rows(self) -> list[dict[str, Any]]:
        best = self.best if self.best is not None else (None,) * len(self.batches)
        return [
            {"batch": b, "factorized": f, "rebuilt": r, "best_path": p, "dense": d,
             "cheaper": "factorized" if f <= r else "rebuilt"}
            for b, f, r, p, d in zip(self.batches, self.factorized, self.rebuilt, best, self.dense)
        ]


#: Optimizers whose path costs little to find at any size (bounded by design, or one order for
#: every batch); a sweep runs any other one at every batch only up to this many operands.
SWEEP_ANY_SIZE = (BEST, "input-first", "left-to-right")
SWEEP_SEARCH_OPERANDS = 128


def batch_sweep(net: TensorNetwork, batches: Sequence[int] | None = None,
                optimize: str = DEFAULT_OPTIMIZER, *, include_best: bool = True) -> BatchSweep:
    """FLOPs of the factorized and the rebuilt strategy (and the optimizer's best path and a
    stored dense weight) per batch, with every batch size where the cheaper of factorized and
    rebuilt changes, found exactly by bisection.

    The optimizer's path is searched at every batch (``include_best``) unless its search is
    slow at this size (opt_einsum's greedy search beyond :data:`SWEEP_SEARCH_OPERANDS` operands):
    then ``best`` is ``None`` and ``best_skipped`` says so."""
    if batches is None:
        batches = [2**k for k in range(17)]
    batches = sorted(set(batches))
    for b in batches:
        _check_batch(b)
    reconstruct = rebuild_path(net, optimize).flops
    io = net.in_features * net.out_features
    # Every step of the input-first path holds the running intermediate, which carries the batch:
    # its FLOPs are exactly linear in the batch (and its order does not depend on it).
    per_sample = forward_path(net, 1, "input-first").flops

    def fact(b: int) -> int:
        return per_sample * b

    def winner(b: int) -> str:
        return "factorized" if fact(b) <= reconstruct + 2 * b * io else "rebuilt"

    crossovers = []
    for lo, hi in zip(batches, batches[1:]):
        w_lo, w_hi = winner(lo), winner(hi)
        if w_lo != w_hi:
            while hi - lo > 1:  # bisect to the first batch with the new winner
                mid = (lo + hi) // 2
                if winner(mid) == w_lo:
                    lo = mid
                else:
                    hi = mid
            crossovers.append((hi, w_hi))
    operands = len(net.tensors) + 1
    skipped = ""
    if not include_best:
        skipped = "not asked for"
    elif optimize not in SWEEP_ANY_SIZE and operands > SWEEP_SEARCH_OPERANDS:
        skipped = (f"the {optimize!r} search at every batch is slow for {operands} operands (more than "
                   f"{SWEEP_SEARCH_OPERANDS}); {BEST!r} bounds its searches")
    return BatchSweep(
        batches=tuple(batches),
        factorized=tuple(fact(b) for b in batches),
        rebuilt=tuple(reconstruct + 2 * b * io for b in batches),
        best=None if skipped else tuple(forward_path(net, b, optimize).flops for b in batches),
        dense=tuple(2 * b * io for b in batches),
        crossovers=tuple(crossovers),
        optimize=optimize,
        best_skipped=skipped,
    )


# ---------------------------------------------------------------------- guard
def check_budget(net: TensorNetwork, batch: int | None, budget: int, *, optimize: str = "auto") -> None:
    """Refuse (``BudgetError``) when a contraction's largest intermediate would exceed ``budget``
    elements.  ``batch=None`` checks rebuilding the dense weight."""
    pc = rebuild_path(net, optimize) if batch is None else forward_path(net, batch, optimize)
    largest = max(pc.largest_intermediate, net.in_features * net.out_features if batch is None else 0)
    if largest > budget:
        what = "rebuilding the dense weight" if batch is None else f"the forward pass at batch {batch}"
        raise BudgetError(
            f"contractions are limited to {budget:,} elements per intermediate; {what} of "
            f"{net.name or 'this network'!r} needs {largest:,} ({largest / budget:.1f}x the budget, "
            f"{largest * 4 / 2**30:.2f} GiB in float32)"
        )

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
from typing import Any, Callable, Sequence

import opt_einsum as oe
from opt_einsum.helpers import flop_count

from .errors import BudgetError, InvalidNetworkError
from .network import BATCH_INDEX, TensorNetwork

INPUT_NAME = "x"

DTYPE_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}


def _sequence_to_path(order: Sequence[int]) -> list[tuple[int, ...]]:
    """Turn "absorb operand order[1], then order[2], ... into operand order[0]" into an
    opt_einsum path (each pairwise result goes to the end of the operand list)."""
    if len(order) < 2:
        return [(0,)] if order else []
    remaining = list(range(len(order)))
    path = []
    first, rest = order[0], list(order[1:])
    a, b = remaining.index(first), remaining.index(rest[0])
    path.append(tuple(sorted((a, b))))
    remaining = [r for r in remaining if r not in (first, rest[0])] + [-1]
    for nxt in rest[1:]:
        pos = remaining.index(nxt)
        path.append((pos, len(remaining) - 1))
        remaining = [r for r in remaining if r != nxt][:-1] + [-1]
    return path


def _left_to_right(operand_indices, output, sizes) -> list[tuple[int, ...]]:
    """x with the first tensor, then the running result with each next tensor in order."""
    return _sequence_to_path(list(range(len(operand_indices))))


def _input_first(operand_indices, output, sizes, *, exhaustive_limit: int = 12) -> list[tuple[int, ...]]:
    """The cheapest path that absorbs one tensor at a time into the running intermediate of the
    first operand (the input): "contracting the input through the cores".  Exact by dynamic
    programming over subsets up to ``exhaustive_limit`` tensors, greedy beyond."""
    n = len(operand_indices)
    if n < 2:
        return _sequence_to_path(list(range(n)))
    sets = [frozenset(ix) for ix in operand_indices]
    out = frozenset(output)

    def running(absorbed: frozenset[int]) -> frozenset[str]:
        held = set(sets[0]).union(*(sets[t] for t in absorbed))
        needed = set(out).union(*(sets[t] for t in range(1, n) if t not in absorbed))
        return frozenset(held & needed)

    def step(absorbed: frozenset[int], t: int) -> int:
        cur = running(absorbed)
        union = cur | sets[t]
        return flop_count(union, bool(union - running(absorbed | {t})), 2, sizes)

    tensors = list(range(1, n))
    if len(tensors) <= exhaustive_limit:
        best: dict[frozenset[int], tuple[int, list[int]]] = {frozenset(): (0, [])}
        for k in range(len(tensors)):
            layer: dict[frozenset[int], tuple[int, list[int]]] = {}
            for absorbed, (c, order) in best.items():
                for t in tensors:
                    if t in absorbed:
                        continue
                    nxt = absorbed | {t}
                    total = c + step(absorbed, t)
                    if nxt not in layer or total < layer[nxt][0]:
                        layer[nxt] = (total, order + [t])
            best = layer
        order = next(iter(best.values()))[1]
    else:
        order, absorbed = [], frozenset()
        for _ in tensors:
            t = min((t for t in tensors if t not in absorbed), key=lambda t: step(absorbed, t))
            order.append(t)
            absorbed = absorbed | {t}
    return _sequence_to_path([0, *order])


#: Path optimizers by name (feeds the CLI choices, the app's select boxes and the tests).
#: A string is handed to opt_einsum; a callable gets (operand_indices, output, sizes) and returns a path.
OPTIMIZERS: dict[str, str | Callable[..., list[tuple[int, ...]]]] = {
    "optimal": "optimal",
    "dp": "dp",
    "greedy": "greedy",
    "auto": "auto",
    "left-to-right": _left_to_right,
    "input-first": _input_first,
}

#: opt_einsum's exhaustive search grows factorially; refuse it beyond this many operands.
MAX_OPTIMAL_OPERANDS = 10


@dataclass(frozen=True)
class Step:
    """One pairwise contraction of a path."""

    operands: tuple[str, ...]  # names: tensor names, 'x', or '#k' for the k-th intermediate
    operand_indices: tuple[tuple[str, ...], ...]
    result: str
    result_indices: tuple[str, ...]
    summed: tuple[str, ...]
    flops: int
    size: int  # elements of the intermediate
    backward_flops: int


@dataclass(frozen=True)
class PathCost:
    """The path of one contraction (with or without the input)."""

    path: tuple[tuple[int, ...], ...]
    steps: tuple[Step, ...]
    flops: int
    backward_flops: int
    largest_intermediate: int
    peak_elements: int


def _check_optimizer(optimize: str, n_operands: int) -> Any:
    if optimize not in OPTIMIZERS:
        raise InvalidNetworkError(f"unknown path optimizer {optimize!r}; choose one of {list(OPTIMIZERS)}")
    if optimize == "optimal" and n_operands > MAX_OPTIMAL_OPERANDS:
        raise InvalidNetworkError(
            f"the 'optimal' optimizer is limited to {MAX_OPTIMAL_OPERANDS} operands (its search grows "
            f"factorially); this contraction has {n_operands}: use 'dp' or 'auto'"
        )
    return OPTIMIZERS[optimize]


def _grad_flops(operand: set[str], others: set[str], result: set[str], sizes: dict[str, int]) -> int:
    """FLOPs of d(result)/d(operand): contract grad(result) with the other operand(s) onto operand."""
    union = result | others
    return flop_count(union | operand, bool(union - operand), 2, sizes)


@lru_cache(maxsize=1024)
def _path_cost(
    operand_names: tuple[str, ...],
    operand_indices: tuple[tuple[str, ...], ...],
    output: tuple[str, ...],
    size_items: tuple[tuple[str, int], ...],
    optimize: str,
) -> PathCost:
    sizes = dict(size_items)
    opt = _check_optimizer(optimize, len(operand_names))
    symbols = {name: oe.get_symbol(k) for k, name in enumerate(sizes)}
    eq = ",".join("".join(symbols[i] for i in ix) for ix in operand_indices) + "->" + "".join(symbols[i] for i in output)
    shapes = [tuple(sizes[i] for i in ix) for ix in operand_indices]
    if callable(opt):
        path = opt(operand_indices, output, sizes)
    elif len(shapes) == 1:
        path = [(0,)]
    else:
        path, _ = oe.contract_path(eq, *shapes, shapes=True, optimize=opt)
    names = list(operand_names)
    indices = [tuple(ix) for ix in operand_indices]
    live = [math.prod(sh) for sh in shapes]
    peak = sum(live)
    steps: list[Step] = []
    largest = 0
    for k, pair in enumerate(path):
        # pop from the back so positions stay valid, then restore left-to-right order
        picked = [(names.pop(p), indices.pop(p), live.pop(p)) for p in sorted(pair, reverse=True)][::-1]
        ops_idx = [set(ix) for _, ix, _ in picked]
        union: set[str] = set().union(*ops_idx)
        still_needed = set(output).union(*[set(ix) for ix in indices])
        keep = [i for i in dict.fromkeys(itertools.chain(*[ix for _, ix, _ in picked])) if i in still_needed]
        if not indices:  # last step: result in output order
            keep = list(output)
        summed = tuple(i for i in dict.fromkeys(itertools.chain(*[ix for _, ix, _ in picked])) if i not in keep)
        flops = flop_count(union, bool(summed), len(picked), sizes)
        size = math.prod(sizes[i] for i in keep)
        result_set = set(keep)
        bwd = 0
        if len(picked) == 2:
            bwd = _grad_flops(ops_idx[0], ops_idx[1], result_set, sizes) + _grad_flops(ops_idx[1], ops_idx[0], result_set, sizes)
        else:  # a lone operand reduced (sum/transpose): its gradient is a broadcast
            bwd = math.prod(sizes[i] for i in union)
        result_name = f"#{k + 1}"
        # Memory: the result is allocated while its operands are still alive.
        peak = max(peak, sum(live) + sum(p[2] for p in picked) + size)
        largest = max(largest, size)
        steps.append(Step(
            operands=tuple(p[0] for p in picked),
            operand_indices=tuple(p[1] for p in picked),
            result=result_name,
            result_indices=tuple(keep),
            summed=summed,
            flops=int(flops),
            size=int(size),
            backward_flops=int(bwd),
        ))
        names.append(result_name)
        indices.append(tuple(keep))
        live.append(size)
    return PathCost(
        path=tuple(tuple(p) for p in path),
        steps=tuple(steps),
        flops=sum(s.flops for s in steps),
        backward_flops=sum(s.backward_flops for s in steps),
        largest_intermediate=largest,
        peak_elements=peak,
    )


def forward_path(net: TensorNetwork, batch: int, optimize: str = "auto") -> PathCost:
    """The path of ``x[batch, inputs] * tensors -> y[batch, outputs]`` (input as an operand)."""
    _check_batch(batch)
    sizes = {BATCH_INDEX: batch, **net.sizes}
    return _path_cost(
        (INPUT_NAME, *net.tensor_names),
        ((BATCH_INDEX, *net.inputs), *[t.indices for t in net.tensors]),
        (BATCH_INDEX, *net.outputs),
        tuple(sizes.items()),
        optimize,
    )


def rebuild_path(net: TensorNetwork, optimize: str = "auto") -> PathCost:
    """The path that contracts the tensors alone into the dense weight ``W[outputs, inputs]``."""
    return _path_cost(
        net.tensor_names,
        tuple(t.indices for t in net.tensors),
        (*net.outputs, *net.inputs),
        net.size_items,
        optimize,
    )


def _check_batch(batch: Any) -> None:
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise InvalidNetworkError(f"the batch size must be a positive integer; got {batch!r}")


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
    sizes = net.sizes
    names = net.tensor_names
    idx_of = {t.name: set(t.indices) for t in net.tensors}
    counts = net.index_counts
    internal = [i for i, c in counts.items() if c >= 2]
    open_set = {i for i, c in counts.items() if c == 1}

    def bound(part: frozenset[str], bond: str) -> int:
        inside: set[str] = set().union(*(idx_of[n] for n in part))
        value = 1
        for i in inside:
            if i == bond:
                continue
            if i in open_set:
                value *= sizes[i]
            elif any(n not in part for n in net.tensors_on(i)):
                value *= sizes[i]
        return value

    def candidate_parts(bond: str):
        a, b = net.tensors_on(bond)
        rest = [n for n in names if n not in (a, b)]
        if len(names) <= exhaustive_limit:
            for k in range(len(rest) + 1):
                for combo in itertools.combinations(rest, k):
                    yield frozenset((a, *combo))
                    yield frozenset((b, *combo))
        else:
            yield frozenset((a,))
            yield frozenset((b,))
            side = net.reachable(a, without=bond)
            if b not in side:
                yield frozenset(side)
                yield frozenset(set(names) - side)

    out = {}
    for bond in internal:
        if counts[bond] != 2:
            continue
        out[bond] = min(bound(p, bond) for p in candidate_parts(bond))
    return out


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
    """Every cost of a layer at one batch size (SPEC 2.2 ``tnviz cost --json``)."""

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

    @property
    def compression(self) -> float:
        return self.dense_params / self.params

    @property
    def best_strategy(self) -> str:
        """'factorized' when contracting x through the tensors costs no more than rebuilding the
        dense weight and doing one matmul, else 'rebuilt'."""
        return "factorized" if self.factorized_flops <= self.rebuild_flops else "rebuilt"

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
        d["compression"] = self.compression
        d["best_strategy"] = self.best_strategy
        d["peak_bytes_float32"] = self.peak_bytes("float32")
        return d


def cost(net: TensorNetwork, batch: int = 1, optimize: str = "auto") -> LayerCost:
    """All the costs of ``net`` as a layer applied to a batch of ``batch`` inputs."""
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
    * ``best``: the best path of the chosen optimizer (it may mix both);
    plus ``dense`` (a stored dense weight: one matmul) for reference.
    """

    batches: tuple[int, ...]
    factorized: tuple[int, ...]
    rebuilt: tuple[int, ...]
    best: tuple[int, ...]
    dense: tuple[int, ...]
    crossovers: tuple[tuple[int, str], ...]  # (first batch where the cheaper of factorized/rebuilt changes, new winner)

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"batch": b, "factorized": f, "rebuilt": r, "best_path": p, "dense": d,
             "cheaper": "factorized" if f <= r else "rebuilt"}
            for b, f, r, p, d in zip(self.batches, self.factorized, self.rebuilt, self.best, self.dense)
        ]


def batch_sweep(net: TensorNetwork, batches: Sequence[int] | None = None, optimize: str = "auto") -> BatchSweep:
    """FLOPs of the factorized and the rebuilt strategy (and the optimizer's best path and a
    stored dense weight) per batch, with every batch size where the cheaper of factorized and
    rebuilt changes, found exactly by bisection."""
    if batches is None:
        batches = [2**k for k in range(17)]
    batches = sorted(set(batches))
    for b in batches:
        _check_batch(b)
    reconstruct = rebuild_path(net, optimize).flops
    io = net.in_features * net.out_features

    def fact(b: int) -> int:
        return forward_path(net, b, "input-first").flops

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
    return BatchSweep(
        batches=tuple(batches),
        factorized=tuple(fact(b) for b in batches),
        rebuilt=tuple(reconstruct + 2 * b * io for b in batches),
        best=tuple(forward_path(net, b, optimize).flops for b in batches),
        dense=tuple(2 * b * io for b in batches),
        crossovers=tuple(crossovers),
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

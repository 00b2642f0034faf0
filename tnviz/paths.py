"""Contraction paths from shapes alone: the path optimizers, what a path costs step by step, and
``"best"``, the cheapest path among the optimizers whose search fits the contraction's size.

FLOPs are counted as opt_einsum's ``opt_cost`` counts them: a pairwise step over the index set
``U`` costs ``prod(U)``, doubled when an index is summed.

:data:`OPTIMIZERS` is the registry (the CLI's ``--optimize`` choices, the app's select boxes and
the tests iterate over it).  A string is handed to opt_einsum; a callable gets
``(operand_indices, output, sizes)`` and returns a path.  ``"best"`` runs the optimizers of
:func:`best_candidates` (chosen by the number of operands, so that the search stays interactive
at any size) and keeps the cheapest path; :attr:`PathCost.optimizer` says which one found it and
:attr:`PathCost.searched` what each candidate's path costs.

>>> from tnviz.builders import mpo
>>> pc = forward_path(mpo([8, 8, 8, 8], [8, 8, 8, 8], ranks=4), batch=1024)
>>> pc.flops, pc.optimizer
(2684354560, 'optimal')
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Callable, Sequence

import opt_einsum as oe
from opt_einsum.paths import _dp_compare_flops  # the inner step of oe's dp, to count its work

from .errors import BudgetError, InvalidNetworkError
from .network import BATCH_INDEX, TensorNetwork

INPUT_NAME = "x"
BEST = "best"

#: Exhaustive searches grow factorially (opt_einsum's ``optimal``) or exponentially in the number
#: of connected subsets (``dp``; the input ``x`` touches every tensor that carries an input leg,
#: so a layer's subsets are nearly all connected).  Asked for by name, each is refused beyond
#: these many operands (measured: ``optimal`` on 10 operands of a 9-core MPO ran for minutes,
#: ``dp`` on 21 operands of a 20-core MPO for half a minute).
MAX_OPTIMAL_OPERANDS = 8
MAX_DP_OPERANDS = 16
#: The sizes up to which ``"best"`` runs each search (each under about a second on one core).
BEST_OPTIMAL_OPERANDS = 7
BEST_DP_OPERANDS = 16
#: Candidate pairs the ``dp`` search may weigh (about a second of work here; a 16-core MPO
#: needs 40,000, a network of 11 tensors all bonded to each other 380,000).
DP_SEARCH_BUDGET = 200_000
#: Trials of the seeded randomized greedy search; ``"best"`` runs it up to this many operands.
RANDOM_GREEDY_REPEATS = 16
BEST_RANDOM_GREEDY_OPERANDS = 32
#: opt_einsum's greedy search grows about quadratically (a second per path at 500 operands);
#: ``"best"`` runs it up to this many operands.
BEST_GREEDY_OPERANDS = 128
#: opt_einsum's ``auto`` runs a branch search up to this many operands and ``greedy`` beyond.
AUTO_SEARCH_OPERANDS = 14
#: The input-first search is exact (dynamic programming over subsets) up to this many tensors.
INPUT_FIRST_EXACT_TENSORS = 12


def _flops(size: int, summed: bool) -> int:
    """opt_einsum's count of a pairwise step over ``size`` elements (doubled when it sums)."""
    return size * 2 if summed else size


def sequence_to_path(order: Sequence[int]) -> list[tuple[int, ...]]:
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


def left_to_right(operand_indices, output, sizes) -> list[tuple[int, ...]]:
    """x with the first tensor, then the running result with each next tensor in order."""
    return sequence_to_path(list(range(len(operand_indices))))


def input_first(operand_indices, output, sizes, *, exact_tensors: int = INPUT_FIRST_EXACT_TENSORS) -> list[tuple[int, ...]]:
    """The cheapest path that absorbs one tensor at a time into the running intermediate of the
    first operand (the input): "contracting the input through the cores".  Exact by dynamic
    programming over subsets up to ``exact_tensors`` tensors, greedy beyond.

    The running intermediate always holds the first operand's output indices (the batch), so
    their sizes scale every step alike: the order does not depend on them, and is computed (and
    cached) with them set to 1.
    """
    keep = set(operand_indices[0]) & set(output) if operand_indices else set()
    size_items = tuple((i, 1 if i in keep else int(s)) for i, s in sizes.items())
    order = _input_first_order(tuple(tuple(ix) for ix in operand_indices), tuple(output), size_items, exact_tensors)
    return sequence_to_path([0, *order])


@lru_cache(maxsize=256)
def _input_first_order(operand_indices, output, size_items, exact_tensors) -> tuple[int, ...]:
    n = len(operand_indices)
    if n < 2:
        return ()
    sizes = dict(size_items)
    sets = [frozenset(ix) for ix in operand_indices]
    out = frozenset(output)
    tensors = list(range(1, n))
    if len(tensors) <= exact_tensors:
        return _input_first_exact(sets, out, sizes, tensors)
    return _input_first_greedy(sets, out, sizes, tensors)


def _input_first_exact(sets, out, sizes, tensors) -> tuple[int, ...]:
    n = len(sets)
    running_of: dict[frozenset[int], frozenset[str]] = {}

    def running(absorbed: frozenset[int]) -> frozenset[str]:
        if absorbed not in running_of:
            held = set(sets[0]).union(*(sets[t] for t in absorbed))
            needed = set(out).union(*(sets[t] for t in range(1, n) if t not in absorbed))
            running_of[absorbed] = frozenset(held & needed)
        return running_of[absorbed]

    best: dict[frozenset[int], tuple[int, list[int]]] = {frozenset(): (0, [])}
    for _ in range(len(tensors)):
        layer: dict[frozenset[int], tuple[int, list[int]]] = {}
        for absorbed, (c, order) in best.items():
            cur = running(absorbed)
            for t in tensors:
                if t in absorbed:
                    continue
                nxt = absorbed | {t}
                union = cur | sets[t]
                total = c + _flops(math.prod(sizes[i] for i in union), bool(union - running(nxt)))
                if nxt not in layer or total < layer[nxt][0]:
                    layer[nxt] = (total, order + [t])
        best = layer
    return tuple(next(iter(best.values()))[1])


def _input_first_greedy(sets, out, sizes, tensors) -> tuple[int, ...]:
    """Absorb the cheapest next tensor, step by step.  Counts of the tensors still to absorb per
    index make each candidate's cost O(its own indices): an index of the running intermediate
    that the candidate does not hold is still needed, so only the candidate's indices decide
    the step's size and whether it sums."""
    remaining = {i: 0 for s in sets for i in s}
    for t in tensors:
        for i in sets[t]:
            remaining[i] += 1
    cur = {i for i in sets[0] if i in out or remaining[i] > 0}
    cur_size = math.prod(sizes[i] for i in cur)
    left = list(tensors)
    order: list[int] = []
    while left:
        best_t, best_cost = -1, -1
        for t in left:
            size = cur_size
            summed = False
            for i in sets[t]:
                if i not in cur:
                    size *= sizes[i]
                if i not in out and remaining[i] == 1:
                    summed = True
            c = _flops(size, summed)
            if best_cost < 0 or c < best_cost:
                best_t, best_cost = t, c
        left.remove(best_t)
        order.append(best_t)
        for i in sets[best_t]:
            remaining[i] -= 1
        cur |= sets[best_t]
        cur = {i for i in cur if i in out or remaining[i] > 0}
        cur_size = math.prod(sizes[i] for i in cur)
    return tuple(order)


def random_greedy(operand_indices, output, sizes, *, repeats: int = RANDOM_GREEDY_REPEATS) -> list[tuple[int, ...]]:
    """opt_einsum's randomized greedy search with a fixed number of trials, each seeded by its
    number (so the path is reproducible); Python's global ``random`` state is left as it was."""
    state = random.getstate()
    try:
        opt = oe.RandomGreedy(max_repeats=repeats)
        return [tuple(p) for p in opt([frozenset(ix) for ix in operand_indices], frozenset(output), dict(sizes))]
    finally:
        random.setstate(state)


class _SearchBudgetSpent(Exception):
    pass


def bounded_dp(operand_indices, output, sizes, *, budget: int = DP_SEARCH_BUDGET) -> list[tuple[int, ...]]:
    """opt_einsum's dynamic programming (FLOPs, no outer products), refused with a
    :class:`~tnviz.errors.BudgetError` once it has weighed ``budget`` candidate pairs: a count, not
    a clock, so the answer does not depend on the machine's load.  Its work grows with the number
    of connected subsets, which for a densely connected network explodes at a dozen operands."""
    key = (tuple(tuple(ix) for ix in operand_indices), tuple(output), tuple(sorted(sizes.items())), budget)
    if key not in _DP_OVER_BUDGET:
        count = 0

        def compare(*args: Any) -> None:
            nonlocal count
            count += 1
            if count > budget:
                raise _SearchBudgetSpent
            _dp_compare_flops(*args)

        try:
            path = oe.DynamicProgramming(minimize=compare)(
                [frozenset(ix) for ix in operand_indices], frozenset(output), dict(sizes))
            return [tuple(p) for p in path]
        except _SearchBudgetSpent:
            if len(_DP_OVER_BUDGET) > 256:
                _DP_OVER_BUDGET.clear()
            _DP_OVER_BUDGET.add(key)
    raise BudgetError(
        f"the 'dp' search is limited to {budget:,} candidate pairs (it grows exponentially with how densely "
        f"the tensors are connected); this contraction of {len(operand_indices)} operands needs more: "
        f"use {BEST!r} or 'greedy'"
    )


#: Contractions whose dp search ran over its budget (so a second request fails at once).
_DP_OVER_BUDGET: set[Any] = set()


@lru_cache(maxsize=256)
def _dp_fits(operand_indices, output, size_items) -> bool:
    """Whether dp finishes within its budget with the first operand's output indices (the batch)
    at size 1: decided once per network, whatever the batch, so ``"best"`` gives the same kind
    of answer at every batch size."""
    keep = set(operand_indices[0]) & set(output)
    try:
        bounded_dp(operand_indices, output, {i: 1 if i in keep else s for i, s in size_items})
        return True
    except BudgetError:
        return False


def best_candidates(n_operands: int) -> tuple[str, ...]:
    """The optimizers ``"best"`` runs for a contraction of ``n_operands``, in order of preference
    on a tie: the exhaustive searches only where they finish quickly, then the bounded ones."""
    names = []
    if n_operands <= BEST_OPTIMAL_OPERANDS:
        names.append("optimal")
    if n_operands <= BEST_DP_OPERANDS:
        names.append("dp")
    names.append("input-first")
    if n_operands <= BEST_GREEDY_OPERANDS:
        names.append("greedy")
    if n_operands <= BEST_RANDOM_GREEDY_OPERANDS:
        names.append("random-greedy")
    if n_operands <= AUTO_SEARCH_OPERANDS:
        names.append("auto")
    names.append("left-to-right")
    return tuple(names)


def best_path(operand_indices, output, sizes) -> list[tuple[int, ...]]:
    """The cheapest path among :func:`best_candidates` (as a plain optimizer callable)."""
    names = tuple(f"t{k}" for k in range(len(operand_indices)))
    pc = _path_cost(names, tuple(tuple(ix) for ix in operand_indices), tuple(output),
                    tuple((i, int(s)) for i, s in sizes.items()), BEST)
    return [tuple(p) for p in pc.path]


#: Path optimizers by name (feeds the CLI choices, the app's select boxes and the tests).
#: A string is handed to opt_einsum; a callable gets (operand_indices, output, sizes) and returns a path.
OPTIMIZERS: dict[str, str | Callable[..., list[tuple[int, ...]]]] = {
    BEST: best_path,
    "optimal": "optimal",
    "dp": bounded_dp,
    "greedy": "greedy",
    "random-greedy": random_greedy,
    "auto": "auto",
    "left-to-right": left_to_right,
    "input-first": input_first,
}
#: The optimizer every face uses unless told otherwise.
DEFAULT_OPTIMIZER = BEST


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
    """The path of one contraction (with or without the input).

    ``optimizer`` is the optimizer that found ``path`` (for ``"best"``, the winner);
    ``searched`` lists ``(optimizer, FLOPs of its path)`` for every optimizer that ran and
    ``skipped`` the ones that gave up.
    """

    path: tuple[tuple[int, ...], ...]
    steps: tuple[Step, ...]
    flops: int
    backward_flops: int
    largest_intermediate: int
    peak_elements: int
    optimizer: str = ""
    searched: tuple[tuple[str, int], ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()  # (optimizer, why it gave no path)


def check_optimizer(optimize: Any, n_operands: int) -> Any:
    """The registry entry of ``optimize``, refusing unknown names and exhaustive searches that
    would not finish at this size."""
    if not isinstance(optimize, str) or optimize not in OPTIMIZERS:
        raise InvalidNetworkError(f"unknown path optimizer {optimize!r}; choose one of {list(OPTIMIZERS)}")
    for name, limit, grows in (("optimal", MAX_OPTIMAL_OPERANDS, "factorially"),
                               ("dp", MAX_DP_OPERANDS, "exponentially")):
        if optimize == name and n_operands > limit:
            raise InvalidNetworkError(
                f"the {name!r} optimizer is limited to {limit} operands (its search grows {grows}); "
                f"this contraction has {n_operands}: use {BEST!r}, 'greedy' or 'auto'"
            )
    return OPTIMIZERS[optimize]


def grad_flops(operand: set[str], others: set[str], result: set[str], sizes: dict[str, int]) -> int:
    """FLOPs of d(result)/d(operand): contract grad(result) with the other operand(s) onto operand."""
    union = result | others
    return _flops(math.prod(sizes[i] for i in union | operand), bool(union - operand))


def _find_path(eq_operands, output, sizes, opt) -> list[tuple[int, ...]]:
    if len(eq_operands) == 1:
        return [(0,)]
    if callable(opt):
        return [tuple(p) for p in opt(eq_operands, output, sizes)]
    symbols = {name: oe.get_symbol(k) for k, name in enumerate(sizes)}
    eq = ",".join("".join(symbols[i] for i in ix) for ix in eq_operands) + "->" + "".join(symbols[i] for i in output)
    shapes = [tuple(sizes[i] for i in ix) for ix in eq_operands]
    path, _ = oe.contract_path(eq, *shapes, shapes=True, optimize=opt)
    return [tuple(p) for p in path]


@lru_cache(maxsize=1024)
def _path_cost(
    operand_names: tuple[str, ...],
    operand_indices: tuple[tuple[str, ...], ...],
    output: tuple[str, ...],
    size_items: tuple[tuple[str, int], ...],
    optimize: str,
) -> PathCost:
    opt = check_optimizer(optimize, len(operand_names))
    if optimize == BEST:
        return _best_cost(operand_names, operand_indices, output, size_items)
    sizes = dict(size_items)
    path = _find_path(operand_indices, output, sizes, opt)
    return replace(evaluate_path(operand_names, operand_indices, output, sizes, path), optimizer=optimize)


def _best_cost(operand_names, operand_indices, output, size_items) -> PathCost:
    found, skipped = [], []
    for name in best_candidates(len(operand_names)):
        if name == "dp" and not _dp_fits(operand_indices, output, size_items):
            skipped.append((name, f"over its search budget of {DP_SEARCH_BUDGET:,} candidate pairs"))
            continue
        try:
            found.append((name, _path_cost(operand_names, operand_indices, output, size_items, name)))
        except BudgetError:
            skipped.append((name, f"over its search budget of {DP_SEARCH_BUDGET:,} candidate pairs"))
    # fewest FLOPs, then the smallest intermediate, then the order of preference
    rank = {name: k for k, (name, _) in enumerate(found)}
    winner, pc = min(found, key=lambda item: (item[1].flops, item[1].largest_intermediate, rank[item[0]]))
    return replace(pc, optimizer=winner, searched=tuple((name, p.flops) for name, p in found),
                   skipped=tuple(skipped))


@dataclass(frozen=True)
class _StepShape:
    """What one step of a path does, independent of the index sizes."""

    positions: tuple[int, ...]
    operands: tuple[str, ...]
    operand_indices: tuple[tuple[str, ...], ...]
    keep: tuple[str, ...]
    summed: tuple[str, ...]
    shared: tuple[str, ...]  # indices held by both operands of a pairwise step
    union: tuple[str, ...]  # every index of the step (used for steps of more than two operands)
    grads_sum: tuple[bool, ...]  # per operand of a pairwise step: does its gradient sum an index


@lru_cache(maxsize=256)
def _path_shape(operand_names: tuple[str, ...], operand_indices: tuple[tuple[str, ...], ...],
                output: tuple[str, ...], path: tuple[tuple[int, ...], ...]) -> tuple[_StepShape, ...]:
    """The index sets of every step of ``path``: which indices each step keeps and sums.

    ``holders[i]`` counts the live operands holding ``i``.  A step can only sum an index that two
    of its operands share (when no other operand holds it), or one that a single operand holds
    alone (a dangling index, only ever on an original operand), so each step costs about the
    size of its smaller operand, not of its result."""
    names = list(operand_names)
    indices = [tuple(ix) for ix in operand_indices]
    out_set = set(output)
    holders: dict[str, int] = {}
    for ix in indices:
        for i in ix:
            holders[i] = holders.get(i, 0) + 1
    dangling = {i for i, c in holders.items() if c == 1 and i not in out_set}
    shapes = []
    for k, pair in enumerate(path):
        # pop from the back so positions stay valid, then restore left-to-right order
        picked = [(names.pop(p), indices.pop(p)) for p in sorted(pair, reverse=True)][::-1]
        ordered = tuple(dict.fromkeys(itertools.chain(*[ix for _, ix in picked])))
        grads: tuple[bool, ...] = ()
        if len(picked) == 2:
            a, b = set(picked[0][1]), set(picked[1][1])
            times = {i: 2 for i in a & b}
            grads = (not b <= a, not a <= b)
        else:
            counts: dict[str, int] = {}
            for _, ix in picked:
                for i in ix:
                    counts[i] = counts.get(i, 0) + 1
            times = {i: c for i, c in counts.items() if c > 1}
        summed_set = {i for i, m in times.items() if holders[i] == m and i not in out_set}
        if dangling:
            lone = dangling.intersection(ordered)
            summed_set |= lone
            dangling -= lone
        if not indices:  # last step: result in output order
            keep = tuple(output)
            summed_set = set(ordered) - out_set
        elif summed_set:
            keep = tuple(i for i in ordered if i not in summed_set)
        else:
            keep = ordered
        for i, m in times.items():
            holders[i] -= m - (0 if i in summed_set else 1)
        summed = tuple(i for i in ordered if i in summed_set)
        shared = tuple(i for i in ordered if i in times) if len(picked) == 2 else ()
        shapes.append(_StepShape(tuple(pair), tuple(p[0] for p in picked), tuple(p[1] for p in picked),
                                 keep, summed, shared, ordered, grads))
        names.append(f"#{k + 1}")
        indices.append(keep)
    return tuple(shapes)


def evaluate_path(operand_names: Sequence[str], operand_indices: Sequence[Sequence[str]], output: Sequence[str],
                  sizes: dict[str, int], path: Sequence[Sequence[int]]) -> PathCost:
    """Every step of ``path`` with its FLOPs (forward and backward), the intermediate's size and
    the peak memory.  The steps' index sets do not depend on the sizes (:func:`_path_shape`,
    cached); the sizes follow from the operands' sizes, so costing one path at many batch
    sizes is cheap."""
    path = tuple(tuple(int(q) for q in p) for p in path)
    shapes = _path_shape(tuple(operand_names), tuple(tuple(ix) for ix in operand_indices), tuple(output), path)
    live = [math.prod(map(sizes.__getitem__, ix)) for ix in operand_indices]
    live_total = sum(live)
    peak = live_total
    steps: list[Step] = []
    largest = 0
    for k, shape in enumerate(shapes):
        picked = [live.pop(p) for p in sorted(shape.positions, reverse=True)][::-1]
        picked_size = sum(picked)
        live_total -= picked_size
        if len(picked) == 2:
            union = picked[0] * picked[1] // math.prod(map(sizes.__getitem__, shape.shared))
        elif len(picked) == 1:
            union = picked[0]
        else:
            union = math.prod(map(sizes.__getitem__, shape.union))
        size = union // math.prod(map(sizes.__getitem__, shape.summed))
        flops = union * (max(1, len(picked) - 1) + (1 if shape.summed else 0))
        if len(picked) == 2:  # d(result)/d(operand): grad(result) with the other operand, onto it
            bwd = sum(_flops(union, sums) for sums in shape.grads_sum)
        else:  # a lone operand reduced (sum/transpose): its gradient is a broadcast
            bwd = union
        # Memory: the result is allocated while its operands are still alive.
        peak = max(peak, live_total + picked_size + size)
        largest = max(largest, size)
        steps.append(Step(
            operands=shape.operands,
            operand_indices=shape.operand_indices,
            result=f"#{k + 1}",
            result_indices=shape.keep,
            summed=shape.summed,
            flops=int(flops),
            size=int(size),
            backward_flops=int(bwd),
        ))
        live.append(size)
        live_total += size
    return PathCost(
        path=path,
        steps=tuple(steps),
        flops=sum(s.flops for s in steps),
        backward_flops=sum(s.backward_flops for s in steps),
        largest_intermediate=largest,
        peak_elements=peak,
    )


def check_batch(batch: Any) -> None:
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise InvalidNetworkError(f"the batch size must be a positive integer; got {batch!r}")


def forward_path(net: TensorNetwork, batch: int, optimize: str = DEFAULT_OPTIMIZER) -> PathCost:
    """The path of ``x[batch, inputs] * tensors -> y[batch, outputs]`` (input as an operand)."""
    check_batch(batch)
    sizes = {BATCH_INDEX: batch, **net.sizes}
    return _path_cost(
        (INPUT_NAME, *net.tensor_names),
        ((BATCH_INDEX, *net.inputs), *[t.indices for t in net.tensors]),
        (BATCH_INDEX, *net.outputs),
        tuple(sizes.items()),
        optimize,
    )


def rebuild_path(net: TensorNetwork, optimize: str = DEFAULT_OPTIMIZER) -> PathCost:
    """The path that contracts the tensors alone into the dense weight ``W[outputs, inputs]``."""
    return _path_cost(
        net.tensor_names,
        tuple(t.indices for t in net.tensors),
        (*net.outputs, *net.inputs),
        net.size_items,
        optimize,
    )

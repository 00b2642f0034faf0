"""Teaching helpers: step through the contraction of an input with a layer, and the gauge
freedom on a bond.  Pure logic (numpy, no UI); every number comes from the network given.

*Contraction steps.*  :func:`contraction_walkthrough` follows the forward path of
:func:`tnviz.cost.forward_path` (``x[batch, inputs]`` and the tensors -> ``y[batch, outputs]``)
and, for each pairwise step, names the two operands, which original tensors each one holds
(to highlight them on the diagram), the new intermediate's indices, shape and size, the step's
FLOPs and the running total.  :func:`with_input` draws ``x`` as a tensor beside the layer and
:func:`stage` draws the operands left after some steps (intermediates as tensors).

*Gauge freedom.*  Inserting ``X X^-1`` on a bond between tensors ``a`` and ``b``
(``a -> a X^-1``, ``b -> X b``) changes both tensors but not the layer: :func:`gauge_demo`
does it with a seeded random invertible ``X`` and measures both facts.

>>> from tnviz.builders import mpo
>>> walk = contraction_walkthrough(mpo([4, 4], [4, 4], ranks=2), batch=1, optimize="left-to-right")
>>> [s.operands for s in walk.steps]
[('x', 'A'), ('B', '#1')]
>>> walk.steps[-1].running_flops == walk.total_flops
True
>>> demo = gauge_demo(mpo([4, 4], [4, 4], ranks=2), "b1", seed=1)
>>> demo.change_norms["A"] > 0 and demo.max_abs_diff < 1e-12
True
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .contract import forward, random_tensors, to_dense
from .cost import INPUT_NAME, forward_path
from .errors import BudgetError, InvalidNetworkError
from .gauge import apply_gauge, check_bond, gauge_bonds, random_invertible  # noqa: F401 (re-exported)
from .layout import auto_layout
from .network import BATCH_INDEX, Tensor, TensorNetwork

#: Name of the batch leg of ``x`` in drawn networks ("batch" itself is reserved by the model).
#: Not "B": templates name their second tensor B, and "B=1" beside tensor B read as one thing.
BATCH_LEG = "N"


def _fresh(base: str, taken: set[str]) -> str:
    """``base`` unless taken, else ``base'``, ``base''``..."""
    name = base
    while name in taken:
        name += "'"
    return name


# ---------------------------------------------------------------------- contraction steps
@dataclass(frozen=True)
class TeachStep:
    """One pairwise step of the forward contraction, as shown on the Teach page."""

    number: int  # 1-based
    operands: tuple[str, ...]  # 'x', tensor names, or '#k' for the k-th intermediate
    members: tuple[tuple[str, ...], ...]  # the drawn tensors each operand holds ('x' for the input)
    operand_indices: tuple[tuple[str, ...], ...]
    result: str  # '#k'
    result_indices: tuple[str, ...]
    result_shape: tuple[int, ...]
    summed: tuple[str, ...]  # indices summed over in this step
    size: int  # elements of the new intermediate
    flops: int
    running_flops: int  # FLOPs of this step and all before it

    @property
    def highlight_tensors(self) -> tuple[str, ...]:
        """Every drawn tensor taking part in this step (both operands)."""
        return tuple(dict.fromkeys(m for group in self.members for m in group))

    def describe(self) -> str:
        """One line: ``"#2 = #1 · B  summed b1  ->  #2[batch,o1,o2]  shape 1x4x4 (16 elements)"``."""
        summed = ", ".join(self.summed) or "nothing (an outer product)"
        shape = "x".join(str(d) for d in self.result_shape) or "scalar"
        return (
            f"{self.result} = {' · '.join(self.operands)}, summing {summed} -> "
            f"{self.result}[{', '.join(self.result_indices)}], shape {shape} ({self.size:,} elements)"
        )


@dataclass(frozen=True)
class Walkthrough:
    """The forward contraction of ``x`` with a layer, step by step."""

    network: TensorNetwork
    display: TensorNetwork  # the layer with x drawn as a tensor (see with_input)
    input_name: str  # the name of x in ``display`` (normally 'x')
    batch_leg: str  # the name of the batch leg in ``display`` (normally 'N')
    batch: int
    optimize: str
    steps: tuple[TeachStep, ...]
    total_flops: int
    dense_flops: int  # 2·batch·in·out, the plain matrix product

    def display_index(self, index: str) -> str:
        """The name of a step index in ``display`` (``'batch'`` is drawn as the batch leg)."""
        return self.batch_leg if index == BATCH_INDEX else index


def with_input(net: TensorNetwork, batch: int = 1) -> TensorNetwork:
    """The layer with the input drawn as a tensor ``x[N, inputs...]``: each input leg becomes a
    bond between ``x`` and its tensor, the batch leg ``N`` (size ``batch``) dangles from ``x``
    (renamed ``N'``... when the network uses the name for an index or a tensor).
    ``x`` sits below the tensors that carry the inputs.

    >>> from tnviz.builders import mpo
    >>> with_input(mpo([4, 4], [4, 4], ranks=2), batch=8).tensor("x").indices
    ('N', 'i1', 'i2')
    """
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise InvalidNetworkError(f"the batch size must be a positive integer; got {batch!r}")
    xname = _fresh(INPUT_NAME, set(net.tensor_names))
    bname = _fresh(BATCH_LEG, set(net.sizes) | set(net.tensor_names))
    layout = net.layout if all(n in net.layout for n in net.tensor_names) else auto_layout(net)
    pts = {n: (float(layout[n][0]), float(layout[n][1])) for n in net.tensor_names}
    names = list(pts)
    spacing = min(
        (math.dist(pts[a], pts[b]) for k, a in enumerate(names) for b in names[k + 1:]), default=1.0
    ) or 1.0
    carriers = [t.name for t in net.tensors if any(i in net.inputs for i in t.indices)] or names
    x_pos = (
        sum(pts[n][0] for n in carriers) / len(carriers),
        min(p[1] for p in pts.values()) - 1.2 * spacing,
    )
    return TensorNetwork.build(
        [Tensor(xname, (bname, *net.inputs)), *net.tensors],
        {bname: batch, **net.sizes},
        [bname],
        net.outputs,
        f"x · {net.name}" if net.name else "x · layer",
        {xname: x_pos, **pts},
    )


def contraction_walkthrough(net: TensorNetwork, batch: int = 1, optimize: str = "optimal") -> Walkthrough:
    """The forward contraction of a batch of inputs with ``net`` along the path ``optimize``
    chooses (a key of :data:`tnviz.OPTIMIZERS`), with the running FLOPs after each step.

    The steps are those of ``tnviz.cost.forward_path(net, batch, optimize).steps``; this adds
    which drawn tensors each operand holds (replaying the path's positions, so names never
    clash) and the running total.
    """
    path_cost = forward_path(net, batch, optimize)
    display = with_input(net, batch)
    xname = display.tensor_names[0]
    sizes = {BATCH_INDEX: batch, **net.sizes}
    groups: list[tuple[str, ...]] = [(xname,), *((n,) for n in net.tensor_names)]
    steps: list[TeachStep] = []
    running = 0
    for k, (pair, step) in enumerate(zip(path_cost.path, path_cost.steps)):
        picked = [groups.pop(p) for p in sorted(pair, reverse=True)][::-1]
        groups.append(tuple(m for g in picked for m in g))
        running += step.flops
        steps.append(TeachStep(
            number=k + 1,
            operands=step.operands,
            members=tuple(picked),
            operand_indices=step.operand_indices,
            result=step.result,
            result_indices=step.result_indices,
            result_shape=tuple(sizes[i] for i in step.result_indices),
            summed=step.summed,
            size=step.size,
            flops=step.flops,
            running_flops=running,
        ))
    return Walkthrough(
        network=net,
        display=display,
        input_name=xname,
        batch_leg=display.inputs[0],
        batch=batch,
        optimize=optimize,
        steps=tuple(steps),
        total_flops=path_cost.flops,
        dense_flops=2 * batch * net.in_features * net.out_features,
    )


@dataclass(frozen=True)
class Stage:
    """The operands left after ``done`` steps, drawn as a network, and which two of them the
    next step merges (names in ``network``; empty after the last step)."""

    done: int
    network: TensorNetwork
    next_pair: tuple[str, ...]
    next_summed: tuple[str, ...]  # indices the next step sums over (names in ``network``)


def stage(walk: Walkthrough, done: int) -> Stage:
    """The contraction after ``done`` steps: intermediates ``#k`` are tensors carrying their kept
    indices, placed at the centre of the drawn tensors they hold.  ``done=0`` draws
    :attr:`Walkthrough.display`; after the last step one tensor ``y`` is left.
    """
    if not isinstance(done, int) or isinstance(done, bool) or not 0 <= done <= len(walk.steps):
        raise InvalidNetworkError(f"a walkthrough stage is a step count 0..{len(walk.steps)}; got {done!r}")
    display = walk.display
    pos = display.layout
    # live operands in path order: drawn name -> (drawn tensors it holds, its indices)
    live: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
        t.name: ((t.name,), t.indices) for t in display.tensors
    }

    def key_of(group: tuple[str, ...]) -> str:
        return next(n for n, (members, _) in live.items() if members == group)

    for step in walk.steps[:done]:
        members = tuple(m for group in step.members for m in group)
        for group in step.members:
            live.pop(key_of(group))
        name = _fresh("y" if step.number == len(walk.steps) else step.result, set(live))
        live[name] = (members, tuple(walk.display_index(i) for i in step.result_indices))
    next_pair: tuple[str, ...] = ()
    next_summed: tuple[str, ...] = ()
    if done < len(walk.steps):
        next_pair = tuple(key_of(g) for g in walk.steps[done].members)
        next_summed = tuple(walk.display_index(i) for i in walk.steps[done].summed)
    if done == 0:
        return Stage(0, display, next_pair, next_summed)
    tensors = [Tensor(n, indices) for n, (_, indices) in live.items()]
    used = {i for t in tensors for i in t.indices}
    layout = {
        n: (sum(pos[m][0] for m in members) / len(members), sum(pos[m][1] for m in members) / len(members))
        for n, (members, _) in live.items()
    }
    net = TensorNetwork.build(
        tensors,
        {i: s for i, s in display.sizes.items() if i in used},
        [i for i in display.inputs if i in used],
        [o for o in display.outputs if o in used],
        f"after step {done}",
        _separate(layout),
    )
    return Stage(done, net, next_pair, next_summed)


def _separate(layout: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """Nudge positions that (nearly) coincide, so no tensor hides another."""
    out: dict[str, tuple[float, float]] = {}
    for name, (x, y) in layout.items():
        while any(math.dist((x, y), p) < 0.3 for p in out.values()):
            y -= 0.5
        out[name] = (round(x, 4), round(y, 4))
    return out


# ---------------------------------------------------------------------- gauge freedom
#: Compare whole dense matrices up to this many entries; above, compare outputs on probe inputs.
MAX_DENSE_ELEMENTS = 1 << 20
#: Refuse to draw random tensors for networks with more parameters than this.
MAX_DEMO_PARAMS = 1 << 24
#: Refuse probe inputs (probes x in_features) larger than this.
MAX_PROBE_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class GaugeDemo:
    """The result of inserting ``X X^-1`` on one bond (``a -> a X^-1``, ``b -> X b``)."""

    bond: str
    left: str  # a: gets X^-1
    right: str  # b: gets X
    seed: int
    condition: float  # condition number of X
    change_norms: dict[str, float]  # Frobenius norm of (new - old) for a and b
    relative_changes: dict[str, float]  # the same divided by the old tensor's norm
    max_abs_diff: float  # max |layer after - layer before| over what was compared
    max_abs_value: float  # max |layer before|, for scale
    compared: str  # "dense matrix 16x16" or "outputs on 16 random inputs"
    before: dict[str, np.ndarray]
    after: dict[str, np.ndarray]


def gauge_demo(
    net: TensorNetwork,
    bond: str,
    seed: int = 0,
    *,
    tensors: Mapping[str, Any] | None = None,
    tensor_seed: int = 0,
    max_dense_elements: int = MAX_DENSE_ELEMENTS,
    probes: int = 16,
) -> GaugeDemo:
    """Insert ``X X^-1`` (``X = random_invertible(size, seed)``) on ``bond`` of ``net`` with
    float64 tensors (``tensors``, or seeded random ones) and measure: how much ``a`` and ``b``
    changed, and the largest change of the layer, on the whole dense matrix when it has at most
    ``max_dense_elements`` entries, else on the outputs for ``probes`` seeded random inputs."""
    check_bond(net, bond)
    if tensors is None:
        if net.params > MAX_DEMO_PARAMS:
            raise BudgetError(
                f"the gauge demo draws random tensors for networks up to {MAX_DEMO_PARAMS:,} parameters; "
                f"this one has {net.params:,}"
            )
        before = random_tensors(net, seed=tensor_seed, dtype=np.float64)
    else:
        before = {n: np.asarray(tensors[n], dtype=np.float64) for n in net.tensor_names}
    dense = net.in_features * net.out_features <= max_dense_elements
    if not dense and probes * net.in_features > MAX_PROBE_ELEMENTS:
        raise BudgetError(
            f"the gauge demo compares the layer on {probes} random inputs of up to {MAX_PROBE_ELEMENTS // probes:,} "
            f"features; this layer has in_features = {net.in_features:,}"
        )
    X = random_invertible(net.sizes[bond], seed)
    after = apply_gauge(net, before, bond, X)
    left, right = net.tensors_on(bond)
    change = {n: float(np.linalg.norm(after[n] - before[n])) for n in (left, right)}
    relative = {n: change[n] / max(float(np.linalg.norm(before[n])), 1e-300) for n in (left, right)}
    if dense:
        old, new = to_dense(net, before), to_dense(net, after)
        compared = f"dense matrix {net.out_features}x{net.in_features}"
    else:
        x = np.random.default_rng(tensor_seed + 1).standard_normal((probes, net.in_features))
        old, new = forward(net, x, before), forward(net, x, after)
        compared = f"outputs on {probes} random inputs (the dense matrix has {net.in_features * net.out_features:,} entries)"
    return GaugeDemo(
        bond=bond,
        left=left,
        right=right,
        seed=seed,
        condition=float(np.linalg.cond(X)),
        change_norms=change,
        relative_changes=relative,
        max_abs_diff=float(np.max(np.abs(new - old))),
        max_abs_value=float(np.max(np.abs(old))),
        compared=compared,
        before=before,
        after=after,
    )

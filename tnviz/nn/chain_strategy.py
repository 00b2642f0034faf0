"""The ``chain`` strategy (:data:`CHAIN`): the sweep of :mod:`tnviz.nn.chain`, or the input half
first (:class:`InputFirstPlan`: two merged halves; :class:`CoresFirstPlan`: the output cores one
at a time), whichever the cost model finds cheaper.

The sweep of :mod:`tnviz.nn.chain` goes left to right, and along an MPO the output legs of the
left cores come before the input legs of the right ones.  When the input legs sit at the right
end (the inputs-last MPOs that data-aware compression writes: every input leg on the last core),
that sweep carries every input through every output core, so its cheapest cover is one merged
segment, the rebuilt matrix.  This plan cuts the chain into two halves at a bond ``K`` instead,
``W[o, p, i, j] = sum_k L[o, i, k] R[k, p, j]``, and contracts ``x[b, i, j]`` with the right
(input) half first:

1. ``t[b, i, k, p] = sum_j x[b, i, j] R[k, p, j]``: one GEMM ``(B·I, J) @ (J, K·P)``;
2. ``y[b, o, p] = sum_{i, k} L[o, i, k] t[b, i, k, p]``: one GEMM ``(B, I·K) @ (I·K, O)`` when
   ``P = 1``, else ``B`` GEMMs ``(O, I·K) @ (I·K, P)`` (a bmm on a stride-0 expand).

Both results are in the layout the next step reads (no permuted copy of the state); the halves
are merged with :func:`tnviz.nn.chain.merge_along` and permuted once (cached in eval mode).  On
MiniLM's 1536->384 inputs-last MPO at batch 1024 this is a 1536->151 GEMM and a 151->384 GEMM,
about half the rebuilt matrix's FLOPs (``factorized`` took the same path through opt_einsum and
ran 1.2x / 1.7x faster than what ``chain`` ran in eval / training: benchmarks/README.md).

:data:`CHAIN` runs this plan where its modelled cost is below the sweep's.  Where nothing is
cached (training) merging the output half costs a GEMM per call; :class:`CoresFirstPlan` applies
its cores one by one instead, for chains whose first cores carry outputs only.

>>> from tnviz.builders import mpo
>>> from tnviz.decompose.legs import inputs_last_cores
>>> ins, outs = inputs_last_cores((32, 48), (16, 24))
>>> net = mpo([32, 48], [16, 24], ranks=40, in_cores=ins, out_cores=outs)
>>> plan_input_first(net, 1024).describe()
'B, then A (input half first)'
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from ..network import TensorNetwork
from .chain import (ChainCore, ChainPlan, chain_cores, chain_segment, merge_along, merge_shapes, open_chain, plan_chain,
                    two_halves)
from .plan import MEMORY_WEIGHT, MIN_GEMM_FLOPS, STEP_OVERHEAD, PlanContext, Segment, TorchStrategy, torch_addmm


@dataclass(frozen=True)
class InputFirstPlan:
    """The chain cut into two halves (:func:`tnviz.nn.chain.two_halves`), the right one contracted first."""

    net: TensorNetwork
    batch: int
    halves: ChainPlan  # the two segments: left half, right half
    I: int  # inputs of the left half
    J: int  # inputs of the right half
    O: int  # outputs of the left half
    P: int  # outputs of the right half
    K: int  # the bond between the halves

    @property
    def merge_flops(self) -> int:
        """Merging each half's cores (0 for a half of one core)."""
        return sum(s.merge_flops for s in self.halves.segments)

    @property
    def step_flops(self) -> tuple[int, int]:
        B, O, I, K, P, J = self.batch, self.O, self.I, self.K, self.P, self.J
        return 2 * B * I * J * K * P, 2 * B * O * I * K * P

    def flops(self, step: bool = False) -> int:
        """The two GEMMs; with ``step`` a training step (as :func:`tnviz.nn.plan.sweep_flops`: a
        weight and a state gradient per step but none for the input, merges 3x)."""
        first, second = self.step_flops
        if not step:
            return first + second
        return 2 * first + 3 * second + 3 * self.merge_flops

    @property
    def largest(self) -> int:
        B, O, I, K, P, J = self.batch, self.O, self.I, self.K, self.P, self.J
        return max(B * I * K * P, B * O * P, J * K * P, O * I * K)

    def estimate(self, cached: bool = False) -> float:
        B, O, I, K, P, J = self.batch, self.O, self.I, self.K, self.P, self.J
        first, second = self.step_flops
        cost = first + MEMORY_WEIGHT * (B * I * J + B * I * K * P + J * K * P) + STEP_OVERHEAD
        if P == 1:
            cost += second + MEMORY_WEIGHT * (B * I * K + B * O + O * I * K) + STEP_OVERHEAD
        else:  # B small GEMMs, each charged at least MIN_GEMM_FLOPS (as a batched sweep step)
            cost += B * max(2 * O * I * K * P, MIN_GEMM_FLOPS) + MEMORY_WEIGHT * (B * I * K * P + B * O * P + O * I * K) \
                + STEP_OVERHEAD
        if not cached:  # both halves merged and permuted once per call
            cost += self.merge_flops + 2 * MEMORY_WEIGHT * (J * K * P + O * I * K) \
                + STEP_OVERHEAD * len(self.halves.cores)
        return cost

    def describe(self) -> str:
        names = [c.name for c in self.halves.cores]
        left, right = ("".join(names[s.first:s.last + 1]) for s in self.halves.segments)
        return f"{right}, then {left} (input half first)"

    def merged(self, tensors: list[Any]) -> tuple[Any, Any]:
        """``(L as (O, I·K), R as (J, K·P))`` merged from ``tensors`` (in network order)."""
        left, right = self.halves.segments
        O, I, K, P, J = self.O, self.I, self.K, self.P, self.J
        L = self.halves.merge(left, tensors)  # (I, O·K): inputs, then outputs and the right bond
        R = self.halves.merge(right, tensors)  # (K·J, P): the left bond and inputs, then outputs
        # Where a permute is a plain transpose (a half with no inputs or no outputs of its own:
        # ``I = 1`` or ``P = 1``), the reshape is a strided view that the GEMM reads as it is; a
        # contiguous copy of it cost more than the GEMM (0.19 ms a call for the 151x1536 right
        # half of MiniLM's 1536->384 MPO in training, measured 2026-12-07).
        L = L.reshape(I, O, K).permute(1, 0, 2).reshape(O, I * K)
        R = R.reshape(K, J, P).permute(1, 0, 2).reshape(J, K * P)
        return L, R

    def __call__(self, x2d, ctx: PlanContext):
        B, O, I, K, P, J = self.batch, self.O, self.I, self.K, self.P, self.J
        tensors = ctx.ordered_tensors()
        L, R = ctx.cached(("chain-input-first", self.halves.segments[0].last), lambda: self.merged(tensors))
        t = x2d.reshape(B * I, J) @ R  # (B, I, K, P) in memory
        if P == 1:
            bias = ctx.bias
            if bias is not None and bias.dtype == t.dtype == L.dtype:
                ctx.bias_added = True
                return torch_addmm(bias, t.reshape(B, I * K), L.t())
            return t.reshape(B, I * K) @ L.t()
        y = L.expand(B, O, I * K).bmm(t.reshape(B, I * K, P))  # stride-0 expand: no copy of L
        return y.reshape(B, O * P)


@dataclass(frozen=True)
class CoresFirstPlan:
    """The input half first, then the output cores one at a time from the right (not merged).

    For a chain whose first cores carry outputs only and whose input half carries no outputs (the
    inputs-last MPOs of data-aware compression).  The state is kept transposed, ``(K, rest)``
    with the batch last, so each output core is one GEMM from the left on it:

    1. ``s[k, b] = sum_j R[k, j] x[b, j]``: ``(K, J) @ x^T``;
    2. core ``c = (left, O_c, right)``: ``s <- G_c (left·O_c, right) @ s (right, rest)``, whose
       result, read as ``(left, O_c·rest)``, is what the next core to the left reads;
    3. the last result is ``(O, B)``, copied once into ``(B, O)``.

    Where nothing is cached (training) this skips merging the output half, whose cost grows with
    the product of its bonds: on MiniLM's 384->1536 inputs-last MPO (bonds 192, 134) the merge
    is a 192x192x1072 GEMM per call, more than the layer's other work (benchmarks/README.md)."""

    net: TensorNetwork
    batch: int
    cores: tuple[ChainCore, ...]
    right: Segment  # the input half, merged: (K·J, 1)
    cut: int  # the last output-only core
    K: int
    J: int

    @cached_property
    def sizes(self) -> tuple[tuple[int, int, int, int], ...]:
        """``(left, O_c, right, rest)`` of each output core, in the order they are applied (worked
        out once per plan: every forward call reads it)."""
        shapes = merge_shapes(self.net, self.cores[:self.cut + 1])
        out, rest = [], self.batch
        for left, _, outs, right in reversed(shapes):
            out.append((left, outs, right, rest))
            rest *= outs
        return tuple(out)

    @property
    def merge_flops(self) -> int:
        return self.right.merge_flops

    def flops(self, step: bool = False) -> int:
        first = 2 * self.batch * self.J * self.K
        steps = [2 * left * outs * right * rest for left, outs, right, rest in self.sizes]
        if not step:
            return first + sum(steps)
        return 2 * first + 3 * sum(steps) + 3 * self.merge_flops

    @property
    def largest(self) -> int:
        return max([self.batch * self.net.out_features, self.J * self.K, self.K * self.batch]
                   + [left * outs * rest for left, outs, right, rest in self.sizes])

    def estimate(self, cached: bool = False) -> float:
        B, J, K = self.batch, self.J, self.K
        cost = 2 * B * J * K + MEMORY_WEIGHT * (B * J + B * K + J * K) + STEP_OVERHEAD
        for left, outs, right, rest in self.sizes:
            cost += 2 * left * outs * right * rest + MEMORY_WEIGHT * (left * outs * right + right * rest
                                                                     + left * outs * rest) + STEP_OVERHEAD
        cost += 2 * MEMORY_WEIGHT * B * self.net.out_features + STEP_OVERHEAD  # the (O, B) -> (B, O) copy
        if not cached:  # the input half merged and every core permuted once per call
            cost += self.right.merge_flops + 2 * MEMORY_WEIGHT * J * K \
                + STEP_OVERHEAD * (len(self.cores) - self.cut - 1)
        return cost

    def describe(self) -> str:
        names = [c.name for c in self.cores]
        return ", then ".join(["".join(names[self.cut + 1:]), *names[self.cut::-1]]) + " (inputs first, core by core)"

    def matrices(self, tensors: list[Any]) -> tuple[Any, tuple[Any, ...]]:
        """``R`` as ``(K, J)`` and each output core as ``(left·O_c, right)``, right to left."""
        seg = self.cores[self.cut + 1:]
        arrays = [tensors[c.position].permute(c.perm) for c in seg]
        R = arrays[0] if len(arrays) == 1 else merge_along(arrays, merge_shapes(self.net, seg))
        cores = tuple(tensors[c.position].permute(c.perm).reshape(left * outs, right)
                      for c, (left, outs, right, _) in zip(reversed(self.cores[:self.cut + 1]), self.sizes))
        return R.reshape(self.K, self.J), cores

    def __call__(self, x2d, ctx: PlanContext):
        tensors = ctx.ordered_tensors()
        R, cores = ctx.cached(("chain-cores-first", self.cut), lambda: self.matrices(tensors))
        state = R @ x2d.t()  # (K, B)
        for G, (left, outs, right, rest) in zip(cores, self.sizes):
            state = G @ state.reshape(right, rest)  # (left·O_c, rest): (left, O_c, ..., B) in memory
        return state.reshape(self.net.out_features, self.batch).t().contiguous()


def cores_first_at(net: TensorNetwork, cores: tuple[ChainCore, ...], batch: int) -> CoresFirstPlan | None:
    """The core-by-core plan of ``cores`` when the chain's first cores carry outputs only and the
    rest (the input half, at least one core) inputs only; else ``None``."""
    cut = next((k for k, c in enumerate(cores) if c.ins), len(cores)) - 1
    if cut < 0 or cut == len(cores) - 1 or any(c.outs for c in cores[cut + 1:]):
        return None
    right = chain_segment(net, cores, cut + 1, len(cores) - 1, batch)
    K = net.sizes[cores[cut].right]
    return CoresFirstPlan(net, batch, cores, right, cut, K, right.k // K)


def input_first_at(net: TensorNetwork, cores: tuple[ChainCore, ...], cut: int, batch: int,
                   cached: bool = False) -> InputFirstPlan:
    """The plan that cuts the chain ``cores`` of ``net`` after core ``cut``."""
    halves, (I, J, O, P, K) = two_halves(net, cores, cut, batch, cached)
    return InputFirstPlan(net, batch, halves, I, J, O, P, K)


@lru_cache(maxsize=512)
def plan_input_first(net: TensorNetwork, batch: int, cached: bool = False) -> InputFirstPlan | CoresFirstPlan:
    """The cheapest plan that contracts the input half first at ``batch``: a cut of the chain
    into two merged halves, or, where the chain allows it, the output cores one by one."""
    cores = open_chain(net, "the input-half-first plan", least=2)
    plans: list[Any] = [input_first_at(net, cores, cut, batch, cached) for cut in range(len(cores) - 1)]
    by_core = cores_first_at(net, cores, batch)
    if by_core is not None:
        plans.append(by_core)
    return min(plans, key=lambda p: p.estimate(cached))


class Chain(TorchStrategy):
    name = "chain"
    description = ("MPO sweep: merged neighbouring cores as batched GEMMs on reshapes, no permutes "
                   "(or the input half first, then the output half, merged or core by core)")

    def supports(self, net: TensorNetwork) -> bool:
        return chain_cores(net) is not None

    def plan(self, net: TensorNetwork, batch: int, cached: bool = False):
        """The sweep (:func:`tnviz.nn.chain.plan_chain`) or, where its modelled cost is lower, the
        input half first (:func:`plan_input_first`)."""
        sweep_plan = plan_chain(net, batch, cached)
        if len(sweep_plan.cores) < 2:
            return sweep_plan
        other = plan_input_first(net, batch, cached)
        return other if other.estimate(cached) < sweep_plan.estimate(cached) else sweep_plan


CHAIN = Chain()

"""The ``chain`` strategy (:data:`CHAIN`): the sweep of :mod:`tnviz.nn.chain`, or its second
plan, the input half first, whichever the cost model finds cheaper.

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

:data:`CHAIN` runs this plan where its modelled cost is below the sweep's.

>>> from tnviz.builders import mpo
>>> from tnviz.decompose.legs import inputs_last_cores
>>> ins, outs = inputs_last_cores((32, 48), (16, 24))
>>> net = mpo([32, 48], [16, 24], ranks=40, in_cores=ins, out_cores=outs)
>>> plan_input_first(net, 1024).describe()
'B, then A (input half first)'
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..network import TensorNetwork
from .chain import ChainCore, ChainPlan, chain_cores, open_chain, plan_chain, two_halves
from .plan import MEMORY_WEIGHT, MIN_GEMM_FLOPS, STEP_OVERHEAD, PlanContext, TorchStrategy, torch_addmm


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
        L = L.reshape(I, O, K).permute(1, 0, 2).reshape(O, I * K)
        R = R.reshape(K, J, P).permute(1, 0, 2).reshape(J, K * P)
        return L.contiguous(), R.contiguous()

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


def input_first_at(net: TensorNetwork, cores: tuple[ChainCore, ...], cut: int, batch: int,
                   cached: bool = False) -> InputFirstPlan:
    """The plan that cuts the chain ``cores`` of ``net`` after core ``cut``."""
    halves, (I, J, O, P, K) = two_halves(net, cores, cut, batch, cached)
    return InputFirstPlan(net, batch, halves, I, J, O, P, K)


@lru_cache(maxsize=512)
def plan_input_first(net: TensorNetwork, batch: int, cached: bool = False) -> InputFirstPlan:
    """The cheapest cut of the chain for the input-half-first plan at ``batch``."""
    cores = open_chain(net, "the input-half-first plan", least=2)
    plans = [input_first_at(net, cores, cut, batch, cached) for cut in range(len(cores) - 1)]
    return min(plans, key=lambda p: p.estimate(cached))


class Chain(TorchStrategy):
    name = "chain"
    description = ("MPO sweep: merged neighbouring cores as batched GEMMs on reshapes, no permutes "
                   "(or the input half first, then the output half)")

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

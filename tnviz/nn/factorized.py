"""The ``factorized`` strategy: ``x`` contracted through the tensors along the planned opt_einsum
path (the same path the cost model reports); works for every network.

>>> from tnviz.builders import mpo
>>> FACTORIZED.plan(mpo([4, 4], [4, 4], ranks=2), 8).describe()
'2 pairwise contractions (opt_einsum path)'
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import opt_einsum as oe

from ..cost import forward_path, training_step_flops
from ..network import TensorNetwork
from .plan import FACTORIZED_PASSES, FACTORIZED_SLOWDOWN, MEMORY_WEIGHT, STEP_OVERHEAD, PlanContext, TorchStrategy


@dataclass(frozen=True)
class FactorizedPlan:
    """Contract ``x`` through the tensors along one opt_einsum path."""

    net: TensorNetwork
    batch: int
    path: tuple[tuple[int, ...], ...]
    path_flops: int  # the path's FLOPs (opt_einsum's count)
    largest: int
    moved: int  # elements of all operands and intermediates (memory traffic)
    steps: int

    def estimate(self, cached: bool = False) -> float:
        work = self.path_flops + FACTORIZED_PASSES * MEMORY_WEIGHT * self.moved
        return FACTORIZED_SLOWDOWN * (work + STEP_OVERHEAD * self.steps)

    def flops(self, step: bool = False) -> int:
        """The path's FLOPs; with ``step`` a training step with an input that needs no gradient
        (:func:`tnviz.cost.training_step_flops`)."""
        return training_step_flops(self.net, self.batch, input_grad=False)[0] if step else int(self.path_flops)

    def describe(self) -> str:
        return f"{self.steps} pairwise contractions (opt_einsum path)"

    @property
    def expression(self):
        return _layer_expression(self.net, self.batch, self.path)

    def __call__(self, x2d, ctx: PlanContext):
        xs = x2d.reshape((self.batch, *self.net.in_dims))
        y = self.expression(xs, *ctx.ordered_tensors(), backend="torch")
        return y.reshape(self.batch, self.net.out_features)


@lru_cache(maxsize=256)
def _layer_expression(net: TensorNetwork, batch: int, path: tuple[tuple[int, ...], ...]):
    shapes = [(batch, *net.in_dims), *net.shapes]
    return oe.contract_expression(net.layer_equation(), *shapes, optimize=[tuple(p) for p in path])


class Factorized(TorchStrategy):
    name = "factorized"
    description = "x contracted through the tensors along the planned opt_einsum path"

    def supports(self, net: TensorNetwork) -> bool:
        return True

    def plan(self, net: TensorNetwork, batch: int, cached: bool = False) -> FactorizedPlan:
        """The plan for ``batch`` (the same in every mode: nothing is cached)."""
        pc = forward_path(net, batch, "auto")
        moved = batch * (net.in_features + net.out_features) + sum(s.size for s in pc.steps)
        return FactorizedPlan(net, batch, pc.path, pc.flops, pc.largest_intermediate, moved, len(pc.steps))


FACTORIZED = Factorized()

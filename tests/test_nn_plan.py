"""What every plan shares (tnviz.nn.plan): a sweep step in each of its modes against einsum, with
and without the workspace and the bias; the segments' cover by dynamic programming against brute
force; the sweep's counted FLOPs.  No timing is asserted."""
from __future__ import annotations

import itertools

import pytest
import torch

from tnviz.nn import workspace
from tnviz.nn.plan import Segment, cheapest_segments, segment_cost, sweep, sweep_flops

F64 = torch.float64


class Context:
    """The smallest :class:`~tnviz.nn.plan.PlanContext`: a dict as the weight cache."""

    def __init__(self, ws=None, bias=None, cache=True):
        self.workspace, self.bias, self.bias_added = ws, bias, False
        self.store, self.cache = {}, cache

    def ordered_tensors(self):
        return []

    def cached(self, key, compute):
        if not self.cache:
            return compute()
        if key not in self.store:
            self.store[key] = compute()
        return self.store[key]


# (M, k, n, r) of each mode: gemm (no inputs left), left (batch of one), transposed (thin), batched
SHAPES = {"gemm": (6, 4, 5, 1), "left": (1, 4, 5, 3), "transposed": (6, 4, 5, 3), "batched": (6, 4, 5, 9)}


@pytest.mark.parametrize("mode", list(SHAPES))
@pytest.mark.parametrize("pooled", [False, True], ids=["plain", "workspace"])
def test_a_sweep_step_equals_einsum_in_every_mode(mode, pooled, monkeypatch):
    M, k, n, r = SHAPES[mode]
    s = Segment(0, 0, M, k, n, r, 0, "")
    assert s.mode == mode and s.flops == 2 * M * k * n * r
    gen = torch.Generator().manual_seed(len(mode))
    state = torch.randn(M, k * r, dtype=F64, generator=gen, requires_grad=True)
    mat = torch.randn(k, n, dtype=F64, generator=gen, requires_grad=True)
    bias = torch.randn(n * r, dtype=F64, generator=gen)
    want = torch.einsum("mkr,kn->mnr", state.reshape(M, k, r), mat).reshape(M, n * r)
    if pooled:
        monkeypatch.setattr(workspace, "POOL_MIN_ELEMENTS", 1)  # every state goes through the workspace
    ctx = Context(workspace.Workspace() if pooled else None, bias=bias)
    got = sweep(state, s, ctx, ("k",), lambda: mat, last=True).reshape(M, n * r)
    if ctx.bias_added:  # the pooled path, and a last step that is one GEMM (addmm), add the bias
        got = got - bias
    assert ctx.bias_added == (pooled or mode == "gemm")
    torch.testing.assert_close(got, want)
    g = torch.randn(M, n * r, dtype=F64, generator=gen)
    for a, b in zip(torch.autograd.grad((got * g).sum(), (state, mat)),
                    torch.autograd.grad((want * g).sum(), (state, mat))):
        torch.testing.assert_close(a, b)
    # the matrix (or its contiguous transpose) came from the cache under the step's key
    assert set(ctx.store) <= {("k",), ("k", "t")} and ctx.store


def test_the_cheapest_cover_equals_brute_force():
    """Every way of cutting 5 cores into runs, each run costed by a table: the dynamic program
    finds the cheapest, and a forbidden run (``None``) is never used."""
    gen = torch.Generator().manual_seed(3)
    n = 5
    cost = {(a, b): float(torch.rand(1, generator=gen)) for a in range(n) for b in range(a, n)}
    cost[(0, 4)] = 0.0  # the whole chain in one run would be cheapest, but it is forbidden

    def option(a, b):
        if (a, b) == (0, 4):
            return None
        return cost[(a, b)], Segment(a, b, 1, 1, 1, 1, 0, "")

    best, segments = cheapest_segments(n, option)
    covers = []
    for cuts in itertools.chain.from_iterable(itertools.combinations(range(1, n), c) for c in range(1, n)):
        bounds = [0, *cuts, n]
        covers.append(sum(cost[(a, b - 1)] for a, b in zip(bounds, bounds[1:])))
    assert best == pytest.approx(min(covers))
    assert [(s.first, s.last) for s in segments] != [(0, 4)]
    assert segments[0].first == 0 and segments[-1].last == n - 1
    assert all(a.last + 1 == b.first for a, b in zip(segments, segments[1:]))


def test_a_sweeps_counted_flops_forward_and_training_step():
    first = Segment(0, 0, 8, 4, 6, 5, 0, "")
    second = Segment(1, 2, 48, 10, 3, 1, 700, "")
    assert sweep_flops([first, second]) == first.flops + second.flops
    # per step a weight and a state gradient as costly as the step, no state gradient for the
    # step that reads the input; merges 3x their forward
    assert sweep_flops([first, second], step=True) == 3 * (first.flops + second.flops) - first.flops + 3 * 700


def test_segment_cost_charges_the_merge_only_where_it_is_not_cached():
    s = Segment(0, 2, 8, 4, 6, 5, 700, "")
    assert segment_cost(s, cached=False) > segment_cost(s, cached=True) + 700

"""The fast paths of issue 7: the ``ring`` (tensor ring) and ``modes`` (Tucker, CP) strategies against the dense reference
(forward and gradients, float64, odd sizes, batch 1), the measured autotune, ``tnviz.nn.measure``
and the Costs page's measured panel.  No timing is asserted anywhere."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tnviz
from tnviz.errors import TnvizError
from tnviz.nn import STRATEGIES, TNLinear
from tnviz.nn import measure as M
from tnviz.cost import training_step_flops
from tnviz.nn.strategies import choose, plan_modes, plan_ring, ring_cores

F64 = torch.float64


def random_tucker(rng: np.random.Generator) -> tnviz.TensorNetwork:
    n_in, n_out = rng.integers(1, 4), rng.integers(1, 4)
    ins = [int(v) for v in rng.integers(1, 7, n_in)]
    outs = [int(v) for v in rng.integers(1, 7, n_out)]
    ranks = [int(v) for v in rng.integers(1, 5, n_in + n_out)]
    return tnviz.tucker(ins, outs, ranks=ranks)


def random_cp(rng: np.random.Generator) -> tnviz.TensorNetwork:
    ins = [int(v) for v in rng.integers(1, 7, rng.integers(1, 4))]
    outs = [int(v) for v in rng.integers(1, 7, rng.integers(1, 4))]
    return tnviz.cp(ins, outs, rank=int(rng.integers(1, 6)))


def _templates() -> list[tnviz.TensorNetwork]:
    nets = []
    for name in tnviz.TEMPLATES:
        net = tnviz.build_template(name)
        if net.dense_params <= 1 << 20:
            nets.append(net)
    return nets


RNG = np.random.default_rng(7)
MODES_NETWORKS = {
    "tucker odd": tnviz.tucker([3, 5], [2, 7], ranks=[2, 3, 4, 2]),
    "tucker 3 legs": tnviz.tucker([3, 5, 2], [7, 2], ranks=2),
    "tucker one leg": tnviz.tucker([5], [3], ranks=2),
    "cp odd": tnviz.cp([3, 5], [2, 7], rank=4),
    "cp rank 1 size-1 leg": tnviz.cp([3, 1, 2], [7, 1], rank=1),
    **{f"random tucker {k}": random_tucker(RNG) for k in range(4)},
    **{f"random cp {k}": random_cp(RNG) for k in range(4)},
    **{f"template {net.name}": net for net in _templates() if STRATEGIES["modes"].supports(net)},
}


def reference(net: tnviz.TensorNetwork, seed: int):
    tensors = tnviz.random_tensors(net, seed=seed)
    leaves = {n: torch.tensor(a, requires_grad=True) for n, a in tensors.items()}
    return tensors, leaves


def test_modes_supports_tucker_and_cp_only():
    assert "modes" in STRATEGIES
    for name in ("tucker odd", "cp odd"):
        assert STRATEGIES["modes"].supports(MODES_NETWORKS[name])
    assert not STRATEGIES["modes"].supports(tnviz.mpo([2, 3], [3, 2], ranks=2))
    assert not STRATEGIES["modes"].supports(tnviz.tensor_ring([2, 2, 2], [2, 2, 2], ranks=2))
    templates = {net.name for net in _templates() if STRATEGIES["modes"].supports(net)}
    assert any("Tucker" in n for n in templates) and any("CP" in n for n in templates)


def check_against_dense(net: tnviz.TensorNetwork, strategy: str, seed: int) -> None:
    """Eval (cached, twice) and training (gradients of x and of every tensor) through ``strategy``
    against the float64 dense reference, at batch 1 and 5."""
    tensors, leaves = reference(net, seed=seed)
    bias = torch.linspace(-1, 1, net.out_features, dtype=F64)
    layer = TNLinear.from_tensors(net, tensors, bias, strategy=strategy)
    W = torch.from_numpy(tnviz.to_dense(net, tensors))
    for batch in (1, 5):
        x0 = torch.randn(batch, net.in_features, dtype=F64, generator=torch.Generator().manual_seed(batch))
        g = torch.randn(batch, net.out_features, dtype=F64, generator=torch.Generator().manual_seed(batch + 9))
        # eval mode under no_grad: the cached matrices
        layer.eval()
        with torch.no_grad():
            torch.testing.assert_close(layer(x0), x0 @ W.T + bias, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(layer(x0), x0 @ W.T + bias, rtol=1e-12, atol=1e-12)  # cache hit
        # training: gradients for x and every tensor against autograd through to_dense
        layer.train()
        layer.zero_grad()
        for leaf in leaves.values():
            leaf.grad = None
        x = x0.clone().requires_grad_(True)
        x_ref = x0.clone().requires_grad_(True)
        (layer(x) * g).sum().backward()
        ((x_ref @ tnviz.to_dense(net, leaves).T) * g).sum().backward()
        assert layer.last_strategy == strategy
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-12)
        for n, p in layer.named_network_tensors().items():
            torch.testing.assert_close(p.grad, leaves[n].grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(MODES_NETWORKS))
def test_modes_forward_and_gradients_equal_the_dense_reference(name):
    check_against_dense(MODES_NETWORKS[name], "modes", seed=11)


def test_modes_plan_is_a_sequence_of_gemms_with_the_counted_flops():
    net = tnviz.tucker([8, 8, 8, 8], [8, 8, 8, 8], ranks=4)
    plan = plan_modes(net, 64)
    assert plan.describe().split(" | ")[4] == "G"  # four input factors, the core, four output factors
    assert len(plan.steps) == 9
    # every step's flops: 2 * M * k * n * r, and they add up to the plan's
    assert plan.flops == sum(2 * s.seg.M * s.seg.k * s.seg.n * s.seg.r for s in plan.steps)
    cp = plan_modes(tnviz.cp([8, 8, 8, 8], [8, 8, 8, 8], rank=16), 64)
    assert [s.seg.mode for s in cp.steps] == ["gemm", "gemm"]
    assert cp.flops == 2 * 64 * 16 * (4096 + 4096)


def test_auto_uses_modes_for_large_tucker_and_cp_batches():
    assert choose(tnviz.tucker([8] * 4, [8] * 4, ranks=4), 1024) == "modes"
    assert choose(tnviz.cp([8] * 4, [8] * 4, rank=64), 1024) == "modes"


# ------------------------------------------------------------------ ring (tensor ring)
def random_ring(rng: np.random.Generator) -> tnviz.TensorNetwork:
    n = int(rng.integers(2, 5))
    ins = [int(v) for v in rng.integers(1, 6, n)]
    outs = [int(v) for v in rng.integers(1, 6, n)]
    return tnviz.tensor_ring(ins, outs, ranks=[int(v) for v in rng.integers(1, 5, n)])


RING_NETWORKS = {
    "ring 2 cores (two bonds between them)": tnviz.tensor_ring([3, 5], [2, 7], ranks=[2, 3]),
    "ring odd": tnviz.tensor_ring([3, 5, 2], [2, 7, 3], ranks=[2, 3, 4]),
    "ring bond 1 everywhere": tnviz.tensor_ring([3, 4, 2], [2, 3, 2], ranks=1),
    "ring size-1 legs": tnviz.tensor_ring([3, 1, 2, 2], [1, 3, 2, 2], ranks=[2, 1, 3, 2]),
    "ring unequal legs": tnviz.tensor_ring([4, 3, 5], [2, 3, 4], ranks=2, in_cores=[0, 0, 1], out_cores=[1, 2, 2]),
    **{f"random ring {k}": random_ring(RNG) for k in range(5)},
    **{f"template {net.name}": net for net in _templates() if STRATEGIES["ring"].supports(net)},
}


def test_ring_supports_tensor_rings_only():
    assert all(STRATEGIES["ring"].supports(net) for net in RING_NETWORKS.values())
    assert any(name.startswith("template") for name in RING_NETWORKS)
    for net in (tnviz.mpo([2, 3], [3, 2], ranks=2), tnviz.tucker([3, 4], [2, 2], ranks=2),
                tnviz.cp([3, 4], [2, 2], rank=2)):
        assert not STRATEGIES["ring"].supports(net)
    # legs out of row-major order around the ring cannot be swept without permutes
    ring = tnviz.tensor_ring([2, 3, 4], [3, 2, 2], ranks=2)
    swapped = tnviz.TensorNetwork.build(ring.tensors, ring.sizes, ("i2", "i1", "i3"), ring.outputs)
    assert ring_cores(swapped) is None
    # the sweep starts after the closing bond, wherever the builder put it
    cores = ring_cores(ring)
    assert [c.name for c in cores] == ["A", "B", "C"] and cores[0].left == cores[-1].right == "b3"


@pytest.mark.parametrize("name", list(RING_NETWORKS))
def test_ring_forward_and_gradients_equal_the_dense_reference(name):
    check_against_dense(RING_NETWORKS[name], "ring", seed=13)


@pytest.mark.parametrize("cuts", [(1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)])
def test_every_ring_segmentation_is_exact(cuts):
    """The planner picks one segmentation; each of them (incl. the transpose that middle segments
    with outputs need) must compute the same matrix."""
    from tnviz.nn.strategies import RingPlan, _ring_segment

    net = tnviz.tensor_ring([3, 2, 4, 2], [2, 3, 2, 3], ranks=[2, 3, 2, 3])
    tensors, _ = reference(net, seed=4)
    layer = TNLinear.from_tensors(net, tensors).eval()
    cores = ring_cores(net)
    bounds = [0, *cuts, len(cores)]
    batch = 5
    plan = RingPlan(net, batch, cores, tuple(_ring_segment(net, cores, a, b - 1, batch)
                                             for a, b in zip(bounds, bounds[1:])), True)
    assert plan.flops == sum(2 * s.M * s.k * s.n * s.r for s in plan.segments)
    x = torch.randn(batch, net.in_features, dtype=F64)
    W = torch.from_numpy(tnviz.to_dense(net, tensors))
    with torch.no_grad():
        torch.testing.assert_close(plan(x, layer), x @ W.T, rtol=1e-12, atol=1e-12)


def test_ring_plan_has_two_segments_at_least_and_auto_uses_it_where_it_pays():
    net = tnviz.tensor_ring([8, 8, 8, 8], [8, 8, 8, 8], ranks=4)
    plan = plan_ring(net, 64)
    assert len(plan.segments) >= 2  # one segment would be the rebuilt weight
    assert plan.describe().startswith("cut at b4: ")
    # the ring bond multiplies the work: R x the MPO sweep with the same bonds and segments
    assert plan.flops < 2 * 64 * net.in_features * net.out_features
    assert choose(net, 1) == "ring" and choose(net, 64) == "ring"



HALVES_NETWORKS = {**RING_NETWORKS, "mpo odd": tnviz.mpo([2, 3, 5], [3, 2, 3], ranks=[4, 5]),
                   "mpo unequal legs": tnviz.mpo([3, 5], [2, 3, 2], ranks=3),
                   "mpo 5 cores": tnviz.mpo([2, 3, 2, 1, 2], [3, 1, 2, 2, 2], ranks=[2, 3, 4, 2]),
                   **{f"template {net.name}": net for net in _templates() if STRATEGIES["chain"].supports(net)}}


@pytest.mark.parametrize("loop", [True, False], ids=["loop product", "one GEMM"])
@pytest.mark.parametrize("name", list(HALVES_NETWORKS))
def test_two_halves_rebuild_equals_the_dense_matrix_and_its_gradients(name, loop, monkeypatch):
    """``rebuilt`` rebuilds chains and rings as two merged halves: on CPU by a batched GEMM per
    left output written in W's layout (``loop``), elsewhere by one GEMM and a blocked permute or
    a GEMM per output pair in place.  The matrix and the gradients (under no_grad too) equal
    opt_einsum's contraction of the whole network."""
    from tnviz.nn import strategies
    from tnviz.nn.strategies import dense_weight, rebuild_expression, rebuild_halves

    if not loop:
        monkeypatch.setattr(strategies, "halves_product_ok", lambda *a: False)
    net = HALVES_NETWORKS[name]
    assert rebuild_halves(net) is not None
    tensors, leaves = reference(net, seed=21)
    ordered = [leaves[n] for n in net.tensor_names]
    W = dense_weight(net, ordered)
    assert (W.grad_fn is not None and "HalvesProduct" in type(W.grad_fn).__name__) == loop
    torch.testing.assert_close(W, torch.from_numpy(tnviz.to_dense(net, tensors)), rtol=1e-12, atol=1e-12)
    G = torch.randn(W.shape, dtype=F64, generator=torch.Generator().manual_seed(2))
    grads = torch.autograd.grad(W, ordered, G)
    reference_w = rebuild_expression(net)(*ordered, backend="torch").reshape(W.shape)
    for got, want in zip(grads, torch.autograd.grad(reference_w, ordered, G)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # the eval cache's build
        torch.testing.assert_close(dense_weight(net, ordered), reference_w.detach(), rtol=1e-12, atol=1e-12)
    assert rebuild_halves(tnviz.tucker([3, 4], [2, 2], ranks=2)) is None
    assert rebuild_halves(tnviz.mpo([7], [5], ranks=[])) is None


def test_the_halves_checks_cover_both_rebuild_layouts():
    """Few bonds between the halves: a GEMM per output pair written in place; many: one GEMM and
    a permute.  The networks above take both."""
    from tnviz.nn.strategies import rebuild_halves

    small_k = [(h.K * (h.I + h.J) < h.I * h.J) for h in map(rebuild_halves, HALVES_NETWORKS.values())]
    assert any(small_k) and not all(small_k)


@pytest.mark.parametrize("dims", [(3, 2, 4, 5, 1), (1, 3, 1, 2, 2), (4, 4, 6, 2, 3)])
def test_the_halves_product_passes_gradcheck_and_gradgradcheck(dims):
    from tnviz.nn.workspace import Workspace, halves_product

    O, I, K, P, J = dims
    gen = torch.Generator().manual_seed(sum(dims))
    left = torch.randn(O, I, K, dtype=F64, generator=gen, requires_grad=True)
    right = torch.randn(K, P, J, dtype=F64, generator=gen, requires_grad=True)
    want = torch.einsum("oik,kpj->opij", left, right).reshape(O * P, I * J)
    for ws in (None, Workspace()):
        torch.testing.assert_close(halves_product(left, right, O, I, K, P, J, ws), want)
        fn = lambda a, b: halves_product(a, b, O, I, K, P, J, ws)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (left, right))
        assert torch.autograd.gradgradcheck(fn, (left, right))
    # only one half needing a gradient
    grad = torch.autograd.grad(halves_product(left, right.detach(), O, I, K, P, J).sum(), left)[0]
    torch.testing.assert_close(grad, torch.autograd.grad(want.sum(), left, retain_graph=True)[0])


def test_the_halves_product_runs_a_vmapped_backward():
    """``is_grads_batched`` and ``jacobian(vectorize=True)`` run the backward under legacy vmap
    (no rules for ``out=`` or in-place ops): the rebuilt layer's Jacobian equals the reference."""
    from tnviz.nn.workspace import halves_product

    O, I, K, P, J = 2, 3, 2, 3, 2
    gen = torch.Generator().manual_seed(5)
    left = torch.randn(O, I, K, dtype=F64, generator=gen, requires_grad=True)
    right = torch.randn(K, P, J, dtype=F64, generator=gen, requires_grad=True)
    fn = lambda a, b: halves_product(a, b, O, I, K, P, J)  # noqa: E731
    ref = lambda a, b: torch.einsum("oik,kpj->opij", a, b).reshape(O * P, I * J)  # noqa: E731
    for got, want in zip(torch.autograd.functional.jacobian(fn, (left, right), vectorize=True),
                         torch.autograd.functional.jacobian(ref, (left, right))):
        torch.testing.assert_close(got, want)
    net = tnviz.tensor_ring([2, 3, 2], [3, 2, 2], ranks=2)
    layer = TNLinear(net, strategy="rebuilt", dtype=F64)
    x = torch.randn(2, net.in_features, dtype=F64, generator=gen)
    y = layer(x)
    eye = torch.eye(y.numel(), dtype=F64).reshape(-1, *y.shape)
    params = list(layer.parameters())
    batched = torch.autograd.grad(y, params, eye, is_grads_batched=True, retain_graph=True)
    for i, p in enumerate(params):
        one_by_one = torch.stack([torch.autograd.grad(y, p, e, retain_graph=True)[0] for e in eye])
        torch.testing.assert_close(batched[i], one_by_one)


def test_the_halves_product_pools_w_in_training_only_and_falls_back_where_it_must():
    from tnviz.nn import workspace as W

    left = torch.randn(64, 64, 16, requires_grad=True)  # W: 64*64*64*64 elements, above the pool's floor
    right = torch.randn(16, 64, 64, requires_grad=True)
    ws = W.Workspace()
    w = W.halves_product(left, right, 64, 64, 16, 64, 64, ws)
    assert ws.nbytes == w.numel() * 4  # rebuilt every training step: from the workspace
    del w
    ws2 = W.Workspace()
    with torch.no_grad():
        W.halves_product(left, right, 64, 64, 16, 64, 64, ws2)
    assert ws2.nbytes == 0  # the eval cache keeps its weight: not the pool's
    assert W.halves_product_ok(left, 64)
    assert not W.halves_product_ok(left, W.HALVES_MAX_LOOP + 1)
    assert not W.halves_product_ok(left.to(torch.complex64), 64)
    with torch.autograd.forward_ad.dual_level():
        assert not W.halves_product_ok(left, 64)


# ------------------------------------------------------------------ measured choice
def test_autotune_picks_a_supported_strategy_once_and_stays_exact():
    M.clear_autotune()
    net = tnviz.mpo([4, 3, 5], [2, 3, 4], ranks=3)
    tensors, _ = reference(net, seed=2)
    layer = TNLinear.from_tensors(net, tensors, autotune=True).eval()
    x = torch.randn(6, net.in_features, dtype=F64)
    with torch.no_grad():
        y = layer(x)
    W = torch.from_numpy(tnviz.to_dense(net, tensors))
    torch.testing.assert_close(y, x @ W.T, rtol=1e-12, atol=1e-12)
    keys = [k for k in M._TUNED if k[0] == net]
    assert len(keys) == 1 and keys[0][1] == M.batch_bucket(6) == 8
    assert layer.last_strategy == M._TUNED[keys[0]]
    assert STRATEGIES[layer.last_strategy].supports(net)
    # the same bucket reuses the choice (no new entry); another bucket measures again
    with torch.no_grad():
        layer(x[:5])
        layer(torch.randn(40, net.in_features, dtype=F64))
    assert len([k for k in M._TUNED if k[0] == net]) == 2
    M.clear_autotune()
    assert not M._TUNED


def test_autotune_in_training_leaves_grads_alone_and_matches_dense_gradients():
    M.clear_autotune()
    net = tnviz.tucker([3, 4], [5, 2], ranks=2)
    tensors, leaves = reference(net, seed=5)
    layer = TNLinear.from_tensors(net, tensors, autotune=True)
    assert all(p.grad is None for p in layer.parameters())
    x = torch.randn(3, net.in_features, dtype=F64)
    g = torch.randn(3, net.out_features, dtype=F64)
    (layer(x) * g).sum().backward()
    ((x @ tnviz.to_dense(net, leaves).T) * g).sum().backward()
    for n, p in layer.named_network_tensors().items():
        torch.testing.assert_close(p.grad, leaves[n].grad, rtol=1e-10, atol=1e-12)
    assert any(k[0] == net and k[5] for k in M._TUNED)  # tuned with gradients on
    M.clear_autotune()


def test_default_autotunes_only_large_layers_without_a_fast_path_in_inference():
    from tnviz.nn.linear import AUTOTUNE_MIN_ELEMENTS

    M.clear_autotune()
    generic = tnviz.from_einsum("xab,ayc,bczd,dw->xyzw", {"x": 32, "y": 32, "z": 32, "w": 32, "a": 2, "b": 2,
                                                          "c": 2, "d": 2}, inputs="xz")
    assert generic.in_features * generic.out_features >= AUTOTUNE_MIN_ELEMENTS
    chain = tnviz.mpo([4, 8, 32], [4, 8, 32], ranks=2)
    ring = tnviz.tensor_ring([4, 8, 32], [4, 8, 32], ranks=2)
    small_generic = tnviz.from_einsum("xab,ayc,bczd,dw->xyzw", {"x": 3, "y": 2, "z": 5, "w": 3, "a": 2, "b": 3,
                                                                "c": 2, "d": 4}, inputs="xz")
    x = torch.randn(2, 1024)
    for net in (generic, chain, ring, small_generic):
        layer = TNLinear(net)
        assert layer.autotune is None
        layer.train()
        layer(x[:, :net.in_features]).sum().backward()  # training: never measured by default
        layer.eval()
        with torch.no_grad():
            y = layer(x[:, :net.in_features])
        torch.testing.assert_close(y, x[:, :net.in_features] @ layer.to_dense().T + layer.bias, rtol=1e-4, atol=1e-5)
    tuned = {k[0] for k in M._TUNED}
    assert tuned == {generic, ring}  # the MPO has 'chain'; the small network is below the threshold
    off = TNLinear(generic, autotune=False).eval()
    M.clear_autotune()
    with torch.no_grad():
        off(x)
    assert not M._TUNED


def test_batch_bucket():
    assert [M.batch_bucket(b) for b in (1, 2, 3, 64, 65, 1000)] == [1, 2, 4, 64, 128, 1024]


# ------------------------------------------------------------------ measure
@pytest.mark.parametrize("mode", M.MODES)
def test_measure_times_every_supported_strategy_against_dense(mode):
    net = tnviz.cp([4, 3], [2, 5], rank=3)
    rows = M.measure(net, batch=5, repeats=1, mode=mode, dtype=F64)
    methods = [r["method"] for r in rows]
    assert methods[:2] == ["nn.Linear", "TNLinear auto"]
    assert set(methods[2:]) == {f"TNLinear {s}" for s, st in STRATEGIES.items() if st.supports(net)}
    for r in rows:
        assert r["ms"] > 0 and math.isfinite(r["speedup_vs_dense"])
    dense = rows[0]
    step = mode == "step"  # a training step: nn.Linear's forward and weight gradient (no input gradient)
    assert dense["flops"] == (2 if step else 1) * 2 * 5 * 12 * 10 and dense["speedup_vs_dense"] == 1.0
    auto = rows[1]
    assert auto["note"] == f"chose {auto['strategy']}" and auto["strategy"] in STRATEGIES
    modes = next(r for r in rows if r["method"] == "TNLinear modes")
    plan = plan_modes(net, 5, mode == "eval")
    if step:  # per step a weight and a state gradient as costly as the step, but no input gradient;
        # the Khatri-Rao merges (forward, and a gradient per factor pair) three times over
        first, second = plan.steps
        assert modes["flops"] == plan.flops + second.seg.flops + plan.flops + 3 * (first.seg.merge_flops
                                                                                  + second.seg.merge_flops)
        by_method = {r["method"]: r for r in rows}
        assert by_method["TNLinear factorized"]["flops"] == training_step_flops(net, 5, input_grad=False)[0]
        c = tnviz.cost(net, batch=5)
        assert by_method["TNLinear rebuilt"]["flops"] == 2 * c.dense_flops + 3 * c.reconstruct_flops
    else:
        assert modes["flops"] == plan.flops
    assert all(r["flops_drop"] == dense["flops"] / r["flops"] for r in rows[1:])


STEP_FLOP_CASES = {
    "mpo chain": (tnviz.mpo([2, 3, 5], [3, 2, 3], ranks=[4, 5]), "chain", 7),
    "mpo 2 cores chain": (tnviz.mpo([4, 4], [4, 4], ranks=3), "chain", 5),
    "ring": (tnviz.tensor_ring([2, 3, 2], [3, 2, 2], ranks=2), "ring", 6),
    "tucker modes": (tnviz.tucker([3, 5], [2, 7], ranks=[2, 3, 4, 2]), "modes", 5),
    "mpo factorized": (tnviz.mpo([2, 3, 5], [3, 2, 3], ranks=[4, 5]), "factorized", 7),
    "mpo rebuilt": (tnviz.mpo([2, 3, 5], [3, 2, 3], ranks=[4, 5]), "rebuilt", 7),
    "ring rebuilt": (tnviz.tensor_ring([2, 3, 2], [3, 2, 2], ranks=2), "rebuilt", 6),
}


@pytest.mark.parametrize("case", list(STEP_FLOP_CASES))
def test_step_flops_equal_the_flops_a_training_step_runs(case, monkeypatch):
    """``strategy_flops(step=True)`` against torch's own FLOP counter over a real forward and
    backward (input without gradient).  The counter does not see in-place ``baddbmm_``, so the
    rebuild runs its one-GEMM layout here (the same FLOPs as the CPU loop)."""
    from torch.utils.flop_counter import FlopCounterMode

    from tnviz.nn import strategies

    monkeypatch.setattr(strategies, "halves_product_ok", lambda *a: False)
    net, strategy, batch = STEP_FLOP_CASES[case]
    layer = TNLinear(net, strategy=strategy, bias=False, dtype=F64)
    x = torch.randn(batch, net.in_features, dtype=F64)
    with FlopCounterMode(display=False) as counter:
        layer(x).backward(torch.randn(batch, net.out_features, dtype=F64))
    assert counter.get_total_flops() == M.strategy_flops(net, strategy, batch, cached=False, step=True)
    with FlopCounterMode(display=False) as counter:
        torch.nn.Linear(net.in_features, net.out_features, bias=False, dtype=F64)(x).backward(
            torch.randn(batch, net.out_features, dtype=F64))
    assert counter.get_total_flops() == 2 * 2 * batch * net.in_features * net.out_features  # nn.Linear's 2 matmuls


def test_fused_step_flops_count_the_kernel_and_its_backwards_gemms():
    """The fused kernel counts its own forward; its backward (plain GEMMs, run here on CPU with the
    saved tensors) recomputes U and takes the gradients of both parts."""
    from torch.utils.flop_counter import FlopCounterMode

    from tnviz.nn import fused

    for dims, rank, batch in [(([4, 4, 4], [4, 4, 4]), 3, 7), (([4, 4], [16, 16]), 8, 6)]:
        net = tnviz.mpo(*dims, ranks=rank)
        plan = fused.plan_fused(net, batch, False)
        tensors = TNLinear(net, bias=False, dtype=F64).ordered_tensors()
        left, right = plan.halves.segments
        a_t = plan.halves._merge(left, tensors).reshape(plan.IA, plan.OA, plan.R).permute(2, 1, 0).contiguous()
        b = plan.halves._merge(right, tensors)

        class Ctx:
            saved_tensors = (torch.randn(batch, net.in_features, dtype=F64), a_t.detach(), b.detach())
            needs_input_grad = (False, True, True)

        with FlopCounterMode(display=False) as counter:
            fused.FusedMPO.backward(Ctx(), torch.randn(batch, net.out_features, dtype=F64))
        merges = left.merge_flops + right.merge_flops
        assert M.strategy_flops(net, "fused", batch, cached=False, step=True) == (
            plan.flops + counter.get_total_flops() + 3 * merges)


def test_measure_refuses_bad_arguments():
    net = tnviz.mpo([2, 2], [2, 2], ranks=2)
    with pytest.raises(TnvizError, match="measure mode must be one of"):
        M.measure(net, 4, mode="fast")
    with pytest.raises(TnvizError, match="at least 1"):
        M.measure(net, 0)


def test_measure_skips_strategies_over_the_budget():
    net = tnviz.mpo([4, 4], [4, 4], ranks=2)
    rows = M.measure(net, batch=2, repeats=1, budget=200)
    skipped = [r for r in rows if r["note"].startswith("skipped")]
    assert any(r["method"] == "TNLinear rebuilt" for r in skipped)  # 256 elements > 200


def test_costs_page_measures_on_click():
    from streamlit.testing.v1 import AppTest

    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    page = next(p for p in (root / "app/views/costs.py", root / "app/pages/costs.py") if p.exists())
    at = AppTest.from_file(str(page), default_timeout=120)
    at.run()
    assert not at.exception
    at.number_input(key="costs.batch").set_value(4).run()
    assert any("Press **Measure**" in c.value for c in at.caption)
    next(b for b in at.button if b.key == "costs.measure.run").click().run()
    assert not at.exception
    table = at.dataframe[-1].value
    assert list(table["method"])[:2] == ["nn.Linear", "TNLinear auto"]
    assert any("`auto` chose" in c.value for c in at.caption)
    assert not any("For a training step" in c.value for c in at.caption)
    # a training step: counted FLOPs of forward and backward, said so under the table
    at.radio(key="costs.measure.mode").set_value("training step (forward + backward)").run()
    assert any("Press **Measure**" in c.value for c in at.caption)  # another measurement: not shown stale
    next(b for b in at.button if b.key == "costs.measure.run").click().run()
    assert not at.exception
    step = at.dataframe[-1].value
    dense_step = next(v for m, v in zip(step["method"], step["counted FLOPs"]) if m == "nn.Linear")
    dense_eval = next(v for m, v in zip(table["method"], table["counted FLOPs"]) if m == "nn.Linear")
    assert dense_step != dense_eval
    assert any("For a training step" in c.value and "2 matmuls" in c.value for c in at.caption)


def test_a_device_kernel_is_chosen_by_measurement_only(monkeypatch):
    """``fused`` never comes from the cost model; where it can run, the default layer measures it
    against the chain (here faked as available on CPU: its plan then runs the chain itself)."""
    from tnviz.nn.fused import FUSED
    from tnviz.nn.strategies import estimates, measured_only

    net = tnviz.mpo([4, 3], [2, 5], ranks=3)
    assert measured_only("fused") and "fused" not in estimates(net, 8)
    M.clear_autotune()
    plain = TNLinear(net).eval()
    with torch.no_grad():
        plain(torch.randn(8, net.in_features))
    assert not M._TUNED  # small MPO, no kernel: the cost model decides
    if not FUSED.supports(net):
        pytest.skip("triton not importable: the fused strategy supports nothing")
    monkeypatch.setattr(FUSED, "available", lambda device: True)
    layer = TNLinear(net).eval()
    x = torch.randn(8, net.in_features)
    with torch.no_grad():
        y = layer(x)
    torch.testing.assert_close(y, x @ layer.to_dense().T + layer.bias)
    (key,) = [k for k in M._TUNED_TIMES if k[0] == net]
    assert {"chain", "fused"} <= set(M._TUNED_TIMES[key])
    assert layer._measured_by_default == {("cpu", __import__("os").environ.get("TRITON_INTERPRET", "")): True}
    M.clear_autotune()

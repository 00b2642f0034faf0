"""The pooled sweep step (``tnviz.nn.workspace``): reused CPU buffers for large intermediates.

With the pooling threshold lowered to one element every step of every sweep goes through the
pooled path, so the dense-reference checks of the fast strategies run on it too; then the ways a
reused buffer could go wrong: two forwards before one backward, ``retain_graph``, double
backward, state held by the caller, copies of a layer, stale shapes.  No timing is asserted.
"""
from __future__ import annotations

import pickle

import pytest
import torch

import tnviz
from tnviz.nn import TNLinear
from tnviz.nn import workspace as W
from tnviz.nn.workspace import Workspace, pooled_sweep

from tests.nn_cases import MODES_NETWORKS, RING_NETWORKS, check_against_dense

F64 = torch.float64
BATCH = 256  # the layer's output, BATCH x 4096, is at the default pooling threshold

CHAIN_NETWORKS = {
    "mpo odd": tnviz.mpo([2, 3, 5], [3, 2, 3], ranks=[4, 5]),
    "mpo unequal legs": tnviz.mpo([3, 5], [2, 3, 2], ranks=3),
    "mpo one core": tnviz.mpo([7], [5], ranks=[]),
    "mpo 4 cores": tnviz.mpo([3, 2, 4, 2], [2, 3, 2, 3], ranks=[3, 4, 2]),
    "mpo long trailing inputs": tnviz.mpo([3, 8, 8, 3], [3, 8, 8, 3], ranks=3),  # a batched step at batch 5
}


@pytest.fixture
def pool_everything(monkeypatch):
    """Every step pooled, and a record of the step modes that ran through the pool."""
    monkeypatch.setattr(W, "POOL_MIN_ELEMENTS", 1)
    seen = []
    original = W._Step.forward

    def forward(ctx, state, w, bias, geometry, ws):
        seen.append(geometry[-1])
        return original(ctx, state, w, bias, geometry, ws)

    monkeypatch.setattr(W._Step, "forward", staticmethod(forward))
    return seen


@pytest.mark.parametrize("name", list(CHAIN_NETWORKS))
def test_pooled_chain_equals_the_dense_reference(name, pool_everything):
    check_against_dense(CHAIN_NETWORKS[name], "chain", seed=5)
    assert pool_everything


@pytest.mark.parametrize("name", list(RING_NETWORKS))
def test_pooled_ring_equals_the_dense_reference(name, pool_everything):
    check_against_dense(RING_NETWORKS[name], "ring", seed=13)


@pytest.mark.parametrize("name", list(MODES_NETWORKS))
def test_pooled_modes_equal_the_dense_reference(name, pool_everything):
    check_against_dense(MODES_NETWORKS[name], "modes", seed=11)


def test_the_chain_reference_checks_cover_every_step_mode(pool_everything):
    for net in CHAIN_NETWORKS.values():
        check_against_dense(net, "chain", seed=1)
    assert set(pool_everything) == {"gemm", "left", "batched", "transposed"}


@pytest.mark.parametrize("mode,M,k,n,r", [
    ("gemm", 6, 5, 4, 1), ("left", 1, 5, 4, 3), ("batched", 4, 3, 5, 6), ("transposed", 4, 3, 5, 2),
])
def test_each_step_mode_passes_gradcheck_and_gradgradcheck(mode, M, k, n, r):
    """gradcheck's repeated calls also test that a buffer held by an earlier result is never
    handed out again."""
    ws = Workspace()
    gen = torch.Generator().manual_seed(3)
    state = torch.randn(M, k, r, dtype=F64, generator=gen, requires_grad=True)
    transposed = mode in ("left", "batched")  # these modes take the (n, k) transpose
    w = torch.randn(*((n, k) if transposed else (k, n)), dtype=F64, generator=gen, requires_grad=True)
    fn = lambda s, m: pooled_sweep(s, m, M, k, n, r, mode, ws)  # noqa: E731
    torch.testing.assert_close(fn(state, w), torch.einsum("mkr,kn->mnr", state, w.t() if transposed else w))
    assert torch.autograd.gradcheck(fn, (state, w))
    assert torch.autograd.gradgradcheck(fn, (state, w))


@pytest.mark.parametrize("mode,M,k,n,r", [
    ("gemm", 6, 5, 4, 1), ("left", 1, 5, 4, 3), ("batched", 4, 3, 5, 6), ("transposed", 4, 3, 5, 2),
])
def test_each_step_mode_runs_a_vmapped_backward(mode, M, k, n, r):
    """``autograd.grad(..., is_grads_batched=True)`` and ``jacobian(..., vectorize=True)`` run the
    backward under legacy vmap, which has no rule for ``out=`` or in-place ops."""
    ws = Workspace()
    gen = torch.Generator().manual_seed(4)
    state = torch.randn(M, k, r, dtype=F64, generator=gen, requires_grad=True)
    transposed = mode in ("left", "batched")
    w = torch.randn(*((n, k) if transposed else (k, n)), dtype=F64, generator=gen, requires_grad=True)
    out = pooled_sweep(state, w, M, k, n, r, mode, ws)
    ref = torch.einsum("mkr,kn->mnr", state, w.t() if transposed else w)
    eye = torch.eye(out.numel(), dtype=F64).reshape(-1, *out.shape)
    got = torch.autograd.grad(out, (state, w), eye, is_grads_batched=True)
    want = torch.autograd.grad(ref, (state, w), eye, is_grads_batched=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    jac = torch.autograd.functional.jacobian(lambda s, m: pooled_sweep(s, m, M, k, n, r, mode, ws), (state, w),
                                             vectorize=True)
    jac_ref = torch.autograd.functional.jacobian(
        lambda s, m: torch.einsum("mkr,kn->mnr", s, m.t() if transposed else m), (state, w))
    for a, b in zip(jac, jac_ref):
        torch.testing.assert_close(a, b)


def test_a_non_contiguous_state_gets_its_gradient_in_its_own_shape():
    ws = Workspace()
    base = torch.randn(3, 4, 2, 5, dtype=F64, requires_grad=True)
    state = base.transpose(1, 2)  # (3, 2, 4, 5): M=3, k=8, r=5 read in this logical order
    mat = torch.randn(8, 6, dtype=F64, requires_grad=True)
    out = pooled_sweep(state, mat, 3, 8, 6, 5, "transposed", ws)
    ref = torch.einsum("mkr,kn->mnr", state.reshape(3, 8, 5), mat)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(out, (base, mat), g)
    want = torch.autograd.grad(ref, (base, mat), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def _big_layer(strategy: str = "chain") -> TNLinear:
    """A 4096x4096 MPO at bond 4: at batch ``BATCH`` its states and its output are above the
    default pooling threshold."""
    torch.manual_seed(0)
    return TNLinear(tnviz.mpo([8, 8, 8, 8], [8, 8, 8, 8], ranks=4), strategy=strategy)


def _grads(layer: TNLinear) -> list[torch.Tensor]:
    return [p.grad.clone() for p in layer.parameters()]


def test_default_threshold_pools_large_cpu_states_and_reuses_them():
    W.release()
    layer = _big_layer()
    x = torch.randn(BATCH, 4096)
    for _ in range(3):
        layer.zero_grad()
        layer(x).sum().backward()
    held = W.shared().nbytes
    assert held > 0, "batch 64 through a 4096x4096 MPO makes states above the pooling threshold"
    layer.zero_grad()
    layer(x).sum().backward()
    assert W.shared().nbytes == held, "the same shapes every step reuse the same buffers"
    # results the caller keeps are never written again; dropped ones are reused
    y1 = layer(x).detach()
    kept = y1.clone()
    y2 = layer(x + 1).detach()
    assert torch.equal(y1, kept) and not torch.equal(y1, y2)
    ptr = y2.data_ptr()
    del y2
    assert layer(x + 2).data_ptr() == ptr


def test_the_output_may_be_modified_in_place_under_autograd():
    """A pooled output is no view: an in-place ReLU after the layer trains like on a plain one."""
    layer, ref = _big_layer(), _big_layer()
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(BATCH, 4096)
    torch.nn.functional.relu(layer(x), inplace=True).square().sum().backward()
    W.POOL_MIN_ELEMENTS, saved = 1 << 60, W.POOL_MIN_ELEMENTS
    try:
        torch.nn.functional.relu(ref(x)).square().sum().backward()
    finally:
        W.POOL_MIN_ELEMENTS = saved
    for p, q in zip(layer.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-4)


def test_a_caller_keeping_every_result_gets_plain_tensors_past_the_cap():
    W.release()
    layer = _big_layer().eval()
    with torch.no_grad():
        kept = [layer(torch.randn(BATCH, 4096)) for _ in range(W.MAX_PER_SIZE + 3)]
    assert len({y.data_ptr() for y in kept}) == len(kept)
    assert all(len(bufs) <= W.MAX_PER_SIZE for bufs in W.shared()._buffers.values())


def test_two_forwards_before_one_backward_keep_their_own_states():
    layer, ref = _big_layer(), _big_layer()
    ref.load_state_dict(layer.state_dict())
    x1, x2 = torch.randn(BATCH, 4096), torch.randn(BATCH, 4096)
    (layer(x1).square().sum() + layer(x2).square().sum()).backward()
    with torch.no_grad():
        ref_w = ref.to_dense()
    ref_w.requires_grad_(True)
    for x in (x1, x2):
        (x @ ref_w.T + ref.bias).square().sum().backward()
    # the dense reference's weight gradient, pulled back to the cores, equals the layer's
    torch.autograd.backward(ref.to_dense(), ref_w.grad)
    for (n, p), q in zip(layer.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5 * float(q.grad.abs().max()))  # float32 sums


def test_retain_graph_gives_the_same_gradient_twice_and_later_steps_do_not_disturb_it():
    layer = _big_layer()
    x = torch.randn(BATCH, 4096)
    loss = layer(x).square().sum()
    loss.backward(retain_graph=True)
    first = _grads(layer)
    layer(torch.randn(BATCH, 4096)).sum()  # another forward while the first graph is still alive
    layer.zero_grad()
    loss.backward()
    for a, b in zip(first, _grads(layer)):
        torch.testing.assert_close(a, b)


def test_double_backward_through_a_pooled_layer():
    layer = _big_layer()
    x = torch.randn(BATCH, 4096, requires_grad=True)
    (gx,) = torch.autograd.grad(layer(x).square().sum(), x, create_graph=True)
    gx.square().sum().backward()
    plain = _big_layer()
    plain.load_state_dict(layer.state_dict())
    x2 = x.detach().clone().requires_grad_(True)
    w = plain.to_dense()
    (gx2,) = torch.autograd.grad((x2 @ w.T + plain.bias).square().sum(), x2, create_graph=True)
    gx2.square().sum().backward()
    torch.testing.assert_close(gx, gx2, rtol=1e-4, atol=1e-3)
    for p, q in zip(layer.parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-3)


def test_layers_share_one_workspace_and_leaving_training_releases_it():
    W.release()
    layers = [_big_layer() for _ in range(4)]
    x = torch.randn(BATCH, 4096)
    held = []
    with torch.no_grad():
        for depth in (2, 4):
            y = x
            for layer in layers[:depth]:
                y = layer(y)  # one layer's intermediates, its input and its output at a time
            held.append(W.shared().nbytes)
    assert 0 < held[0] == held[1], "the buffers held do not grow with the number of layers"
    assert len(pickle.dumps(layers[0])) < 200_000, "a layer pickles its parameters, no scratch memory"
    layers[0](torch.randn(BATCH, 4096)).sum().backward()
    layers[0].eval()  # leaving training lets the buffers go
    assert W.shared().nbytes == 0


def test_threads_sharing_the_workspace_get_their_own_buffers():
    import threading

    layer = _big_layer().eval()
    xs = [torch.randn(BATCH, 4096, generator=torch.Generator().manual_seed(k)) for k in range(4)]
    with torch.no_grad():
        want = [layer(x) for x in xs]
    got = [None] * len(xs)

    def run(k):
        with torch.no_grad():
            for _ in range(5):
                got[k] = layer(xs[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_the_workspace_stays_within_its_byte_budget(monkeypatch):
    ws = Workspace()
    like = torch.empty(0)
    size = W.POOL_MIN_ELEMENTS  # elements
    monkeypatch.setattr(W, "MAX_BYTES", 3 * size * 4)
    for k in range(1, 10):  # nine sizes, dropped right away: least recently used go first
        ws.take((k, size), like)
        assert ws.nbytes <= W.MAX_BYTES
    held = [ws.take((1, size), like) for _ in range(3)]  # three held fill the budget
    extra = ws.take((1, size), like)  # a fourth is a plain tensor, not kept
    assert ws.nbytes == W.MAX_BYTES and all(extra.data_ptr() != h.data_ptr() for h in held)
    # a buffer still held is never handed out twice
    assert len({h.data_ptr() for h in held}) == 3


def test_a_caller_holding_only_the_storage_keeps_its_data():
    layer = _big_layer()
    x = torch.randn(BATCH, 4096)
    with torch.no_grad():
        y = layer(x)
        storage, want = y.untyped_storage(), y.clone()
        del y
        layer(x + 5)
    assert torch.equal(torch.empty(0).set_(storage, 0, want.shape), want)


def test_a_result_moved_to_shared_memory_is_never_reused():
    """torch.multiprocessing shares the storage with another process, which may still read it."""
    W.release()
    layer = _big_layer()
    x = torch.randn(BATCH, 4096)
    with torch.no_grad():
        y = layer(x)
        y.share_memory_()
        del y
        layer(x)
    assert not any(b.storage.is_shared() for bufs in W.shared()._buffers.values() for b in bufs)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_transforms_the_pooled_step_has_no_rules_for_take_the_plain_path():
    """torch.func, forward-mode AD, jit.trace and complex dtypes all work on a layer whose states
    are above the pooling threshold, exactly as without the workspace."""
    from torch.autograd import forward_ad

    layer = _big_layer()
    x, t = torch.randn(BATCH, 4096), torch.randn(BATCH, 4096)
    params = dict(layer.named_parameters())
    grads = torch.func.grad(lambda p: torch.func.functional_call(layer, p, (x,)).square().sum())(params)
    assert set(grads) == set(params)
    _, tangent = torch.func.jvp(layer, (x,), (t,))
    with forward_ad.dual_level():
        dual_tangent = forward_ad.unpack_dual(layer(forward_ad.make_dual(x, t))).tangent
    want = t @ layer.to_dense().detach().T
    torch.testing.assert_close(tangent, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dual_tangent, want, rtol=1e-4, atol=1e-4)
    traced = torch.jit.trace(layer.eval(), x, check_trace=False)
    torch.testing.assert_close(traced(x), layer(x))
    assert not W.worth_pooling(torch.zeros(1 << 20, dtype=torch.complex64), 0)


@pytest.mark.parametrize("case", ["small mpo", "pooled sweep", "halves product"])
def test_torch_compile_gives_eager_outputs_and_every_gradient(case):
    """Compiled (AOTAutograd traces the custom steps), the in-place bias, the pooled steps and the
    halves product once lost the bias's gradient; under torch.compile they take the plain path."""
    torch._dynamo.reset()
    if case == "small mpo":
        layer, batch = TNLinear(tnviz.mpo([4, 4], [4, 4], ranks=3)), 8
    elif case == "pooled sweep":
        layer, batch = _big_layer(), BATCH
    else:
        layer, batch = TNLinear(tnviz.tensor_ring([2, 3, 2], [3, 2, 2], ranks=2), strategy="rebuilt"), 5
    with torch.no_grad():
        layer.bias.uniform_(-1, 1)
    x0 = torch.randn(batch, layer.in_features)
    g = torch.randn(batch, layer.out_features)
    results = []
    for run in (layer, torch.compile(layer, backend="aot_eager")):
        layer.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(True)
        y = run(x)
        y.backward(g)
        results.append((y.detach(), x.grad, {n: p.grad for n, p in layer.named_parameters()}))
    (y_eager, gx_eager, gp_eager), (y_comp, gx_comp, gp_comp) = results
    torch.testing.assert_close(y_comp, y_eager)
    torch.testing.assert_close(gx_comp, gx_eager)
    assert all(gp_comp[n] is not None for n in gp_eager), [n for n in gp_comp if gp_comp[n] is None]
    for n in gp_eager:
        torch.testing.assert_close(gp_comp[n], gp_eager[n], rtol=1e-4, atol=1e-4)


def test_small_and_non_cpu_requests_are_not_pooled():
    ws = Workspace()
    ws.take((10,), torch.empty(0))
    assert ws.nbytes == 0


@pytest.mark.parametrize("grad_mode", ["no_grad", "train"])
def test_the_bias_is_added_once_inside_the_last_pooled_step(grad_mode):
    layer = _big_layer()
    with torch.no_grad():
        layer.bias.uniform_(-1, 1)
    x = torch.randn(BATCH, 4096)
    want = x.double() @ layer.to_dense().detach().double().T + layer.bias.detach().double()
    if grad_mode == "no_grad":
        with torch.no_grad():
            y = layer(x)
    else:
        y = layer(x)
        g = torch.randn_like(y)
        y.backward(g)
        torch.testing.assert_close(layer.bias.grad, g.sum(0))
    torch.testing.assert_close(y.double(), want, rtol=1e-4, atol=1e-4)


def test_a_one_off_measurement_keeps_no_buffers():
    """The Costs page's measurement runs in a long-lived app: it times the pooled path (as the
    layer runs it) and lets the buffers go afterwards."""
    from tnviz.nn.measure import measure

    rows = measure(tnviz.mpo([8, 8, 8, 8], [8, 8, 8, 8], ranks=4), batch=64, repeats=1, mode="step")
    assert {r["method"] for r in rows} >= {"nn.Linear", "TNLinear auto", "TNLinear chain"}
    assert W.shared().nbytes == 0


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


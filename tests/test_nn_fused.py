"""The fused Triton MPO kernel (tnviz.nn.fused) against dense references.

On CPU the kernel runs in Triton's interpreter: each test that needs it sets ``TRITON_INTERPRET=1``
through ``monkeypatch`` (the module picks the interpreter per call, so nothing leaks into other
tests of the same pytest process, and the GPU tests below still run compiled).  Interpreter
shapes are tiny; ``max_block=16`` makes them cross tile edges.  The CUDA tests are marked ``gpu``
(benchmarks/gpu_check.sh) and skipped visibly elsewhere.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import tnviz
from tnviz.nn import TNLinear
from tnviz.nn.chain import plan_chain
from tnviz.nn.fused import FUSED, plan_fused
from tnviz.nn.fused_launch import available, triton_importable
from tnviz.nn.fused_op import FusedMPO, fused_mpo
from tnviz.nn.strategies import StrategyError

needs_triton = pytest.mark.skipif(not triton_importable(), reason="triton not installed (optional dependency)")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: run benchmarks/gpu_check.sh on a CUDA machine")


@pytest.fixture
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def einsum_reference(x, a_t, b):
    """``y[b, oa, ob] = sum A[ia, oa, r] x[b, ia, ib] B[r, ib, ob]`` in float64."""
    R, OA, IA = a_t.shape
    OB, IB = b.shape[1], b.shape[0] // R
    y = torch.einsum("bij,roi,rjp->bop", x.double().cpu().reshape(-1, IA, IB), a_t.double().cpu(),
                     b.double().cpu().reshape(R, IB, OB))
    return y.reshape(x.shape[0], OA * OB)


# (batch, IA, IB, OA, OB, R): odd sizes, unequal legs, bond 1, batch 1, legs of 1, several tiles
# per leg at max_block=16 (17..33 cross one or two tile edges), a leg exactly one tile
KERNEL_SHAPES = [
    (1, 2, 3, 4, 5, 3),
    (3, 20, 17, 18, 33, 2),
    (2, 5, 7, 3, 2, 1),
    (1, 1, 5, 7, 1, 2),
    (4, 16, 16, 16, 16, 3),
]


def make_operands(batch, IA, IB, OA, OB, R, dtype, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, IA * IB, generator=g, dtype=torch.float64)
    a_t = torch.randn(R, OA, IA, generator=g, dtype=torch.float64)
    b = torch.randn(R * IB, OB, generator=g, dtype=torch.float64)
    return [t.to(device=device, dtype=dtype) for t in (x, a_t, b)]


# ---------------------------------------------------------------------- always (no triton needed)
def test_supports_mpo_chains_of_two_or_more_cores_only():
    assert not FUSED.supports(tnviz.mpo([16], [16], ranks=1))  # one core: no bond to cut
    assert not FUSED.supports(tnviz.tensor_ring([4, 4], [4, 4], ranks=2))
    assert not FUSED.supports(tnviz.tucker([4, 4], [4, 4], ranks=2))
    assert FUSED.supports(tnviz.mpo([4, 4], [4, 4], ranks=2)) == triton_importable()
    with pytest.raises(StrategyError, match="open chain"):
        plan_fused(tnviz.tensor_ring([4, 4], [4, 4], ranks=2), 3)


def test_plan_cuts_at_the_bond_with_fewest_flops_and_counts_them():
    net = tnviz.mpo([8, 8, 8, 8], [8, 8, 8, 8], ranks=4)
    plan = plan_fused(net, 32, cached=True)
    assert plan.describe() == "AB | CD (fused)"
    assert (plan.IA, plan.IB, plan.OA, plan.OB, plan.R) == (64, 64, 64, 64, 4)
    assert plan.flops() == 2 * 32 * 4 * 64 * 64 * (64 + 64)  # one ob tile: GEMM 1 counted once
    # the same two GEMMs as the two-segment chain: equal FLOPs
    assert plan.flops() == plan.halves.flops()
    u = 32 * 64 * 4 * 64  # the intermediate U[b, oa, r, ib] that the chain's two segments store
    assert max(s.M * s.n * s.r for s in plan_chain(net, 32, True).segments) == u
    assert plan.largest == 32 * 4096 < u  # inference: only y (and parts) in memory
    assert plan_fused(net, 32, cached=False).largest == u  # with gradients the backward recomputes U
    assert plan.estimate(cached=True) < plan.estimate(cached=False)
    uneven = plan_fused(tnviz.mpo([3, 5], [2, 3, 2], ranks=3), 4)
    assert uneven.IA * uneven.IB == 15 and uneven.OA * uneven.OB == 12


def test_without_a_kernel_the_plan_runs_the_chain(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not available("cpu")
    net = tnviz.mpo([3, 4], [5, 2], ranks=3)
    layer = TNLinear(net, dtype=torch.float64)
    x = torch.randn(6, 12, dtype=torch.float64)
    ctx = layer.call_context()
    y = plan_fused(net, 6)(x, ctx)
    if ctx.bias_added:  # the chain's last step may add the bias inside its GEMM, and says so
        y = y - layer.bias
    torch.testing.assert_close(y, x @ layer.to_dense().T, rtol=1e-12, atol=1e-12)
    with pytest.raises(StrategyError, match="TRITON_INTERPRET"):
        fused_mpo(x, torch.zeros(3, 5, 3, dtype=torch.float64), torch.zeros(12, 2, dtype=torch.float64))


def test_module_imports_and_declines_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"  # import triton now raises ImportError
        "import tnviz; from tnviz.nn.fused import FUSED; from tnviz.nn.fused_launch import available\n"
        "import tnviz.nn.fused_op, tnviz.nn.fused_kernel\n"  # the op and the kernel's module import too
        "net = tnviz.mpo([4, 4], [4, 4], ranks=2)\n"
        "assert not FUSED.supports(net) and not available('cpu') and not FUSED.available('cuda')\n"
        "print(FUSED.plan(net, 2).describe())\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"TRITON_INTERPRET": "1", "PATH": ""}, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "A | B (fused)"


STEP_FLOP_CASES = [(([4, 4, 4], [4, 4, 4]), 3, 7), (([4, 4], [16, 16]), 8, 6)]


def test_fused_step_flops_count_the_kernel_and_its_backwards_gemms():
    """The fused kernel counts its own forward; its backward (plain GEMMs, run here on CPU with the
    saved tensors: no triton needed) recomputes U and takes the gradients of both parts."""
    from torch.utils.flop_counter import FlopCounterMode

    F64 = torch.float64
    for dims, rank, batch in STEP_FLOP_CASES:
        net = tnviz.mpo(*dims, ranks=rank)
        plan = plan_fused(net, batch, False)
        tensors = TNLinear(net, bias=False, dtype=F64).ordered_tensors()
        left, right = plan.halves.segments
        a_t = plan.halves.merge(left, tensors).reshape(plan.IA, plan.OA, plan.R).permute(2, 1, 0).contiguous()
        b = plan.halves.merge(right, tensors)

        class Ctx:
            saved_tensors = (torch.randn(batch, net.in_features, dtype=F64), a_t.detach(), b.detach())
            needs_input_grad = (False, True, True)

        with FlopCounterMode(display=False) as counter:
            FusedMPO.backward(Ctx(), torch.randn(batch, net.out_features, dtype=F64))
        merges = left.merge_flops + right.merge_flops
        assert plan.flops(step=True) == plan.flops() + counter.get_total_flops() + 3 * merges


@needs_triton
def test_measured_step_flops_of_fused_are_the_plans_own():
    """``strategy_flops`` (the Measure table) reads the plan's count; the strategy exists only
    where triton imports."""
    from tnviz.nn.measure import strategy_flops

    for dims, rank, batch in STEP_FLOP_CASES:
        net = tnviz.mpo(*dims, ranks=rank)
        assert strategy_flops(net, "fused", batch, cached=False, step=True) == plan_fused(net, batch).flops(step=True)


# ---------------------------------------------------------------------- interpreter (CPU)
@needs_triton
@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_kernel_equals_einsum_float64(interpret, shape):
    x, a_t, b = make_operands(*shape, torch.float64)
    ref = einsum_reference(x, a_t, b)
    assert float(ref.abs().max()) > 0
    y = fused_mpo(x, a_t, b, max_block=16)
    assert y.dtype == torch.float64 and y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


@needs_triton
def test_kernel_float32_within_rounding(interpret):
    x, a_t, b = make_operands(3, 20, 17, 18, 33, 2, torch.float32)
    ref = einsum_reference(x, a_t, b)
    y = fused_mpo(x, a_t, b, max_block=16)
    # float32 accumulation over 2 * 20 * 17 terms: relative error ~1e-6
    assert float((y.double() - ref).abs().max() / ref.abs().max()) < 1e-5
    y_wide = fused_mpo(x, a_t, b)  # default tiles: one tile per leg, masks at the edges
    assert float((y_wide.double() - ref).abs().max() / ref.abs().max()) < 1e-5


@needs_triton
def test_kernel_refuses_mixed_or_unsupported_types(interpret):
    x, a_t, b = make_operands(2, 2, 3, 4, 5, 3, torch.float64)
    with pytest.raises(StrategyError, match="one type"):
        fused_mpo(x.float(), a_t, b)
    with pytest.raises(StrategyError, match="one type"):
        fused_mpo(*(t.to(torch.complex128) for t in (x, a_t, b)))


@needs_triton
@pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64], ids=str)
def test_kernel_compiles_for_sm90_without_a_gpu(dtype):
    """The CUDA path checked where CI has no GPU: Triton compiles the kernel for an H100 (sm_90)
    with the tiles of TILES, and its shared memory fits the 227 KiB of one block."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from tnviz.nn.fused_launch import TILES
    from tnviz.nn.fused_kernel import _fused_mpo_kernel

    pointer = {torch.bfloat16: "*bf16", torch.float32: "*fp32", torch.float64: "*fp64"}[dtype]
    (ia, ib, oa, ob), warps = TILES[dtype.itemsize]
    signature = {"x_ptr": pointer, "a_ptr": pointer, "b_ptr": pointer, "y_ptr": pointer,
                 **{k: "i32" for k in ("IA", "IB", "OA", "OB", "R")},
                 **{k: "constexpr" for k in ("BLOCK_IA", "BLOCK_IB", "BLOCK_OA", "BLOCK_OB", "ACC_DTYPE", "PRECISION")}}
    constants = {"BLOCK_IA": ia, "BLOCK_IB": ib, "BLOCK_OA": oa, "BLOCK_OB": ob, "PRECISION": "ieee",
                 "ACC_DTYPE": triton.language.float64 if dtype == torch.float64 else triton.language.float32}
    compiled = triton.compile(ASTSource(triton.jit(_fused_mpo_kernel), signature, constants),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    assert "mma" in compiled.asm["ptx"] or dtype == torch.float32  # tensor cores for bf16 and fp64
    assert 0 < compiled.metadata.shared <= 227 * 1024


# networks of the layer tests: 4 cores, uneven legs (a core with outputs only), bond 1, unequal bonds
LAYER_NETWORKS = [
    tnviz.mpo([4, 4, 4], [4, 4, 4], ranks=3),
    tnviz.mpo([3, 5], [2, 3, 2], ranks=3),
    tnviz.mpo([5, 3], [3, 7], ranks=1),
    tnviz.mpo([2, 3, 2], [5, 3], ranks=[2, 3]),
]


@needs_triton
@pytest.mark.parametrize("net", LAYER_NETWORKS, ids=lambda n: f"{n.in_dims}x{n.out_dims}r{max(n.sizes[b] for b in n.bonds)}")
@pytest.mark.parametrize("batch", [1, 7])
def test_layer_forward_and_gradients_equal_dense_float64(interpret, net, batch):
    torch.manual_seed(0)
    layer = TNLinear(net, dtype=torch.float64).train()
    x = torch.randn(batch, net.in_features, dtype=torch.float64, requires_grad=True)
    g = torch.randn(batch, net.out_features, dtype=torch.float64)
    plan = plan_fused(net, batch)
    assert available(x.device)  # the interpreted kernel runs, not the chain fallback
    y = plan(x, layer.call_context())
    w = layer.to_dense()
    ref = x @ w.T
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    tensors = layer.ordered_tensors()
    grads = torch.autograd.grad((y * g).sum(), [x, *tensors])
    refs = torch.autograd.grad((ref * g).sum(), [x, *tensors])
    for got, want in zip(grads, refs):
        assert float(want.abs().max()) > 0
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@needs_triton
def test_eval_cache_sees_in_place_updates(interpret):
    net = tnviz.mpo([4, 4], [4, 4], ranks=2)
    layer = TNLinear(net, dtype=torch.float64).eval()
    x = torch.randn(3, 16, dtype=torch.float64)
    plan = plan_fused(net, 3, cached=True)
    with torch.no_grad():
        y1 = plan(x, layer.call_context())
        assert any(key[0] == "fused-a" for key in layer._cache)  # merged parts were cached
        layer.ordered_tensors()[1].mul_(-2.0)
        y2 = plan(x, layer.call_context())
        assert not torch.allclose(y1, y2)
        torch.testing.assert_close(y2, x @ layer.to_dense().T, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------- CUDA (compiled kernel)
TOL = {torch.float64: 1e-10, torch.float32: 2e-3, torch.bfloat16: 4e-2}  # float32: TF32 if torch allows it


@pytest.mark.gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", KERNEL_SHAPES + [(5, 64, 64, 64, 64, 16), (2, 64, 96, 80, 150, 5)],
                         ids=lambda s: "x".join(map(str, s)))
def test_kernel_on_cuda_equals_einsum(shape, dtype):
    x, a_t, b = make_operands(*shape, dtype, device="cuda")
    ref = einsum_reference(x, a_t, b)
    y = fused_mpo(x, a_t, b)
    assert y.is_cuda and y.dtype == dtype
    assert float((y.double().cpu() - ref).abs().max() / ref.abs().max()) < TOL[dtype]


@pytest.mark.gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("net", [tnviz.mpo([8, 8, 8, 8], [8, 8, 8, 8], ranks=8), *LAYER_NETWORKS],
                         ids=lambda n: f"{n.in_dims}x{n.out_dims}")
def test_layer_on_cuda_forward_and_gradients_match_cpu_float64(net):
    torch.manual_seed(1)
    cpu = TNLinear(net, dtype=torch.float64)
    gpu = TNLinear(net, device="cuda", dtype=torch.float32)
    gpu.load_state_dict(cpu.state_dict())
    for batch in (1, 33, 1024):
        plan = plan_fused(net, batch)
        x = torch.randn(batch, net.in_features, dtype=torch.float64)
        g = torch.randn(batch, net.out_features, dtype=torch.float64)
        ref = x @ cpu.to_dense().T
        ref_grads = torch.autograd.grad((ref * g).sum(), cpu.ordered_tensors())
        y = plan(x.float().cuda(), gpu.call_context())
        assert float((y.double().cpu() - ref).abs().max() / ref.abs().max()) < TOL[torch.float32]
        grads = torch.autograd.grad((y * g.float().cuda()).sum(), gpu.ordered_tensors())
        for got, want in zip(grads, ref_grads):
            assert float((got.double().cpu() - want).norm() / want.norm()) < 1e-3

"""The ``chain`` strategy (tnviz.nn.chain: MPO/TT sweeps): which networks it takes, its plan's
segments, and its merged cores cached in eval mode."""
from __future__ import annotations

import torch

import tnviz
from tests.nn_cases import LAYER_NETWORKS as NETWORKS, strategies_for
from tnviz.nn import TNLinear
from tnviz.nn.chain import chain_cores, plan_chain


def test_mpo_uses_the_chain_strategy_and_rings_do_not():
    assert "chain" in strategies_for(NETWORKS["mpo"])
    assert "chain" in strategies_for(NETWORKS["mpo unequal legs"])
    for name in ("tensor ring", "tucker", "cp", "generic"):
        assert "chain" not in strategies_for(NETWORKS[name])
    # legs out of row-major order along the chain cannot be swept without permutes
    shuffled = tnviz.mpo([2, 3], [3, 2], ranks=2, in_cores=[0, 1])
    swapped = tnviz.TensorNetwork.build(shuffled.tensors, shuffled.sizes, ("i2", "i1"), shuffled.outputs)
    assert chain_cores(swapped) is None


def test_chain_merged_cores_are_cached_in_eval_mode():
    net = tnviz.mpo([4, 4, 4, 4], [4, 4, 4, 4], ranks=8)
    layer = TNLinear(net, strategy="chain").eval()
    x = torch.randn(64, net.in_features)
    with torch.no_grad():
        y = layer(x)
        assert any(k[0] == "chain" for k in layer._cache)
        torch.testing.assert_close(y, x @ layer.to_dense().T + layer.bias, rtol=1e-4, atol=1e-5)


def test_the_plan_merges_cores_where_that_is_cheaper_and_counts_its_flops():
    net = tnviz.mpo([8, 8, 8, 8], [8, 8, 8, 8], ranks=8)
    assert plan_chain(net, 1024).describe() == "AB | CD"
    for batch in (1, 64, 1024):
        for cached in (False, True):
            plan = plan_chain(net, batch, cached)
            segments = plan.segments
            assert plan.flops() == sum(2 * s.M * s.k * s.n * s.r for s in segments)
            assert plan.flops(step=True) == (3 * plan.flops() - segments[0].flops
                                             + 3 * sum(s.merge_flops for s in segments))
            assert [(s.first, s.last) for s in segments][0][0] == 0 and segments[-1].last == 3


def test_a_merged_segment_equals_the_einsum_of_its_cores_with_gradients():
    """Merged by GEMMs over the bonds and one permute (merge_along), a run of cores in the middle
    of a chain (a left and a right bond, unequal legs, inputs-last placement) is opt_einsum's
    merge, values and gradients."""
    import opt_einsum as oe

    from tnviz.nn.chain import chain_segment

    for net in (tnviz.mpo([2, 3, 4, 2], [3, 2, 2, 5], ranks=[3, 4, 2]),
                tnviz.mpo([8, 8, 6], [16, 12, 8], ranks=[5, 7], in_cores=(2, 2, 2), out_cores=(0, 0, 1))):
        cores = chain_cores(net)
        plan = plan_chain(net, 4)
        tensors = [torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in net.shapes]
        for first, last in ((0, len(cores) - 1), (1, len(cores) - 1), (0, 1)):
            seg = chain_segment(net, cores, first, last, 4)
            got = plan.merge(seg, tensors)
            arrays = [tensors[c.position].permute(c.perm) for c in cores[first:last + 1]]
            want = oe.contract(seg.equation, *arrays, backend="torch").reshape(seg.k, seg.n)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
            g = torch.randn_like(want)
            for a, b in zip(torch.autograd.grad((got * g).sum(), tensors, allow_unused=True),
                            torch.autograd.grad((want * g).sum(), tensors, allow_unused=True)):
                assert (a is None) == (b is None)
                if a is not None:
                    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _input_first_networks():
    from tnviz.decompose.legs import inputs_last_cores

    ins, outs = inputs_last_cores((32, 48), (16, 24))
    yield tnviz.mpo([32, 48], [16, 24], ranks=40, in_cores=ins, out_cores=outs)  # inputs alone on the last core
    yield tnviz.mpo([8, 8, 6], [16, 12, 8], ranks=[5, 7], in_cores=(2, 2, 2), out_cores=(0, 0, 1))  # P > 1
    yield tnviz.mpo([2, 3, 4, 2], [3, 2, 2, 5], ranks=[3, 4, 2])  # inputs and outputs on every core: I, P > 1


def test_the_input_half_first_equals_the_dense_layer_at_every_cut_with_gradients():
    """(issue 16) x through the right (input) half, then the left: values and the gradients of x,
    of every core and of the bias equal the dense layer's, for every cut of chains whose legs sit
    inputs-last, partly so, and spread over every core; in eval (halves cached) and training."""
    from tnviz.nn.chain_strategy import input_first_at

    class Ctx:
        def __init__(self, tensors, bias):
            self.tensors, self.bias, self.bias_added, self.workspace = tensors, bias, False, None

        def ordered_tensors(self):
            return self.tensors

        def cached(self, key, compute):
            return compute()

    g = torch.Generator().manual_seed(0)
    for net in _input_first_networks():
        cores = chain_cores(net)
        for cut in range(len(cores) - 1):
            for batch in (1, 5):
                plan = input_first_at(net, cores, cut, batch)
                tensors = [torch.randn(*s, dtype=torch.float64, generator=g).requires_grad_() for s in net.shapes]
                bias = torch.randn(net.out_features, dtype=torch.float64, generator=g).requires_grad_()
                x = torch.randn(batch, net.in_features, dtype=torch.float64, generator=g).requires_grad_()
                ctx = Ctx(tensors, bias)
                y = plan(x, ctx)
                y = y if ctx.bias_added else y + bias
                W = tnviz.contract.to_dense(net, tensors).reshape(net.out_features, net.in_features)
                want = x @ W.T + bias
                torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)
                assert plan.flops() == 2 * batch * plan.K * plan.P * plan.I * (plan.J + plan.O)
                up = torch.randn_like(want)
                leaves = [x, bias, *tensors]
                for a, b in zip(torch.autograd.grad((y * up).sum(), leaves), torch.autograd.grad((want * up).sum(), leaves)):
                    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_the_output_cores_one_by_one_equal_the_dense_layer_with_gradients():
    """(issue 16) the input half first, then each output-only core as its own GEMM on the
    transposed state: values and gradients equal the dense layer's; the plan exists exactly for
    chains whose first cores carry outputs only and whose input half carries no outputs."""
    from tnviz.decompose.legs import inputs_last_cores
    from tnviz.nn.chain_strategy import cores_first_at

    class Ctx:
        def __init__(self, tensors):
            self.tensors, self.bias, self.bias_added, self.workspace = tensors, None, False, None

        def ordered_tensors(self):
            return self.tensors

        def cached(self, key, compute):
            return compute()

    ins, outs = inputs_last_cores((24, 16, 4), (24, 16))
    nets = [*_input_first_networks(),
            tnviz.mpo([24, 16, 4], [24, 16], ranks=[24, 151], in_cores=ins, out_cores=outs),
            tnviz.mpo([2, 2, 3, 2], [3, 5, 2], ranks=[3, 7, 5], in_cores=(3, 3, 3, 3), out_cores=(0, 1, 2)),
            tnviz.mpo([4, 6, 2], [3, 5], ranks=[3, 7], in_cores=(1, 2, 2), out_cores=(0, 0))]  # input half of two cores
    applies = [cores_first_at(net, chain_cores(net), 3) is not None for net in nets]
    wide = tnviz.mpo([8, 8, 4], [2, 2], ranks=[2, 256], in_cores=(2, 2, 2), out_cores=(0, 1))
    assert cores_first_at(wide, chain_cores(wide), 1024).largest >= 256 * 1024  # the (K, B) state of the first GEMM
    assert applies == [True, True, False, True, True, True]  # the third has inputs and outputs on every core
    g = torch.Generator().manual_seed(1)
    for net in (n for n, ok in zip(nets, applies) if ok):
        for batch in (1, 3):
            plan = cores_first_at(net, chain_cores(net), batch)
            tensors = [torch.randn(*sh, dtype=torch.float64, generator=g).requires_grad_() for sh in net.shapes]
            x = torch.randn(batch, net.in_features, dtype=torch.float64, generator=g).requires_grad_()
            y = plan(x, Ctx(tensors))
            W = tnviz.contract.to_dense(net, tensors).reshape(net.out_features, net.in_features)
            want = x @ W.T
            assert y.is_contiguous() and y.shape == want.shape
            scale = float(want.detach().abs().max())  # sums over bonds of 151: values in the hundreds
            torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-13 * scale)
            up = torch.randn_like(want)
            leaves = [x, *tensors]
            for a, b in zip(torch.autograd.grad((y * up).sum(), leaves), torch.autograd.grad((want * up).sum(), leaves)):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12 * float(b.abs().max()))


def test_minilms_inputs_last_layers_in_training_run_the_output_cores_one_by_one():
    """(issue 16) MiniLM's inputs-last MPOs (384->1536 at bonds 192, 134; 1536->384 at 64, 151)
    in training at batch 64: merging the output half each call costs more than applying its cores
    one at a time (counted FLOPs of a training step), so the chain runs them one by one; in eval,
    where the merged half is cached, it keeps the two halves.  Measured on the 2-core CPU:
    384->1536 0.62 -> 0.46 ms, below ``factorized`` (0.48 ms), which took this path through
    opt_einsum (benchmarks/README.md)."""
    from tnviz.decompose.legs import inputs_last_cores
    from tnviz.nn.chain_strategy import CoresFirstPlan, InputFirstPlan, input_first_at
    from tnviz.nn.strategies import make_plan

    for in_dims, out_dims, ranks in (((8, 8, 6), (16, 12, 8), [192, 134]), ((16, 12, 8), (8, 8, 6), [64, 151])):
        ins, outs = inputs_last_cores(in_dims, out_dims)
        net = tnviz.mpo(list(in_dims), list(out_dims), ranks=ranks, in_cores=ins, out_cores=outs)
        train = make_plan("chain", net, 64, cached=False)
        assert isinstance(train, CoresFirstPlan) and train.describe() == "C, then B, then A (inputs first, core by core)"
        halves = input_first_at(net, chain_cores(net), 1, 64)
        assert train.flops(step=True) < halves.flops(step=True)
        assert isinstance(make_plan("chain", net, 64, cached=True), InputFirstPlan)
        layer = TNLinear(net).train()
        x = torch.randn(64, net.in_features)
        y = layer(x)
        assert layer.last_strategy == "chain"
        torch.testing.assert_close(y, x @ layer.to_dense().T + layer.bias, rtol=1e-4, atol=1e-4)


def test_minilms_inputs_last_layers_run_the_input_half_first_by_counted_estimates():
    """(issue 16) the 1536->384 inputs-last MPO that data-aware compression writes for MiniLM's
    output.dense (legs 24x16x4 -> 24x16, input half at rank 151): at batch 1024 the layer's choice
    is the input half first, whose counted FLOPs are under half the dense GEMM's (before, the
    chain's only cover was the rebuilt matrix, and ``factorized`` ran 1.2-1.7x faster than it)."""
    from tnviz.decompose.legs import inputs_last_cores
    from tnviz.nn.chain_strategy import InputFirstPlan
    from tnviz.nn.strategies import decide, make_plan

    ins, outs = inputs_last_cores((24, 16, 4), (24, 16))
    net = tnviz.mpo([24, 16, 4], [24, 16], ranks=[24, 151], in_cores=ins, out_cores=outs)
    for cached in (True, False):
        d = decide(net, 1024, cached=cached)
        assert d.strategy == "chain" and not d.measured
        plan = make_plan("chain", net, 1024, cached)
        assert isinstance(plan, InputFirstPlan) and plan.describe() == "C, then AB (input half first)"
        assert plan.flops() < 0.5 * 2 * 1024 * net.in_features * net.out_features
        layer = TNLinear(net).train(not cached)
        x = torch.randn(1024, net.in_features)
        with torch.set_grad_enabled(not cached):
            y = layer(x)
        assert layer.last_strategy == "chain"
        torch.testing.assert_close(y, x @ layer.to_dense().T + layer.bias, rtol=1e-4, atol=1e-4)

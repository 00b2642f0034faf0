"""Costs: FLOPs by hand on small networks, equal to opt_einsum's on large ones; memory; ranks; guard."""
from __future__ import annotations

import opt_einsum as oe
import pytest

import tnviz
from tnviz import BudgetError, InvalidNetworkError, cost, mpo
from tnviz.cost import batch_sweep, check_budget, forward_path, max_useful_ranks, rebuild_path, training_step_flops
from tnviz.testing import small_template_networks, template_networks


def test_forward_and_backward_flops_by_hand():
    # x[b,i1,i2] . A[i1,o1,b1] . B[b1,i2,o2], left to right, B = 7
    net = mpo([2, 3], [4, 5], ranks=6)
    c = cost(net, batch=7, optimize="left-to-right")
    step1 = 2 * 7 * (2 * 3) * 4 * 6  # sums i1 over {b,i1,i2,o1,b1}
    step2 = 2 * 7 * 3 * 4 * 6 * 5    # sums i2,b1 over {b,i2,o1,b1,o2}
    assert [s.flops for s in c.steps] == [step1, step2]
    assert c.flops == step1 + step2 == 7056
    # backward: each step needs the gradient of both operands; each such contraction spans the same
    # index set and sums at least one index, so it costs as much as the forward step.
    assert c.backward_flops == 2 * (step1 + step2)
    assert c.dense_flops == 2 * 7 * 6 * 20
    assert c.dense_backward_flops == 2 * c.dense_flops
    # rebuild: A . B over {i1,o1,b1,i2,o2}, summing b1
    assert c.reconstruct_flops == 2 * 2 * 4 * 6 * 3 * 5
    assert c.rebuild_flops == c.reconstruct_flops + c.dense_flops
    assert c.steps[0].operands == ("x", "A") and c.steps[0].summed == ("i1",)
    assert c.steps[0].result_indices == ("batch", "i2", "o1", "b1")
    assert c.steps[-1].result_indices == ("batch", "o1", "o2")


def test_backward_flops_by_hand_with_an_outer_product_step():
    # x[b,i] . A[i] -> s[b] (sums i), then s[b] . B[o] -> y[b,o] (an outer product: nothing summed)
    net = tnviz.from_einsum("i,o->io", {"i": 3, "o": 4}, inputs="i")
    c = cost(net, batch=2, optimize="left-to-right")
    assert [s.flops for s in c.steps] == [2 * 2 * 3, 2 * 4]
    # step 1: dx[b,i] = ds[b] A[i] is an outer product (6); dA[i] = sum_b ds[b] x[b,i] (2*6)
    # step 2: ds[b] = sum_o dy[b,o] B[o] (2*8);            dB[o] = sum_b dy[b,o] s[b] (2*8)
    assert [s.backward_flops for s in c.steps] == [6 + 12, 16 + 16]
    assert c.backward_flops == 50


def test_training_step_flops_by_hand():
    # the MPO of the first test: forward step1 + step2, backward twice that; the input's gradient
    # (a first layer does without it) is the gradient of step 1 for x, as costly as step 1
    net = mpo([2, 3], [4, 5], ranks=6)
    step1, step2 = 2 * 7 * (2 * 3) * 4 * 6, 2 * 7 * 3 * 4 * 6 * 5
    dense = 2 * 7 * 6 * 20
    assert training_step_flops(net, 7, True, "left-to-right") == (3 * (step1 + step2), 3 * dense)
    assert training_step_flops(net, 7, False, "left-to-right") == (3 * (step1 + step2) - step1, 2 * dense)
    # the outer-product network of the test above: dx of step 1 is the outer product (6)
    outer = tnviz.from_einsum("i,o->io", {"i": 3, "o": 4}, inputs="i")
    assert training_step_flops(outer, 2, True, "left-to-right")[0] == 12 + 8 + 50
    assert training_step_flops(outer, 2, False, "left-to-right")[0] == 12 + 8 + 50 - 6
    # a dense weight as one tensor costs what nn.Linear costs, with and without the input's gradient
    one = mpo([7], [5], ranks=[])
    for input_grad in (True, False):
        layer, dense = training_step_flops(one, 3, input_grad)
        assert layer == dense == (3 if input_grad else 2) * 2 * 3 * 7 * 5


def test_peak_memory_by_hand():
    net = mpo([2, 3], [4, 5], ranks=6)
    B = 7
    c = cost(net, batch=B, optimize="left-to-right")
    weights = 2 * 4 * 6 + 6 * 3 * 5
    step1 = B * 6 + weights + B * 3 * 4 * 6
    step2 = B * 3 * 4 * 6 + 6 * 3 * 5 + B * 20
    assert c.peak_elements == max(step1, step2)
    assert c.largest_intermediate == B * 3 * 4 * 6
    assert c.peak_bytes("float32") == 4 * c.peak_elements
    assert c.peak_bytes("bfloat16") == 2 * c.peak_elements


@pytest.mark.parametrize("optimize", ["optimal", "dp", "greedy", "auto"])
@pytest.mark.parametrize("name,net", template_networks(), ids=[n for n, _ in template_networks()])
def test_flops_equal_opt_einsum_on_large_networks(optimize, name, net):
    batch = 1024
    c = cost(net, batch=batch, optimize=optimize)
    shapes = [(batch, *net.in_dims), *net.shapes]
    path, info = oe.contract_path(net.layer_equation(), *shapes, shapes=True, optimize=optimize)
    assert c.flops == int(info.opt_cost)
    assert list(c.path) == [tuple(p) for p in path]
    assert c.largest_intermediate == int(info.largest_intermediate)
    assert rebuild_path(net, optimize).flops == int(
        oe.contract_path(net.equation(), *net.shapes, shapes=True, optimize=optimize)[1].opt_cost)


def test_mpo_4096_saves_flops_and_params():
    net = mpo([8, 8, 8, 8], [8, 8, 8, 8], 4)
    c = cost(net, batch=1024)
    assert c.params == 2560 and c.dense_params == 4096**2
    assert c.flops < c.dense_flops / 4
    assert c.best_strategy == "factorized"


def test_max_useful_rank_for_a_chain_and_warnings():
    net = mpo([2, 3], [4, 5], ranks=6)
    assert max_useful_ranks(net) == {"b1": 8}  # min(2*4, 3*5)
    assert cost(net).warnings == ()
    wasted = mpo([2, 3], [4, 5], ranks=10)
    (msg,) = cost(wasted).warnings
    assert "bond 'b1' has size 10 but at most 8 is useful" in msg


def test_max_useful_rank_accounts_for_neighbouring_bonds():
    net = mpo([8, 8, 8], [8, 8, 8], ranks=[2, 200])
    # b2 is bounded by the last core (64 open) and by the middle core: 64 open x b1=2 = 128
    assert max_useful_ranks(net)["b2"] == 64
    ring = tnviz.tensor_ring([4, 4], [4, 4], [2, 100])
    assert max_useful_ranks(ring)["b2"] == 32  # one core: 16 open x the other bond (2)


def test_hyperedges_have_no_rank_bound():
    assert max_useful_ranks(tnviz.cp([4, 4], [4], 100)) == {}


def test_batch_sweep_finds_the_exact_crossover():
    net = mpo([4, 4], [4, 4], 16)  # full rank: contracting x through the cores costs more per sample
    sweep = batch_sweep(net, batches=[1, 2, 4, 8, 16, 32, 64, 128, 256, 1024])
    assert sweep.crossovers, "a full-rank MPO must switch to the rebuilt weight at some batch"
    for b, winner in sweep.crossovers:
        fact = lambda n: forward_path(net, n, "input-first").flops
        rebuilt = lambda n: rebuild_path(net).flops + 2 * n * 16 * 16
        now = "factorized" if fact(b) <= rebuilt(b) else "rebuilt"
        before = "factorized" if fact(b - 1) <= rebuilt(b - 1) else "rebuilt"
        assert now == winner and before != winner
    rows = sweep.rows()
    assert rows[0]["cheaper"] == "factorized" and rows[-1]["cheaper"] == "rebuilt"
    assert all(r["best_path"] <= min(r["factorized"], r["rebuilt"]) * 1.01 for r in rows)


def test_input_first_path_is_sequential_and_optimal_among_orders():
    import itertools

    from tnviz.cost import _sequence_to_path

    net = mpo([8, 4, 2], [2, 4, 8], [3, 5])
    best = forward_path(net, 16, "input-first")
    assert all(any(o == "x" or o.startswith("#") for o in s.operands) for s in best.steps)
    for perm in itertools.permutations([1, 2, 3]):
        from tnviz.cost import _path_cost
        from tnviz.network import BATCH_INDEX
        sizes = {BATCH_INDEX: 16, **net.sizes}
        ops = ((BATCH_INDEX, *net.inputs), *[t.indices for t in net.tensors])
        path = _sequence_to_path([0, *perm])
        flops = sum(s.flops for s in _replay(ops, (BATCH_INDEX, *net.outputs), sizes, path))
        assert best.flops <= flops


def _replay(ops, output, sizes, path):
    from tnviz.cost import OPTIMIZERS, _path_cost

    OPTIMIZERS["_replay"] = lambda *a: path
    try:
        return _path_cost(tuple(f"t{k}" for k in range(len(ops))), ops, output, tuple(sizes.items()), "_replay").steps
    finally:
        del OPTIMIZERS["_replay"]
        _path_cost.cache_clear()


def test_no_crossover_for_a_low_rank_mpo():
    assert batch_sweep(mpo([8, 8, 8, 8], [8, 8, 8, 8], 4)).crossovers == ()


def test_budget_guard_refuses_with_the_overshoot():
    net = mpo([64, 64, 64], [64, 64, 64], 2)
    with pytest.raises(BudgetError, match=r"x the budget"):
        check_budget(net, None, 2**28)
    check_budget(mpo([8, 8], [8, 8], 2), 64, 2**20)  # a small one passes
    with pytest.raises(BudgetError, match="forward pass at batch 100000"):
        tnviz.forward(mpo([64, 64], [64, 64], 64), __import__("numpy").zeros((100000, 4096)),
                      tnviz.random_tensors(mpo([64, 64], [64, 64], 64)), budget=2**24)


@pytest.mark.parametrize("name,net", small_template_networks(), ids=[n for n, _ in small_template_networks()])
def test_every_optimizer_gives_a_complete_path(name, net):
    for optimize in tnviz.OPTIMIZERS:
        c = cost(net, batch=3, optimize=optimize)
        assert c.steps[-1].result_indices == ("batch", *net.outputs)
        assert len(c.steps) == len(net.tensors)


def test_bad_batch_and_optimizer():
    net = mpo([2], [2], 1) if False else mpo([2, 2], [2, 2], 1)
    with pytest.raises(InvalidNetworkError, match="batch size must be a positive integer; got 0"):
        cost(net, batch=0)
    with pytest.raises(InvalidNetworkError, match=r"unknown path optimizer 'fast'; choose one of \["):
        cost(net, optimize="fast")
    big = mpo([2] * 12, [2] * 12, 2)
    with pytest.raises(InvalidNetworkError, match="limited to 8 operands"):
        cost(big, optimize="optimal")
    huge = mpo([2] * 16, [2] * 16, 2)
    with pytest.raises(InvalidNetworkError, match="'dp' optimizer is limited to 16 operands"):
        cost(huge, optimize="dp")


def test_to_dict_is_json_ready():
    import json

    d = cost(mpo([4, 4], [4, 4], 2), batch=8).to_dict()
    text = json.dumps(d)
    for key in ("params", "dense_params", "flops", "dense_flops", "backward_flops", "reconstruct_flops",
                "peak_elements", "path", "steps"):
        assert key in d
    assert "x" in text

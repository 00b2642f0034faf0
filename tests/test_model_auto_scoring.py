"""The auto search's shared work changes no number: every candidate's error equals the one a fresh,
unshared computation gives (tnviz.model.auto.candidates: one data-error denominator, shared exact
SVDs), and the pair stage spread over workers (tnviz.model.auto_order.decide_pairs) scores what
the sequential one does."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tnviz.decompose import data_aware as da
from tnviz.decompose import decompose
from tnviz.decompose import randomized
from tnviz.decompose.legs import make_legs
from tnviz.decompose.split import split_bonds
from tnviz.model import auto_order
from tnviz.model.apply import Options, calibration_stats
from tnviz.model.auto import candidates
from tnviz.model.plan import Rule, make_plan
from tests.model_cases import FFN

pytestmark = pytest.mark.one_torch_thread


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def _weight_and_cov(out_f: int, in_f: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(out_f, in_f, dtype=torch.float64, generator=g)
    X = torch.randn(in_f, 3 * in_f, dtype=torch.float64, generator=g) * torch.linspace(0.2, 2.0, in_f,
                                                                                      dtype=torch.float64)[:, None]
    return W, X @ X.T / X.shape[1]


@pytest.mark.parametrize("shape", [(48, 32), (24, 64)])
def test_every_candidate_error_is_the_unshared_computation(shape):
    """Each scored candidate rebuilt on its own, unshared (a fresh Kronecker approximation and
    decomposition per candidate, the data error with its own denominator; svd from the whitened
    spectrum; the inputs-last MPO from its own bond split), gives the search's error to 1e-9
    relative."""
    W, C = _weight_and_cov(*shape)
    legs = make_legs(W.shape)
    cov = da.parse_covariance(C, legs, W, da.DEFAULT_EPS)
    budget = W.numel() // 3
    found = [c for c, _ in candidates(W, cov, budget)]
    scored = [c for c in found if c.error is not None]
    assert {"svd", "mpo", "tucker", "tr"} <= {c.method for c in scored}
    assert {"spectra", "decomposed"} <= {c.scored for c in scored}
    for c in scored:
        opts = dict(c.options)
        if c.scored == "decomposed":
            kron = da.kron_approximation(da.parse_covariance(C, legs, W, da.DEFAULT_EPS),
                                         make_legs(W.shape, opts["in_dims"], opts["out_dims"]), da.DEFAULT_EPS)
            dec = decompose(W, c.method, input_cov=kron, **opts)
            error = da.data_error(W, dec.to_dense(), cov, [W.shape[1]])
            assert dec.params == c.params, c.label
        elif c.method == "svd":  # the whitened spectrum's tail, on the regularised covariance
            L = torch.linalg.cholesky(C + da.DEFAULT_EPS * float(C.diagonal().mean()) * torch.eye(C.shape[0],
                                                                                                dtype=C.dtype))
            s2 = torch.linalg.svdvals(W @ L) ** 2
            error = float((s2[opts["max_rank"]:].sum() / s2.sum()).sqrt())
        else:  # inputs-last: the bond split run on its own, outside the search
            split = split_bonds(W, C, target_params=budget, in_dims=opts["in_dims"], out_dims=opts["out_dims"],
                                in_cores=opts["in_cores"], out_cores=opts["out_cores"])
            assert split.caps == opts["max_rank"] and split.params == c.params
            error = split.data_error
        assert _rel(c.error, error) <= 1e-9, (c.label, c.error, error)


def test_shared_svds_factor_an_equal_matrix_once_and_hand_out_copies(monkeypatch):
    g = torch.Generator().manual_seed(1)
    A = torch.randn(40, 30, dtype=torch.float64, generator=g)
    fresh = randomized.exact_svd(A)
    calls = []
    real = randomized._exact_svd
    monkeypatch.setattr(randomized, "_exact_svd", lambda M: calls.append(tuple(M.shape)) or real(M))
    with randomized.shared_svds():
        first = randomized.exact_svd(A)
        first[0].zero_()  # a caller writing into its result does not reach the next one
        again = randomized.exact_svd(A.clone())
        B = A.clone()
        B[3, 4] += 1e-12  # one entry off by a rounding: not the same matrix
        other = randomized.exact_svd(B)
    assert calls == [(40, 30), (40, 30)]
    for got, want in zip(again, fresh):
        assert (got is None and want is None) or torch.equal(got, want)
    assert torch.equal(other[1], real(B)[1])
    randomized.exact_svd(A)  # outside the block nothing is kept
    assert len(calls) == 3


def test_shared_products_are_keyed_by_kind_tag_and_matrix():
    g = torch.Generator().manual_seed(2)
    A = torch.randn(20, 10, dtype=torch.float64, generator=g)
    tag, other_tag = object(), object()
    runs = []

    def double(M):
        runs.append(1)
        return M * 2

    with randomized.shared_svds():
        first = randomized.shared("x", tag, A, double)
        first.zero_()  # a caller writing into its result does not reach the next one
        assert torch.equal(randomized.shared("x", tag, A.clone(), double), A * 2) and len(runs) == 1
        randomized.shared("x", other_tag, A, double)  # another covariance: computed again
        randomized.shared("y", tag, A, double)  # another product: computed again
        assert len(runs) == 3
    randomized.shared("x", tag, A, double)
    assert len(runs) == 4


class TwoFFN(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = FFN(), FFN()

    def forward(self, x):
        return self.b(self.a(x))


def _errors(decided):
    return {m: {o: [(c.label, c.params, c.error) for c in d[o]] for o in ("stored", "searched")} | {"adopted": d["adopted"]}
            for m, d in decided.items()}


def test_pairs_decided_on_workers_score_what_the_sequential_stage_does():
    """Two pairs, each with its own shuffled Kronecker structure: decide_pairs on two workers and on
    one give the same candidates, errors, orders and permutations, and they equal the candidates
    scored pair by pair on this thread (auto_order._score_pair) in the searched order.  (With
    random weights in pair b its search found a better order by little more than rounding, so on
    some runs its order was "no better" and b was never scored: 1 run in about 20 under load.)"""
    g = torch.Generator().manual_seed(0)
    model = TwoFFN().eval()
    with torch.no_grad():
        for ffn in (model.a, model.b):
            shuffle = torch.randperm(64, generator=g)
            ffn.mlp.up_proj.weight.copy_(torch.kron(torch.randn(16, 4, generator=g, dtype=torch.float64),
                                                    torch.randn(4, 4, generator=g, dtype=torch.float64))[shuffle])
            ffn.mlp.down_proj.weight.copy_(torch.kron(torch.randn(4, 16, generator=g, dtype=torch.float64),
                                                      torch.randn(4, 4, generator=g, dtype=torch.float64))[:, shuffle])
    plan = make_plan(model, [Rule(r"proj$", "auto", {"ratio": 1.7})])
    X = torch.randn(400, 16, dtype=torch.float64, generator=g)
    stats = calibration_stats(model, [X], plan.names(), torch.device("cpu"))
    runs = {}
    for workers in (1, 2):
        work = copy.deepcopy(model)
        perms, _, notes, decided = auto_order.decide_pairs(work, plan, stats, Options(), workers=workers)
        runs[workers] = (work, [(p.pair, p.perm) for p in perms], notes, _errors(decided))
    assert runs[1][1:] == runs[2][1:]
    assert set(runs[1][3]) == set(plan.names())
    assert any(d["adopted"] == "searched" for d in runs[1][3].values())
    for k, v in runs[1][0].state_dict().items():
        assert torch.equal(v, runs[2][0].state_dict()[k]), k
    modules = dict(model.named_modules())
    planned = {lp.name: lp for lp in plan.layers}
    for pair in auto_order.ff_pairs(model):
        members = list(pair.members)
        found = auto_order._search(modules[members[0]].weight.detach(), planned[members[0]],
                                   stats[members[0]].second_moment)
        cov_of = {m: stats[m].second_moment for m in members}
        alone = auto_order._score_pair(pair, members, planned, modules, cov_of, found.perm, Options())
        for m in members:
            for order in ("stored", "searched"):
                want = [(c.label, c.params, c.error) for c in alone[m][order]]
                assert runs[2][3][m][order] == want, (m, order)


def _reference_balanced_kmeans(F, k, g, iters=8):
    """The order search's balanced k-means as first written (before its seeding reused one buffer
    and its greedy assignment stopped calling divmod per pair): the reference for the same labels."""
    n, size = F.shape[0], F.shape[0] // k

    def labels_of(D):
        order = torch.argsort(D.reshape(-1), stable=True).tolist()
        labels, room, left = [-1] * n, [size] * k, n
        for flat in order:
            i, j = divmod(flat, k)
            if labels[i] < 0 and room[j] > 0:
                labels[i] = j
                room[j] -= 1
                left -= 1
                if not left:
                    break
        return torch.as_tensor(labels, dtype=torch.long)

    centres = [F[int(torch.randint(n, (1,), generator=g))]]
    d2 = ((F - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        probs = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full((n,), 1.0 / n, dtype=F.dtype)
        centres.append(F[int(torch.multinomial(probs.float().cpu(), 1, generator=g))])
        d2 = torch.minimum(d2, ((F - centres[-1]) ** 2).sum(1))
    C = torch.stack(centres)
    labels = None
    for _ in range(iters):
        new = labels_of(torch.cdist(F, C))
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        C = torch.stack([F[labels == j].mean(0) for j in range(k)])
    return labels


@pytest.mark.parametrize("n, width, k", [(96, 40, 12), (120, 9, 8), (64, 300, 16)])
def test_the_order_search_clusters_as_its_reference(n, width, k):
    from tnviz.decompose.order import _balanced_kmeans

    F = torch.randn(n, width, dtype=torch.float64, generator=torch.Generator().manual_seed(n + k))
    got = _balanced_kmeans(F, k, torch.Generator().manual_seed(7))
    assert torch.equal(got, _reference_balanced_kmeans(F, k, torch.Generator().manual_seed(7)))
    assert torch.equal(torch.bincount(got, minlength=k), torch.full((k,), n // k))

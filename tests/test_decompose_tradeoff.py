"""Trade-off sweeps and the Pareto front (tnviz.decompose.tradeoff) against direct decompositions."""
from __future__ import annotations

import pytest
import torch

from tnviz.decompose import DECOMPOSITIONS, decompose, pareto_front, tradeoff
from tnviz.errors import DecompositionError

METHODS = list(DECOMPOSITIONS)
IN_DIMS, OUT_DIMS = [4, 4, 4], [4, 3, 4]


pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def weight():
    return torch.randn(48, 64, generator=gen(0), dtype=torch.float64)


@pytest.fixture(scope="module")
def kron_factors():
    g = gen(2)
    out = []
    for d in IN_DIMS:
        A = torch.randn(d, d, generator=g, dtype=torch.float64) * (0.3 ** torch.arange(d, dtype=torch.float64))
        out.append(A @ A.T + 1e-3 * torch.eye(d, dtype=torch.float64))
    return out


def kron_all(factors):
    C = factors[0]
    for f in factors[1:]:
        C = torch.kron(C, f)
    return C


def test_tradeoff_points_match_direct_decompositions(weight):
    ranks = [1, 2, 4, 8]
    pts = tradeoff(weight, methods=("svd", "tucker", "mpo", "tr", "cp"), ranks={"svd": ranks, "tucker": [1, 2, 3],
                   "mpo": ranks, "tr": [1, 2, 3], "cp": [2, 4]}, in_dims=IN_DIMS, out_dims=OUT_DIMS, n_iter_max=20)
    by = {(p.method, p.rank): p for p in pts}
    assert {m for m, _ in by} == set(METHODS)
    for r in ranks:   # svd: truncations of one SVD equal fresh truncated SVDs
        d = decompose(weight, "svd", max_rank=r)
        assert by[("svd", r)].rel_error == pytest.approx(d.rel_error, rel=1e-9)
        assert by[("svd", r)].params == d.params
    for r in [1, 2, 3]:   # tucker: corners of one HOSVD equal fresh HOSVDs
        d = decompose(weight, "tucker", in_dims=IN_DIMS, out_dims=OUT_DIMS, max_rank=r)
        assert by[("tucker", r)].rel_error == pytest.approx(d.rel_error, rel=1e-9)
        tr = decompose(weight, "tr", in_dims=IN_DIMS, out_dims=OUT_DIMS, max_rank=r)
        assert by[("tr", r)].rel_error == pytest.approx(tr.rel_error, rel=1e-9)
    for r in ranks:   # mpo: TT-rounding of the top-rank TT-SVD; same ranks, error within the TT-SVD bound
        d = decompose(weight, "mpo", in_dims=IN_DIMS, out_dims=OUT_DIMS, max_rank=r)
        p = by[("mpo", r)]
        assert p.ranks == d.ranks and p.params == d.params
        assert p.rel_error <= 1.05 * d.rel_error
    errs = [by[("mpo", r)].rel_error for r in ranks]
    assert all(b <= a + 1e-12 for a, b in zip(errs, errs[1:])) and errs[-1] < errs[0]


def test_tradeoff_with_covariance_reports_data_error(weight, kron_factors):
    seen = []
    pts = tradeoff(weight, methods=("svd", "mpo"), ranks=[2, 4], input_cov=kron_factors,
                   in_dims=IN_DIMS, out_dims=OUT_DIMS, progress=lambda f, msg: seen.append((f, msg)))
    # one call per method as it finishes (they run at once on the workers, in either order)
    assert [f for f, _ in seen] == [0.5, 1.0] and sorted(m for _, m in seen) == ["mpo done", "svd done"]
    for p in pts:
        d = decompose(weight, p.method, in_dims=IN_DIMS, out_dims=OUT_DIMS, max_rank=p.rank, input_cov=kron_factors)
        assert p.data_error is not None and p.error == p.data_error
        if p.method == "svd":
            assert p.data_error == pytest.approx(d.data_error, rel=1e-9)


def test_pareto_front_is_the_non_dominated_set(weight):
    pts = tradeoff(weight, methods=("svd", "mpo", "tucker"), ranks=[1, 2, 3, 4, 8], in_dims=IN_DIMS, out_dims=OUT_DIMS)
    front = pareto_front(pts)
    assert front and [p.params for p in front] == sorted(p.params for p in front)
    def dominated(p):
        return any((q.params, q.error) != (p.params, p.error) and q.params <= p.params and q.error <= p.error
                   for q in pts)

    # One point per non-dominated (params, error) pair (exact duplicates, e.g. two ranks capped at
    # the same leg sizes, appear once).
    assert sorted({(p.params, p.error) for p in pts if not dominated(p)}) == [(p.params, p.error) for p in front]
    assert len(front) < len(pts)
    with pytest.raises(DecompositionError, match="pareto_front ranks points by"):
        pareto_front(pts, by="speed")
    with pytest.raises(DecompositionError, match="unknown decomposition method 'pca'"):
        tradeoff(weight, methods=("pca",))


def test_tradeoff_tucker_points_run_hooi_like_decompose(weight):
    """Tucker points start from the corners of one HOSVD and run HOOI as decompose does; with
    hooi_iters=0 they are the corners themselves (plain HOSVD), which HOOI beats."""
    hooi = {p.rank: p for p in tradeoff(weight, methods=("tucker",), ranks=[1, 2, 3], in_dims=IN_DIMS, out_dims=OUT_DIMS)}
    plain = {p.rank: p for p in tradeoff(weight, methods=("tucker",), ranks=[1, 2, 3], in_dims=IN_DIMS,
                                         out_dims=OUT_DIMS, hooi_iters=0)}
    for r in [1, 2, 3]:
        d = decompose(weight, "tucker", in_dims=IN_DIMS, out_dims=OUT_DIMS, max_rank=r, hooi_iters=0)
        assert plain[r].rel_error == pytest.approx(d.rel_error, rel=1e-9)
        assert hooi[r].ranks == plain[r].ranks
    assert all(hooi[r].rel_error <= plain[r].rel_error + 1e-12 for r in [1, 2, 3])
    assert hooi[2].rel_error < plain[2].rel_error - 1e-3


def test_tradeoff_reads_each_shared_spectrum_once_on_single_threaded_workers(weight, monkeypatch):
    """svd, tucker and mpo read every point from one SVD / HOSVD / TT-SVD, tr and cp run one
    decomposition per point, CP's sweeps contract two operands at a time (no path search per
    call), and every task runs on single-threaded torch operations, on two workers at once here:
    the points are those of one worker, bit for bit (counted, not timed)."""
    import collections
    import importlib

    mod = importlib.import_module("tnviz.decompose.tradeoff")

    counts, threads = collections.Counter(), set()
    for name in ("truncated_svd", "hosvd", "tt_svd", "decompose"):
        def counted(*args, _real=getattr(mod, name), _name=name, **kwargs):
            counts[_name] += 1
            threads.add(torch.get_num_threads())
            return _real(*args, **kwargs)
        monkeypatch.setattr(mod, name, counted)
    real_einsum = torch.einsum

    def einsum(equation, *operands):
        counts[f"einsum of {len(operands[0]) if len(operands) == 1 and isinstance(operands[0], (list, tuple)) else len(operands)}"] += 1
        return real_einsum(equation, *operands)

    monkeypatch.setattr(torch, "einsum", einsum)
    ranks = {"svd": [1, 2, 4, 8], "tucker": [1, 2, 3], "mpo": [1, 2, 4, 8], "tr": [1, 2, 3], "cp": [2, 4]}
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setenv("TNVIZ_WORKERS", "2")
        both = tradeoff(weight, methods=METHODS, ranks=ranks, in_dims=IN_DIMS, out_dims=OUT_DIMS, n_iter_max=20)
        assert torch.get_num_threads() == 2  # restored
        once = dict(counts)
        monkeypatch.setenv("TNVIZ_WORKERS", "1")
        one = tradeoff(weight, methods=METHODS, ranks=ranks, in_dims=IN_DIMS, out_dims=OUT_DIMS, n_iter_max=20)
    finally:
        torch.set_num_threads(before)
    assert {k: v for k, v in once.items() if not k.startswith("einsum")} == \
        {"truncated_svd": 1, "hosvd": 1, "tt_svd": 1, "decompose": 5}
    assert not any(k.startswith("einsum") and int(k.split()[-1]) > 2 for k in counts), counts
    assert threads == {1}
    assert [(p.method, p.rank, p.params, p.rel_error, p.ranks) for p in both] == \
        [(p.method, p.rank, p.params, p.rel_error, p.ranks) for p in one]
    assert [(p.method, p.rank) for p in both] == [(m, r) for m in METHODS for r in ranks[m]]

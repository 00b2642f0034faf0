"""tnviz.decompose.spectra: spectrum arithmetic, per-bond cuts and the model-wide table, against direct
numpy/torch computations in float64."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from tnviz.errors import DecompositionError, RankError
from tnviz.model.io import candidates, open_weights, save_safetensors
from tnviz.decompose.spectra import (
    LayerRow,
    bond_entropy,
    cut,
    cut_error,
    default_legs,
    discarded_weight,
    exact_decomposition,
    layer_spectra,
    layer_tradeoff,
    not_applicable,
    rank_for_error,
    sweep_ranks,
    useful_rank,
)
from tnviz.render.spectra_charts import sensitivity_chart, spectra_chart, tradeoff_chart

EXACT = 1e-12


pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


def weight(out: int, inp: int, seed: int = 0, decay: float = 0.8) -> torch.Tensor:
    """A float64 weight with a known, decaying spectrum (so every cut changes the error)."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(out, min(out, inp), generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(inp, min(out, inp), generator=g, dtype=torch.float64))
    s = decay ** torch.arange(min(out, inp), dtype=torch.float64)
    return (U * s) @ V.T


# ---------------------------------------------------------------------- arithmetic
def test_discarded_weight_and_cut_error_match_direct_sums():
    rng = np.random.default_rng(0)
    s = np.sort(rng.random(20))[::-1] * 3
    norm = math.sqrt(float(np.sum(s ** 2)))
    for r in range(0, 21):
        direct = math.sqrt(float(np.sum(s[r:] ** 2)))
        assert discarded_weight(s, r) == pytest.approx(direct, rel=EXACT, abs=EXACT)
        assert cut_error(s, r) == pytest.approx(direct / norm, rel=EXACT, abs=EXACT)
        assert cut_error(s, r, norm=2 * norm) == pytest.approx(direct / (2 * norm), rel=EXACT, abs=EXACT)
    assert discarded_weight(s, 0) > discarded_weight(s, 5) > discarded_weight(s, 20) == 0.0


def test_rank_for_error_is_the_smallest_rank_within_the_error():
    rng = np.random.default_rng(1)
    s = np.sort(rng.random(30))[::-1]
    for err in (0.0, 0.01, 0.05, 0.1, 0.3, 0.5, 0.9):
        r = rank_for_error(s, err)
        assert cut_error(s, r) <= err * (1 + 1e-9) or r == len(s)
        if r > 1:
            assert cut_error(s, r - 1) > err
    assert rank_for_error(s, 0.0) == 30
    assert rank_for_error([5.0, 0.0, 0.0], 0.0) == 1  # exact zeros cost nothing


def test_bond_entropy_flat_single_and_scale_invariant():
    for n in (1, 2, 7, 64):
        assert bond_entropy(np.ones(n)) == pytest.approx(math.log(n), abs=EXACT)
    assert bond_entropy([3.0, 0.0, 0.0]) == 0.0
    s = np.array([4.0, 2.0, 1.0])
    p = s ** 2 / np.sum(s ** 2)
    assert bond_entropy(s) == pytest.approx(float(-(p * np.log(p)).sum()), abs=EXACT)
    assert bond_entropy(10 * s) == pytest.approx(bond_entropy(s), abs=EXACT)
    assert 0 < bond_entropy(s) < math.log(3)
    # one function for every face: a torch spectrum (what a decomposition returns) gives the same entropy
    assert bond_entropy(torch.tensor(s)) == pytest.approx(bond_entropy(s), abs=EXACT)


def test_bad_spectra_and_settings_are_refused():
    with pytest.raises(RankError, match="finite and non-negative"):
        bond_entropy([1.0, -1.0])
    with pytest.raises(RankError, match=r"\[0, 1\)"):
        rank_for_error([1.0], 1.5)
    with pytest.raises(RankError, match="kept rank must be >= 0"):
        discarded_weight([1.0], -1)
    W = weight(8, 6)
    with pytest.raises(RankError, match="positive integer"):
        layer_spectra(W, "svd", setting="rank", value=0)
    with pytest.raises(RankError, match="setting is one of"):
        layer_spectra(W, "svd", setting="energy", value=0.5)
    with pytest.raises(RankError, match="CP has no singular values"):
        layer_spectra(W, "cp", setting="rtol", value=0.1)


# ---------------------------------------------------------------------- one layer
@pytest.mark.parametrize("r", [1, 3, 7, 12])
def test_svd_cut_discards_exactly_the_values_beyond_r(r):
    W = weight(16, 12, seed=r)
    s = np.linalg.svd(W.numpy(), compute_uv=False)
    res = layer_spectra(W, "svd", value=r)
    (bond,) = res.bonds
    np.testing.assert_allclose(bond.values, s, rtol=1e-12, atol=1e-14)
    assert bond.kept == r and bond.full == 12 and res.ranks == {"r": r}
    expected = math.sqrt(float(np.sum(s[r:] ** 2))) / float(np.linalg.norm(W.numpy()))
    assert res.rel_error == pytest.approx(expected, rel=1e-9, abs=1e-12)  # measured on the reconstruction
    assert bond.discarded == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert res.bound == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert res.params == r * (16 + 12) and res.dense_params == 16 * 12
    assert bond.entropy == pytest.approx(bond_entropy(s), abs=EXACT)
    assert bond.kept_energy == pytest.approx(float(np.sum(s[:r] ** 2) / np.sum(s ** 2)), abs=EXACT)


def test_mpo_first_bond_is_the_spectrum_of_the_first_unfolding():
    W = weight(24, 20, seed=3, decay=0.9)
    in_dims, out_dims = (4, 5), (4, 6)
    res = layer_spectra(W, "mpo", value=5, in_dims=in_dims, out_dims=out_dims)
    T = W.reshape(*out_dims, *in_dims).numpy()  # axes o1, o2, i1, i2
    first = T.transpose(0, 2, 1, 3).reshape(4 * 4, 6 * 5)  # core 1 holds (o1, i1)
    s = np.linalg.svd(first, compute_uv=False)
    b1 = res.bonds[0]
    assert b1.bond == "b1"
    np.testing.assert_allclose(b1.values, s, rtol=1e-10, atol=1e-13)
    assert b1.kept == 5
    assert b1.discarded == pytest.approx(math.sqrt(float(np.sum(s[5:] ** 2))) / np.linalg.norm(T), rel=1e-9)
    assert res.in_dims == in_dims and res.out_dims == out_dims
    assert res.network.sizes["b1"] == 5


@pytest.mark.parametrize("method", ["mpo", "tr", "tucker", "svd"])
def test_error_rises_as_rank_falls_and_stays_under_the_bound(method):
    W = weight(48, 32, seed=4, decay=0.85)  # legs (8, 4) -> (8, 6)
    useful = useful_rank(W.shape, method)
    errors, params = [], []
    for r in sorted({1, 2, 3, max(1, useful // 2), useful}):
        res = layer_spectra(W, method, value=r)
        errors.append(res.rel_error)
        params.append(res.params)
        assert res.rel_error <= res.bound * (1 + 1e-9) + 1e-12
        for b in res.bonds:
            assert 1 <= b.kept <= b.full and res.ranks[b.bond] == b.kept
    assert all(a >= b - 1e-12 for a, b in zip(errors, errors[1:])), errors
    assert all(a <= b for a, b in zip(params, params[1:])), params
    assert errors[0] > 1e-3 and errors[-1] < 1e-10  # rank 1 loses, the useful rank is exact


@pytest.mark.parametrize("method", ["mpo", "tr", "tucker", "svd"])
def test_useful_rank_is_where_truncation_stops(method):
    W = weight(48, 32, seed=5, decay=0.95)
    u = useful_rank(W.shape, method)
    exact = layer_spectra(W, method, value=u)
    assert exact.rel_error < 1e-10
    assert all(b.kept == b.full or b.note for b in exact.bonds if method != "tr") or method == "tr"
    below = layer_spectra(W, method, value=u - 1)
    assert below.rel_error > 1e-8 and below.params < exact.params
    assert layer_spectra(W, method, value=u + 5).params == exact.params


@pytest.mark.parametrize("method", ["mpo", "tr", "tucker", "svd"])
@pytest.mark.parametrize("rtol", [0.05, 0.3])
def test_error_setting_keeps_the_error_within_it(method, rtol):
    W = weight(48, 32, seed=6, decay=0.8)
    res = layer_spectra(W, method, setting="rtol", value=rtol)
    assert res.rel_error <= rtol * (1 + 1e-9)
    assert res.setting == "rtol" and res.value == rtol
    if method == "svd":  # one SVD: the rank is the smallest that meets the error
        assert res.ranks["r"] == rank_for_error(res.bonds[0].values, rtol)


def test_cp_reports_component_weights_and_no_bound():
    W = weight(12, 10, seed=7)
    res = layer_spectra(W, "cp", value=3)
    (bond,) = res.bonds
    assert bond.bond == "r" and bond.kept == 3 == bond.full and bond.discarded is None
    assert res.bound is None and "CP component weights" in bond.note
    assert any("CP-ALS" in n for n in res.notes)
    assert list(bond.values) == sorted(bond.values, reverse=True)
    approx = torch.tensor(res.params)  # parameters of a CP network: rank · sum of leg sizes
    in_dims, out_dims = default_legs((12, 10))
    assert int(approx) == 3 * (sum(in_dims) + sum(out_dims))


def test_useful_ranks_of_known_shapes():
    # 48x32 -> legs (8, 4) / (8, 6): cores (8·8) and (6·4)
    assert default_legs((48, 32)) == ((8, 4), (8, 6))
    assert useful_rank((48, 32), "mpo") == min(64, 24)
    assert useful_rank((48, 32), "tr") == 6  # the first SVD holds at most 24 = 4 x 6
    assert useful_rank((48, 32), "tucker") == 8
    assert useful_rank((48, 32), "svd") == useful_rank((48, 32), "cp") == 32
    assert useful_rank((384, 384), "mpo", (8, 8, 6), (8, 8, 6)) == 64
    with pytest.raises(DecompositionError, match="at least 2 cores"):
        useful_rank((16, 12), "tr")  # a single leg per side cannot make a ring
    assert list(not_applicable((16, 12))) == ["tr"] and not not_applicable((48, 32))
    with pytest.raises(DecompositionError, match="multiply to in_features"):
        useful_rank((48, 32), "mpo", (5, 5), (8, 6))


def test_conv_kernel_keeps_named_legs():
    K = torch.randn(6, 3, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert default_legs(K.shape) == ((3, 3, 3), (6,))
    res = layer_spectra(K, "tucker", value=2, name="conv1.weight")
    assert set(res.network.inputs) == {"cin", "kh", "kw"} and res.network.outputs == ("cout",)
    assert res.network.name == "TUCKER of conv1.weight"
    assert res.weight_shape == (6, 3, 3, 3)


def test_table_rows_and_json_ready_values():
    W = weight(16, 12)
    res = layer_spectra(W, "tucker", value=2)
    rows = res.table()
    assert [r["bond"] for r in rows] == list(res.ranks)
    for row, b in zip(rows, res.bonds):
        assert row["kept"] == b.kept and row["values"] == b.full
        assert row["max entropy log(n)"] == pytest.approx(math.log(b.full))
        assert 0 <= row["entropy (nats)"] <= row["max entropy log(n)"] + 1e-12


# ---------------------------------------------------------------------- trade-off
def test_sweep_ranks():
    assert sweep_ranks(1) == [1]
    assert sweep_ranks(8) == [1, 2, 4, 8]
    assert sweep_ranks(12) == [1, 2, 4, 8, 12]
    assert sweep_ranks(300, limit=64) == [1, 2, 4, 8, 16, 32, 64]


def test_layer_tradeoff_leaves_out_methods_that_cannot_apply():
    W = weight(16, 12, seed=12)  # single legs: no ring
    points, front = layer_tradeoff(W, methods=("tr", "svd"), rank_limit=4)
    assert {p.method for p in points} == {"svd"} and front
    with pytest.raises(DecompositionError, match="no chosen method applies"):
        layer_tradeoff(W, methods=("tr",))


def test_layer_tradeoff_points_match_direct_svd_and_front_is_undominated():
    W = weight(24, 16, seed=8)
    points, front = layer_tradeoff(W, methods=("svd", "tucker", "mpo"), rank_limit=8)
    s = np.linalg.svd(W.numpy(), compute_uv=False)
    norm = float(np.linalg.norm(W.numpy()))
    svd_pts = [p for p in points if p.method == "svd"]
    assert [p.rank for p in svd_pts] == [1, 2, 4, 8]
    for p in svd_pts:
        assert p.rel_error == pytest.approx(math.sqrt(float(np.sum(s[p.rank:] ** 2))) / norm, rel=1e-9)
    assert front and all(any(f is p for p in points) for f in front)
    for f in front:  # nothing beats a front point on both counts
        assert not any(p.params <= f.params and p.rel_error < f.rel_error for p in points)
    for p in points:  # and every point is matched or beaten by the front
        assert any(f.params <= p.params and f.rel_error <= p.rel_error for f in front)


# ---------------------------------------------------------------------- charts
def test_spectra_chart_draws_the_cut_after_the_kept_values():
    W = weight(16, 12, seed=9)
    res = layer_spectra(W, "tucker", value=3, in_dims=(3, 4), out_dims=(4, 4))
    fig = spectra_chart(res)
    cuts = [b for b in res.bonds if b.kept < b.full]
    assert [s.x0 for s in fig.layout.shapes] == [b.kept + 0.5 for b in cuts]
    kept = [t for t in fig.data if "kept" in t.name]
    assert [len(t.y) for t in kept] == [b.kept for b in res.bonds]
    assert all(fig.layout[f"yaxis{'' if k == 0 else k + 1}"].type == "log" for k in range(len(res.bonds)))
    assert len(fig.layout.annotations) == len(res.bonds)  # one title per bond


def test_tradeoff_and_sensitivity_charts():
    W = weight(16, 12, seed=10)
    points, front = layer_tradeoff(W, methods=("svd", "mpo"), rank_limit=4)
    cur = layer_spectra(W, "svd", value=2)
    fig = tradeoff_chart(points, front, current=("svd", cur.params, cur.rel_error), dense_params=cur.dense_params)
    names = [t.name for t in fig.data]
    assert "Pareto front" in names and "current: low-rank SVD" in names
    star = fig.data[names.index("current: low-rank SVD")]
    assert list(star.x) == [cur.params] and list(star.y) == [pytest.approx(cur.rel_error)]
    rows = [LayerRow("a", "Linear", (4, 4), 16, 8, 0.5, 0.5), LayerRow("b", "Linear", (4, 4), 16, 8, 0.1, 0.1),
            LayerRow("c", "Linear", (4, 4), 16, None, None, None, error="x")]
    bars = sensitivity_chart(rows).data[0]
    assert list(bars.y) == ["b", "a"] and list(bars.x) == [0.1, 0.5]


def test_import_is_light():
    code = ("import sys, tnviz.decompose.spectra, tnviz.render.spectra_charts; "
            "print([m for m in ('torch', 'plotly', 'streamlit', 'graphviz') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------- slicing one exact decomposition
@pytest.mark.parametrize("method", ["svd", "tucker"])
def test_cut_of_the_exact_decomposition_equals_a_fresh_truncation(method):
    W = weight(48, 32, seed=11, decay=0.85)
    exact = exact_decomposition(W, method, name="fc")
    assert exact.rel_error < 1e-12 and exact.network.name == f"{method.upper()} of fc"
    for setting, value in [("rank", 1), ("rank", 3), ("rank", 7), ("rank", 100), ("rtol", 0.03), ("rtol", 0.25)]:
        sliced = cut(exact, W, setting, value)
        fresh = layer_spectra(W, method, setting=setting, value=value)
        assert dict(sliced.ranks) == dict(fresh.ranks), (setting, value)
        assert sliced.params == fresh.params
        assert sliced.rel_error == pytest.approx(fresh.rel_error, rel=1e-9, abs=1e-12)
        assert sliced.bound == pytest.approx(fresh.bound, rel=1e-9, abs=1e-12)
        for a, b in zip(sliced.bonds, fresh.bonds):
            np.testing.assert_allclose(a.values, b.values, rtol=1e-10, atol=1e-13)
            assert a.kept == b.kept
    with pytest.raises(RankError, match="slicing"):
        exact_decomposition(W, "mpo")


def test_cut_of_a_conv_kernel_svd():
    K = torch.randn(8, 3, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    exact = exact_decomposition(K, "svd")
    sliced = cut(exact, K, "rank", 4)
    s = np.linalg.svd(K.reshape(8, 27).numpy(), compute_uv=False)
    assert sliced.rel_error == pytest.approx(math.sqrt(float(np.sum(s[4:] ** 2))) / np.linalg.norm(s), rel=1e-9)
    assert sliced.network.sizes["r"] == 4 and set(sliced.network.inputs) == {"cin", "kh", "kw"}


def test_module_doctests():
    import doctest

    import tnviz.render.spectra_charts
    import tnviz.decompose.spectra

    for module in (tnviz.decompose.spectra, tnviz.render.spectra_charts):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_a_row_whose_network_saves_nothing_says_so_and_counts_as_dense():
    """(issue 13 item 7) the model-wide table showed an embedding at "1.00x" while its parameters went
    up (11,720,448 -> 11,720,548): a network that saves nothing has no compression and stays dense."""
    from tnviz.model.io import Candidate
    from tnviz.decompose.spectra import LayerRow

    cand = Candidate("embeddings.word_embeddings.weight", (30522, 384), "Embedding", 11_720_448)
    row = LayerRow(cand.name, cand.kind, cand.shape, cand.params, 11_720_548, 0.1, 0.1)
    assert not row.saves and row.compression is None and row.kept_params == 11_720_448
    assert row.as_dict()["message"].startswith("no saving: the network would hold 11,720,548 parameters")
    saving = LayerRow(cand.name, cand.kind, cand.shape, cand.params, 1_000_000, 0.1, 0.1)
    assert saving.saves and saving.compression == pytest.approx(11.720448) and saving.as_dict()["message"] == ""

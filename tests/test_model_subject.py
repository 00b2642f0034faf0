"""Subjects: what a user brings, opened with its calibration inputs, its metric and its tensors."""
from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from tnviz.errors import TnvizError
from tnviz.model.apply import apply_plan
from tnviz.model.data import sentences
from tnviz.model.plan import Rule, make_plan
from tnviz.model.subject import METRICS, demo_subject, has_architecture, hf_subject, open_subject

pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


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
    folder = tmp_path / "bert"
    _tiny_bert_folder(folder)
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
    # an encoder on real sentences: the held-out sentences' top-5 neighbours beside the output cosine
    assert subject.neighbours and subject.measure_original()["top-5 neighbours"] == 1.0
    measured = subject.measure(result.model)
    assert 0.0 <= measured["top-5 neighbours"] <= 1.0 and "output cosine" in measured


def test_hf_upload_with_a_foreign_tokenizer_falls_back_to_random_ids_and_says_why(tmp_path):
    folder = tmp_path / "bert"
    _tiny_bert_folder(folder, vocab_size=3)  # the tokenizer's ids go far beyond this vocabulary
    _word_tokenizer(["the", "a", "of", "and", "to"], folder / "tokenizer.json")
    subject = hf_subject(folder, "cpu")
    assert "beyond the config's vocab_size=3" in subject.inputs
    assert int(subject.calibration[0]["input_ids"].max()) < 3
    (folder / "tokenizer.json").write_text("{not json")
    assert "could not be read" in hf_subject(folder, "cpu").inputs


def test_calibration_statistics_are_collected_once_and_reused_bit_for_bit(monkeypatch):
    """(issue 16) a subject's statistics are computed once per layer and device; a later plan asking
    for the same layers gets the very same tensors, and a fresh collection gives equal ones."""
    import tnviz.model.apply as apply_module

    subject = demo_subject("digits-mlp", "cpu")
    calls = []
    real = apply_module.calibration_stats
    monkeypatch.setattr(apply_module, "calibration_stats",
                        lambda model, batches, names, device=None: calls.append(list(names)) or real(model, batches, names, device))
    first = subject.input_stats(["fc1", "fc2"])
    again = subject.input_stats(["fc2", "fc1"])
    more = subject.input_stats(["fc1", "fc2", "fc3"])
    assert calls == [["fc1", "fc2"], ["fc3"]]  # nothing collected twice
    assert again["fc1"] is first["fc1"] and more["fc2"] is first["fc2"]
    fresh = real(subject.model, subject.calibration, ["fc1"], "cpu")["fc1"]
    assert torch.equal(fresh.second_moment, first["fc1"].second_moment)


def test_open_subject_takes_every_kind_of_input(tmp_path):
    from safetensors.torch import save_file

    mlp = open_subject("digits-mlp", "cpu")
    assert mlp.kind == "digits" and mlp.metric == "accuracy" and mlp.has_model
    assert open_subject(mlp) is mlp
    path = tmp_path / "w.safetensors"
    save_file({"fc.weight": torch.randn(8, 8), "fc.bias": torch.zeros(8)}, str(path))
    with open_subject(path) as weights_only:
        assert weights_only.kind == "weights" and weights_only.model is None and weights_only.metric is None
        assert weights_only.source.names == ["fc.bias", "fc.weight"]
        with pytest.raises(TnvizError, match="holds weights only"):
            weights_only.measure(torch.nn.Linear(8, 8))
    model = open_subject(torch.nn.Linear(4, 4))
    assert model.kind == "model" and model.metric is None and model.source.names == ["weight", "bias"]
    assert has_architecture("minilm") and has_architecture(tmp_path) and not has_architecture(path)
    with pytest.raises(TnvizError, match="a demo name, a Hugging Face folder or zip, or a weights file"):
        open_subject(42)
    assert set(METRICS) == {"digits", "sentences", "outputs", "causal"}


def test_better_follows_the_direction_of_each_metric():
    subject = demo_subject("digits-mlp", "cpu")
    assert subject.better({"accuracy": 0.9}, {"accuracy": 0.8})
    assert not subject.better({"accuracy": 0.8}, {"accuracy": 0.8})

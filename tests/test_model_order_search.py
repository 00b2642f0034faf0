"""order_search=True through the pipeline and the compressed folder (tnviz.model.permute, folder, compress)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

import tnviz
from tnviz.errors import ModelFileError
from tnviz.model.demos import digits_cache_path, digits_model
from tnviz.model.folder import load_compressed, load_into
from tnviz.model.plan import Rule

pytestmark = pytest.mark.one_torch_thread

# legs with three output legs, so that a data-aware MPO (inputs on the last core) has a bond between
# output legs for the order to matter: fc1 256x64, fc2 256x256
RULES = [Rule(r"fc1$", "mpo", {"ratio": 4.0}, (4, 4, 4), (4, 8, 8)),
         Rule(r"fc2$", "mpo", {"ratio": 4.0}, (4, 8, 8), (4, 8, 8))]
X = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    out = tmp_path_factory.mktemp("order") / "out"
    result = tnviz.compress("digits-mlp", out, rules=RULES, device="cpu", order_search=True)
    return out, result


def _outputs(model):
    with torch.no_grad():
        return model(X)


def test_the_search_permutes_both_pairs_and_the_permuted_model_is_compressed(searched):
    out, result = searched
    perms = result.applied.permutations
    assert [p.pair for p in perms] == ["fc1", "fc2"]
    assert all(sorted(p.perm) == list(range(256)) for p in perms)
    assert all(p.error_after <= p.error_before for p in perms)
    assert any(list(p.perm) != list(range(256)) for p in perms)  # it did re-order something
    assert perms[0].tensors == {"fc1.weight": 0, "fc1.bias": 0, "fc2.weight": 1}
    doc = json.loads((out / "tnviz.json").read_text())
    assert doc["settings"]["order_search"] is True
    assert [p["perm"] for p in doc["permutations"]] == [list(p.perm) for p in perms]


def test_the_loaded_folder_matches_the_permuted_model(searched):
    out, result = searched
    expected = _outputs(result.model)
    for loaded in (load_compressed(out, into=digits_model("mlp")), load_into(digits_model("mlp"), out)):
        assert torch.allclose(_outputs(loaded), expected, atol=1e-5, rtol=0)
    dense = digits_model("mlp")  # the dense state_dict of the folder, in the searched order throughout
    dense.load_state_dict(load_compressed(out).state_dict())
    assert torch.allclose(_outputs(dense.eval()), expected, atol=1e-5, rtol=0)


def test_every_dense_tensor_is_stored_bit_for_bit_in_the_input_order(searched):
    out, result = searched
    doc = json.loads((out / "tnviz.json").read_text())
    assert doc["changed"] == []
    compressed = {layer["name"] for layer in doc["layers"]}
    with safe_open(str(digits_cache_path("mlp")), "pt") as src, safe_open(str(out / "model.safetensors"), "pt") as dst:
        names = list(src.keys())
        assert set(doc["untouched"]) | compressed == set(names)
        for name in doc["untouched"]:  # fc1.bias and fc2.weight's... every dense one as the input had it
            assert torch.equal(dst.get_tensor(name), src.get_tensor(name)), name


def test_without_the_search_nothing_changes_in_the_manifest(tmp_path):
    result = tnviz.compress("digits-mlp", tmp_path / "plain", rules=RULES, device="cpu")
    doc = json.loads((tmp_path / "plain" / "tnviz.json").read_text())
    assert "permutations" not in doc and "order_search" not in doc["settings"]
    assert result.applied.permutations == []


def test_a_dense_export_is_in_the_input_order(searched, tmp_path):
    _, result = searched
    folder = result.write_dense(tmp_path / "dense")
    model = digits_model("mlp")
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        model.load_state_dict({k: fh.get_tensor(k) for k in fh.keys()})
    assert torch.allclose(_outputs(model.eval()), _outputs(result.model), atol=1e-5, rtol=0)


@pytest.mark.parametrize("edit, message", [
    (lambda p: p.update(perm=p["perm"][:128]), "each of the 256 indices once; got 128 entries"),
    (lambda p: p.update(perm=[0] + p["perm"][1:] if p["perm"][0] != 0 else [1] + p["perm"][1:]),
     "exactly once; . is repeated"),
    (lambda p: p.update(hidden=-3), "positive integer 'hidden'; got -3"),
    (lambda p: p["tensors"].update({"fc3.weight": 0}), "'fc3.weight' of shape \\(10, 256\\) must have 256 entries along axis 0"),
    (lambda p: p["tensors"].update({"nope.weight": 0}), "must name tensors of the folder; 'nope.weight' is not one"),
])
def test_a_bad_permutation_in_the_manifest_is_refused(searched, tmp_path, edit, message):
    import shutil

    out, _ = searched
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    doc = json.loads((bad / "tnviz.json").read_text())
    edit(doc["permutations"][0])
    (bad / "tnviz.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match=message):
        load_compressed(bad)


def test_weights_only_input_refuses_the_search(tmp_path):
    from safetensors.torch import save_file

    save_file({"fc.weight": torch.randn(8, 8)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(tnviz.TnvizError, match="order search needs a model with an architecture"):
        tnviz.compress(tmp_path / "w.safetensors", max_rank=2, order_search=True)


def test_the_cli_flag_writes_the_library_bytes(searched, tmp_path):
    out, _ = searched
    lib = tmp_path / "lib"
    tnviz.compress("digits-mlp", lib, layers="fc[12]$", ratio=8, device="cpu", order_search=True)
    cli = subprocess.run([sys.executable, "-m", "tnviz.cli", "compress", "digits-mlp", "--layers", "fc[12]$",
                          "--ratio", "8", "--device", "cpu", "--order-search", "-o", str(tmp_path / "cli")],
                         capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert cli.returncode == 0, cli.stderr
    assert "neuron order of fc1" in cli.stdout
    for name in ("model.safetensors", "tnviz.json"):
        assert (lib / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name


@pytest.mark.parametrize("kind", ["mistral", "gpt2"])
def test_a_tiny_hf_model_round_trips_with_its_permutations(kind, tmp_path):
    """Data-aware, the MLP input weights with three output legs so the search applies: Mistral's gate and
    up projections share one order; GPT-2's Conv1D weights are re-ordered along their stored axes."""
    transformers = pytest.importorskip("transformers")
    from tests.test_model_llm import IDS, build, logits

    original, state = build(kind, tmp_path / kind)
    legs = ((2, 4, 4), (4, 4, 8)) if kind == "gpt2" else ((2, 4, 4), (4, 4, 4))
    rules = [Rule(r"mlp\.(c_fc|gate_proj|up_proj)$", "mpo", {"ratio": 1.5}, *legs),
             Rule(r"mlp\.(c_proj|down_proj)$", "svd", {"ratio": 1.5})]
    result = tnviz.compress(tmp_path / kind, tmp_path / "out", rules=rules, device="cpu", order_search=True)
    assert result.data_aware and len(result.applied.permutations) == 2
    assert any(list(p.perm) != sorted(p.perm) for p in result.applied.permutations)
    doc = json.loads((tmp_path / "out" / "tnviz.json").read_text())
    first = doc["permutations"][0]["tensors"]
    if kind == "gpt2":
        assert first == {"transformer.h.0.mlp.c_fc.weight": 1, "transformer.h.0.mlp.c_fc.bias": 0,
                         "transformer.h.0.mlp.c_proj.weight": 0}
    else:
        assert set(first) == {f"model.layers.0.mlp.{m}.weight" for m in ("gate_proj", "up_proj", "down_proj")}
    config = transformers.AutoConfig.from_pretrained(tmp_path / kind)
    expected = logits(result.model, IDS)
    dense = transformers.AutoModelForCausalLM.from_config(config).eval()  # the folder's dense state_dict
    dense.load_state_dict(load_compressed(tmp_path / "out").state_dict(), strict=False)  # (a tied lm_head: wte's)
    assert torch.allclose(logits(dense, IDS), expected, atol=1e-5)
    if not config.tie_word_embeddings:  # into= refuses a tied lm_head whose embedding stays dense (not this test)
        loaded = load_compressed(tmp_path / "out", into=transformers.AutoModelForCausalLM.from_config(config))
        assert torch.allclose(logits(loaded, IDS), expected, atol=1e-5)
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as fh:  # every dense tensor bit for bit
        for name in doc["untouched"]:
            assert torch.equal(fh.get_tensor(name), state[name]), name
    assert set(doc["untouched"]) | {layer["name"] for layer in doc["layers"]} == set(state)

"""Hugging Face folders as models: built without remote code, and every config checked against the
weights before anything is allocated (a 14 KB zip must not exhaust the machine)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from tnviz.errors import ModelFileError
from tnviz.model.hf import build_hf_model, check_config, load_hf_model
from tnviz.model.io import open_weights, save_safetensors

pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


def _tiny_bert_folder(folder: Path, **changes) -> tuple[dict, dict]:
    from tnviz.model.bert import Bert

    config = {"model_type": "bert", "vocab_size": 40, "hidden_size": 8, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 20}
    torch.manual_seed(1)
    model = Bert(config)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    save_safetensors(model.state_dict(), folder / "model.safetensors")
    return config, model.state_dict()


def _zip_folder(folder: Path, target: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for file in folder.iterdir():
            archive.write(file, prefix + file.name)
    return target


def test_hf_folder_builds_a_working_model(tmp_path):
    from tnviz.model.bert import Bert

    config, state = _tiny_bert_folder(tmp_path / "bert")
    reference = Bert(config).eval()
    reference.load_state_dict(state)
    ids = torch.tensor([[2, 7, 9, 3], [2, 5, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    with open_weights(_zip_folder(tmp_path / "bert", tmp_path / "bert.zip")) as weights:
        built = build_hf_model(weights, device="cpu")
    assert torch.equal(built(ids, mask), reference(ids, mask))
    assert all(isinstance(built.get_submodule(n), nn.Linear) for n in ("encoder.layer.0.intermediate.dense",
                                                                      "encoder.layer.0.attention.self.query"))



@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers not installed")
def test_non_bert_hf_folder_is_built_by_transformers_without_remote_code(tmp_path):
    import transformers

    from tnviz.model.io import open_weights

    config = transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=32, vocab_size=50)
    torch.manual_seed(0)
    original = transformers.GPT2LMHeadModel(config).eval()
    original.save_pretrained(tmp_path / "gpt2", safe_serialization=True)
    ids = torch.tensor([[1, 5, 7, 9]])
    with open_weights(tmp_path / "gpt2") as weights:
        assert weights.config["model_type"] == "gpt2"
        built = build_hf_model(weights, device="cpu")
    with torch.no_grad():
        expected = original(ids).logits  # a GPT2LMHeadModel checkpoint builds the causal LM, head included
        got = built(ids).logits
    assert torch.equal(got, expected)
    (tmp_path / "gpt2" / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with open_weights(tmp_path / "gpt2") as weights, pytest.raises(ModelFileError, match="without remote code"):
        build_hf_model(weights)


@pytest.mark.parametrize("changes,message", [
    ({"num_hidden_layers": 10**6}, "asks for 1,000,000 but model.safetensors holds weights for 1 numbered layer"),
    ({"vocab_size": 10**9}, "must have shape \\(1000000000, 8\\)"),
    ({"intermediate_size": 10**7}, "must have shape"),
    ({"auto_map": {"AutoModel": "evil.Model"}}, "sets 'auto_map'"),
    ({"trust_remote_code": True}, "sets 'trust_remote_code'"),
    ({"num_hidden_layers": "2"}, "must be a non-negative integer"),
])
def test_a_config_that_does_not_fit_its_weights_is_refused_before_building(changes, message, tmp_path):
    """(issue 15 item 4) checked against the weights' names and shapes on the meta device."""
    _tiny_bert_folder(tmp_path / "bert", **changes)
    with open_weights(tmp_path / "bert") as weights, pytest.raises(ModelFileError, match=message):
        load_hf_model(weights, "cpu")


_PEAK = """
import sys, resource
from tnviz.errors import TnvizError
from tnviz.model.subject import open_subject
try:
    open_subject(sys.argv[1], "cpu")
except TnvizError as exc:
    print("refused:", exc)
print("peak_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def _peak_mb(target: Path, temp: Path) -> tuple[int, str]:
    out = subprocess.run([sys.executable, "-c", _PEAK, str(target)], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "TMPDIR": str(temp)})
    assert "peak_mb" in out.stdout, out.stdout + out.stderr
    return int(out.stdout.split("peak_mb")[1]), out.stdout


@pytest.mark.parametrize("changes", [{"num_hidden_layers": 10**6}, {"vocab_size": 10**9}])
def test_a_hostile_zip_is_refused_without_a_large_allocation_and_leaves_nothing(changes, tmp_path):
    _tiny_bert_folder(tmp_path / "bert", **changes)
    archive = _zip_folder(tmp_path / "bert", tmp_path / "evil.zip", "evil/")
    _tiny_bert_folder(tmp_path / "good")
    honest = _zip_folder(tmp_path / "good", tmp_path / "good.zip", "good/")
    temp = tmp_path / "tmp"
    temp.mkdir()
    # the same imports and steps on an honest zip of the same size: what the libraries themselves
    # take (torch and transformers: 0.4-1.7 GB by version), against which the refusal is measured
    baseline, said = _peak_mb(honest, temp)
    assert "refused:" not in said, said
    peak, said = _peak_mb(archive, temp)
    assert "refused:" in said, said
    # a 10**9 x 8 table would be 32 GB, a million layers of the tiny BERT several GB
    assert peak < baseline + 300, f"peak RSS {peak} MB against {baseline} MB for an honest zip"
    assert [p.name for p in temp.iterdir() if p.name.startswith("tnviz")] == []  # the extracted zips are removed
    cli = subprocess.run([sys.executable, "-m", "tnviz.cli", "compress", str(archive), "--ratio", "2", "-o",
                          str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1 and "Traceback" not in cli.stderr
    assert not (tmp_path / "o").exists()


def test_check_config_counts_the_layers_the_weights_hold(tmp_path):
    _tiny_bert_folder(tmp_path / "bert", num_hidden_layers=1)
    with open_weights(tmp_path / "bert") as weights:
        check_config(weights.config, weights)  # fits
        with pytest.raises(ModelFileError, match="asks for 3"):
            check_config({**weights.config, "n_layer": 3}, weights)

"""The compressed folder: one writer (atomic, refusing to overwrite anything but an earlier output,
never the input) and one reader (that checks the manifest against the file before trusting either)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from tnviz.errors import BudgetError, ModelFileError
from tnviz.model.compress import compress
from tnviz.model.folder import Item, load_compressed, load_into, write_folder, write_safetensors_streamed, zip_folder

pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


@pytest.fixture
def weights(tmp_path):
    g = torch.Generator().manual_seed(0)
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / "model.safetensors"
    save_file({"fc1.weight": torch.randn(32, 48, generator=g), "fc1.bias": torch.randn(32, generator=g),
               "fc2.weight": torch.randn(16, 32, generator=g)}, str(path))
    return path


def test_streamed_writer_matches_safetensors(tmp_path):
    t = {"a": torch.randn(3, 5), "b": torch.arange(7, dtype=torch.int32), "c": torch.randn(2, 2).to(torch.bfloat16)}
    info = write_safetensors_streamed(tmp_path / "s.safetensors",
                                      [(k, str(v.dtype).removeprefix("torch."), tuple(v.shape), (lambda v=v: v))
                                       for k, v in t.items()])
    with safe_open(str(tmp_path / "s.safetensors"), framework="pt") as fh:
        for k, v in t.items():
            assert torch.equal(fh.get_tensor(k), v)
    assert info["bytes"] == (tmp_path / "s.safetensors").stat().st_size
    import hashlib

    assert info["sha256"] == hashlib.sha256((tmp_path / "s.safetensors").read_bytes()).hexdigest()


# ---------------------------------------------------------------------- never lose what the user had
def test_the_output_may_not_overwrite_the_input_or_other_files(weights, tmp_path):
    """(issue 15 item 1) ``-o`` of the input's own folder, of a folder with other files, or of an
    earlier output without --overwrite is refused, and nothing changes."""
    before = weights.read_bytes()
    for overwrite in (False, True):
        with pytest.raises(ModelFileError, match="must not hold, be or lie inside the input"):
            compress(weights, weights.parent, max_rank=2, overwrite=overwrite)
    assert weights.read_bytes() == before and sorted(p.name for p in weights.parent.iterdir()) == ["model.safetensors"]
    other = tmp_path / "documents"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(ModelFileError, match="holds other files"):
            compress(weights, other, max_rank=2, overwrite=overwrite)
    assert (other / "notes.txt").read_text() == "mine" and len(list(other.iterdir())) == 1
    out = tmp_path / "out"
    compress(weights, out, max_rank=2)
    first = (out / "model.safetensors").read_bytes()
    with pytest.raises(ModelFileError, match="pass --overwrite"):
        compress(weights, out, max_rank=4)
    assert (out / "model.safetensors").read_bytes() == first
    compress(weights, out, max_rank=4, overwrite=True)
    assert (out / "model.safetensors").read_bytes() != first
    assert load_compressed(out).report["layers"][0]["ranks"] != {}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left
    empty = tmp_path / "empty"
    empty.mkdir()
    compress(weights, empty, max_rank=2)  # an empty folder is fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelFileError, match="is a file"):
        compress(weights, tmp_path / "file", max_rank=2)


def test_a_hugging_face_folder_is_not_an_output(tmp_path):
    from tnviz.model.bert import Bert
    from tnviz.model.io import save_safetensors

    config = {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 32, "vocab_size": 40, "max_position_embeddings": 16}
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    save_safetensors(Bert(config).state_dict(), folder / "model.safetensors")
    before = (folder / "model.safetensors").read_bytes()
    with pytest.raises(ModelFileError, match="must not hold, be or lie inside the input"):
        compress(folder, folder, max_rank=2, overwrite=True)
    compress(folder, folder / "out", max_rank=2)  # a new folder beside the input's files is fine
    assert (folder / "model.safetensors").read_bytes() == before and (folder / "config.json").is_file()


_KILL_SCRIPT = """
import sys, tnviz, torch
torch.set_num_threads(1)
tnviz.compress(sys.argv[1], sys.argv[2], max_rank=int(sys.argv[3]), overwrite=True, device="cpu")
"""


def test_a_killed_rewrite_leaves_the_old_output_or_the_new_one_never_a_mix(tmp_path):
    """(issue 15 item 2) SIGKILL at random points of a rewrite into a folder holding an earlier
    output: the folder is always one of the two valid outputs, and the next run cleans up."""
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "in.safetensors"
    save_file({f"l{k}.weight": torch.randn(96, 96, generator=g) for k in range(6)}, str(path))
    old_ref, new_ref = tmp_path / "old", tmp_path / "new"
    for ref, rank in ((old_ref, 2), (new_ref, 5)):
        compress(path, ref, max_rank=rank, device="cpu")
    valid = {(ref / "model.safetensors").read_bytes(): ref.name for ref in (old_ref, new_ref)}
    target = tmp_path / "target"
    rng = random.Random(0)
    seen = set()
    for trial in range(6):
        if target.exists():
            import shutil

            shutil.rmtree(target)
        compress(path, target, max_rank=2, device="cpu")  # the earlier output
        proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(path), str(target), "5"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        back = load_compressed(target)  # always loads: one of the two, verified by its checksum
        state = valid.get((target / "model.safetensors").read_bytes())
        assert state is not None, f"trial {trial}: the folder is neither output"
        assert back.report["layers"][0]["ranks"] == json.loads((tmp_path / state / "tnviz.json").read_text())["layers"][0]["ranks"]
        seen.add(state)
    compress(path, target, max_rank=5, overwrite=True, device="cpu")  # the next run removes what killed runs left
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".target.")] == []
    print(f"killed rewrites left: {sorted(seen)}")


# ---------------------------------------------------------------------- the reader trusts nothing
def _good(weights, tmp_path) -> Path:
    out = tmp_path / "good"
    compress(weights, out, max_rank=3)
    return out


def _edit(folder: Path, change) -> None:
    doc = json.loads((folder / "tnviz.json").read_text())
    change(doc)
    (folder / "tnviz.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("change,message", [
    (lambda d: d["layers"][0].__setitem__("shape", [1 << 20, 1 << 20]), "its shape .* needs"),
    (lambda d: d["layers"][0].__setitem__("shape", [32, -48]), "shape of 2 or 4 positive integers"),
    (lambda d: d["layers"][0].__setitem__("dtype", "int8"), "must have a float dtype"),
    (lambda d: d["layers"][0].__setitem__("dtype", "float64"), "factor .* must be float64"),
    (lambda d: d["layers"][0]["network"].__setitem__("version", 9), "tnviz.json layer 'fc1.weight' must hold a valid network"),
    (lambda d: d["layers"][0]["network"]["sizes"].__setitem__("b1", 7), "factor .* must be float32"),
    (lambda d: d["untouched"].append("ghost"), "missing \\['ghost'\\]"),
    (lambda d: d["untouched"].remove("fc1.bias"), "also has \\['fc1.bias'\\]"),
    (lambda d: d.__setitem__("layers", "all"), "must list 'layers'"),
    (lambda d: d.__setitem__("version", 99), "must be version 1 or 2"),
])
def test_a_manifest_that_disagrees_with_its_tensors_is_refused_with_the_reason(change, message, weights, tmp_path):
    """(issue 15 item 3) crafted or stale manifests are refused before anything is allocated, and a
    fault in tnviz.json is reported as one."""
    folder = _good(weights, tmp_path)
    _edit(folder, change)
    with pytest.raises(ModelFileError, match=message):
        load_compressed(folder)


def test_a_folder_mixed_from_two_runs_is_refused(weights, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    compress(weights, a, max_rank=3)
    compress(weights, b, max_rank=4)  # same names, other shapes
    c = tmp_path / "c"
    compress(weights, c, max_rank=3)
    data = bytearray((c / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF  # same names and shapes, another value: what a re-run with other data writes
    (a / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="SHA-256"):
        load_compressed(a)
    assert load_compressed(a, verify=False).layers  # (the checksum is what caught it)
    (b / "tnviz.json").write_text((c / "tnviz.json").read_text())
    with pytest.raises(ModelFileError, match="mixed from two runs"):
        load_compressed(b)
    with pytest.raises(ModelFileError, match="tnviz.json must be valid JSON"):
        (c / "tnviz.json").write_text("{")
        load_compressed(c)


def test_a_dense_export_of_an_enormous_weight_is_refused_before_allocating(weights, tmp_path):
    folder = _good(weights, tmp_path)
    back = load_compressed(folder)
    layer = next(iter(back.layers.values()))
    with pytest.raises(BudgetError, match="limited to 100 elements"):
        layer.to_weight(budget=100)
    assert back.state_dict()["fc1.weight"].shape == (32, 48)


def test_zips_of_the_same_folder_are_the_same_bytes(weights, tmp_path):
    folder = _good(weights, tmp_path)
    first = zip_folder(folder)
    time.sleep(1.1)
    os.utime(folder / "tnviz.json")
    assert zip_folder(folder) == first
    with zipfile.ZipFile(BytesIO(first)) as z:
        assert sorted(z.namelist()) == ["model.safetensors", "tnviz.json"]
        # the weights are stored (deflating floats costs seconds for 8%), the manifest deflated; both read back whole
        assert z.getinfo("model.safetensors").compress_type == zipfile.ZIP_STORED
        assert z.getinfo("tnviz.json").compress_type == zipfile.ZIP_DEFLATED
        for name in z.namelist():
            assert z.read(name) == (folder / name).read_bytes()


def test_write_folder_refuses_a_dtype_safetensors_cannot_store(tmp_path):
    with pytest.raises(ModelFileError, match="dtype safetensors stores"):
        write_folder(tmp_path / "o", [Item("x", "complex64", (2,), lambda: torch.zeros(2, dtype=torch.complex64))],
                     {"layers": [], "untouched": ["x"]})
    assert not (tmp_path / "o").exists() and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- loading into a model
def test_embedding_layer_round_trips_into_a_fresh_model(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(64, 16), nn.Linear(16, 4))
    result = compress(model, tmp_path / "e", layers="^0$", max_rank=4, data_aware=False, device="cpu")
    ids = torch.tensor([[1, 5, 63]])
    fresh = nn.Sequential(nn.Embedding(64, 16), nn.Linear(16, 4))
    assert not torch.equal(fresh(ids), result.model(ids))
    load_into(fresh, tmp_path / "e")
    assert torch.equal(fresh(ids), result.model(ids))


def test_load_into_refuses_another_architecture(tmp_path):
    from tnviz.model.subject import demo_subject

    mlp = demo_subject("digits-mlp", "cpu")
    compress(mlp, tmp_path / "o", layers="fc2", max_rank=4, data_aware=False, device="cpu")
    other = nn.Sequential(nn.Linear(64, 10))
    with pytest.raises(ModelFileError, match="must have a module 'fc2'"):
        load_into(other, tmp_path / "o")

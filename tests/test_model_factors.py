"""The factors of a weights-only compression (issue 18): with an output folder they stay on disk
(in the run's journal, then in the written folder) and only their place is held in memory; the
folder is byte for byte the one an in-memory run writes, and it can be written again, zipped and
exported dense after the progress folder is gone."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import tnviz
from tnviz.errors import TnvizError
from tnviz.model.factors import Factors
from tnviz.model.folder import WEIGHTS_FILE, load_compressed
from tnviz.model.io import save_safetensors
from tnviz.model.resume import progress_folder

pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py

LAYERS = r"layers\.[0-9]+\."


def weights_file(path, dtype=torch.float32):
    generator = torch.Generator().manual_seed(3)
    state = {f"layers.{k}.fc.weight": torch.randn(48, 40, generator=generator).to(dtype) for k in range(5)}
    state["layers.0.fc.bias"] = torch.randn(48, generator=generator).to(dtype)
    state["embed.weight"] = torch.randn(10, 8, generator=generator).to(dtype)
    return save_safetensors(state, path)


def test_factors_held_and_on_disk_read_in_the_networks_order_and_the_weights_dtype(tmp_path):
    values = {"U10": torch.randn(3, 2, dtype=torch.float64), "U2": torch.randn(2, 4, dtype=torch.float64)}
    save_file({f"w::{k}": v for k, v in values.items()}, str(tmp_path / "f.safetensors"))
    f = Factors()
    f.hold("a", {"B": torch.ones(2), "A": torch.zeros(3)})
    f.on_disk("w", tmp_path / "f.safetensors", ["U2", "U10"], "float32", prefix="w::")
    assert list(f) == ["a", "w"] and len(f) == 2 and f.on_disk_count == 1 and f.held_count == 1
    assert list(f["a"]) == ["B", "A"]  # as given
    got = f["w"]
    assert list(got) == ["U2", "U10"]  # the network's order, not the file's (sorted) one
    for k in values:
        assert got[k].dtype == torch.float32 and torch.equal(got[k], values[k].to(torch.float32))
    assert f.shapes("w") == {"U2": (2, 4), "U10": (3, 2)} and f.dtype("w") == "float32"
    with pytest.raises(KeyError):
        f["missing"]

    f.forget_files("they were written as dense weights")
    with pytest.raises(TnvizError, match="'w' are no longer on disk: they were written as dense weights"):
        f["w"]
    assert torch.equal(f["a"]["A"], torch.zeros(3))  # those in memory stay
    f.repoint(tmp_path / "f.safetensors", lambda name: f"{name}::")
    assert torch.equal(f["w"]["U2"], values["U2"].to(torch.float32))
    f.repoint(tmp_path / "gone.safetensors", lambda name: "")
    with pytest.raises(TnvizError, match="gone.safetensors.*which is gone"):
        f["w"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_output_run_keeps_no_factors_in_memory_and_writes_the_in_memory_runs_bytes(dtype, tmp_path):
    source = weights_file(tmp_path / "w.safetensors", dtype)
    held = tnviz.compress(source, method="mpo", ratio=3, layers=LAYERS)
    assert held.applied.factors.held_count == 5 and held.applied.factors.on_disk_count == 0
    reference = held.write(tmp_path / "held")

    out = tmp_path / "out"
    result = tnviz.compress(source, out, method="mpo", ratio=3, layers=LAYERS)
    factors = result.applied.factors
    assert factors.held_count == 0 and factors.on_disk_count == 5  # only their place in memory
    assert not progress_folder(out).exists()
    for name in (WEIGHTS_FILE, "tnviz.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name

    # the progress folder is gone: the factors are read from the written folder
    again = result.write(tmp_path / "again")
    assert (again / WEIGHTS_FILE).read_bytes() == (reference / WEIGHTS_FILE).read_bytes()
    assert len(result.zip()) > 0
    dense = result.write_dense(tmp_path / "dense")
    assert (dense / WEIGHTS_FILE).is_file()
    loaded = load_compressed(out)
    for layer in result.layers:
        stored = loaded.layers[layer.weight_name]
        for t, v in factors[layer.weight_name].items():
            assert v.dtype == dtype and torch.equal(v, stored.tensors[t])


def test_after_a_dense_output_the_factors_are_named_as_gone(tmp_path):
    source = weights_file(tmp_path / "w.safetensors")
    result = tnviz.compress(source, tmp_path / "dense", method="svd", max_rank=4, layers=LAYERS, dense=True)
    assert (tmp_path / "dense" / WEIGHTS_FILE).is_file()
    with pytest.raises(TnvizError, match="no longer on disk: the run wrote the dense folder"):
        result.write(tmp_path / "again")

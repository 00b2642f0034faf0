"""tnviz.model.io: safe, lazy reading of weights files and the refusal of everything unsafe or broken."""
from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from tnviz.errors import ModelFileError
from tnviz.model import io
from tnviz.model.io import candidates, open_weights, save_safetensors, sniff


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.norm = nn.LayerNorm(6)
        self.embed = nn.Embedding(10, 6)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


@pytest.fixture()
def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in _Net().state_dict().items()}


def _raises(path: Path, *fragments: str, **kwargs) -> str:
    with pytest.raises(ModelFileError) as info:
        open_weights(path, **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---------------------------------------------------------------------------- round trips


def test_safetensors_round_trip_is_bit_exact(tmp_path, state):
    path = save_safetensors(state, tmp_path / "m.safetensors", metadata={"who": "test"})
    with open_weights(path) as weights:
        assert weights.format == "safetensors"
        assert sorted(weights.names()) == sorted(state)
        assert weights.metadata == {"who": "test"}
        for name, tensor in state.items():
            assert weights.shape(name) == tuple(tensor.shape)
            assert weights.dtype(name) == "float32"
            assert torch.equal(weights.get(name), tensor)
        assert weights.get("fc.weight", dtype=torch.float64).dtype == torch.float64


def test_state_dict_round_trip_zip_legacy_and_nested(tmp_path, state):
    torch.save(state, tmp_path / "a.pt")
    torch.save(state, tmp_path / "b.pth", _use_new_zipfile_serialization=False)
    torch.save({"epoch": 3, "model": state}, tmp_path / "c.bin")
    assert sniff(tmp_path / "a.pt") == "state_dict_zip" and sniff(tmp_path / "b.pth") == "pickle"
    for file, prefix in (("a.pt", ""), ("b.pth", ""), ("c.bin", "model.")):
        with open_weights(tmp_path / file) as weights:
            assert weights.format == "state_dict"
            assert sorted(weights.names()) == sorted(prefix + n for n in state)
            for name, tensor in state.items():
                assert torch.equal(weights.get(prefix + name), tensor)


def test_state_dict_is_loaded_weights_only_and_memory_mapped(tmp_path, state, monkeypatch):
    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    torch.save(state, tmp_path / "a.pt")
    open_weights(tmp_path / "a.pt").close()
    assert calls == [{"map_location": "cpu", "weights_only": True, "mmap": True}]


def test_safetensors_reads_lazily_one_tensor_at_a_time(tmp_path, state, monkeypatch):
    import builtins

    import tnviz.model.readers as readers_module

    path = save_safetensors(state, tmp_path / "m.safetensors")
    weights = open_weights(path)
    reads: list[int] = []

    class Recording:
        """The file a tensor is read from: records how many bytes each read asks for."""

        def __init__(self, fh):
            self.fh = fh

        def readinto(self, view):
            reads.append(len(view))
            return self.fh.readinto(view)

        def __getattr__(self, attr):
            return getattr(self.fh, attr)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(readers_module, "open", lambda *a, **k: Recording(builtins.open(*a, **k)), raising=False)
    weights._handle = None  # a tensor read must not go through the memory map (safe_open's handle)
    found = candidates(weights, pattern="fc|conv")
    shapes = {n: weights.shape(n) for n in weights.names()}
    assert [c.name for c in found] == ["conv.weight", "fc.weight"] and shapes["fc.weight"] == (5, 6)
    assert reads == []  # names, shapes, dtypes and candidates come from the header alone
    got = weights.get("fc.weight")
    assert reads == [state["fc.weight"].numel() * state["fc.weight"].element_size()]  # that tensor's bytes only
    assert torch.equal(got, state["fc.weight"]) and got.dtype == state["fc.weight"].dtype
    weights.close()


def test_safetensors_reads_every_dtype_bit_for_bit(tmp_path):
    tensors = {"f32": torch.randn(3, 4), "bf16": torch.randn(5).to(torch.bfloat16), "f16": torch.randn(2, 2).half(),
               "i64": torch.arange(7), "u8": torch.arange(5, dtype=torch.uint8), "b": torch.tensor([True, False]),
               "empty": torch.zeros(0, 3), "scalar": torch.tensor(2.5, dtype=torch.float64)}
    path = save_safetensors(tensors, tmp_path / "d.safetensors")
    with open_weights(path) as weights:
        for name, t in tensors.items():
            got = weights.get(name)
            assert got.dtype == t.dtype and got.shape == t.shape and torch.equal(got, t), name
    cut = tmp_path / "cut.safetensors"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) - 4])
    with pytest.raises(ModelFileError):
        with open_weights(cut) as weights:
            weights.get("f32")


def test_minilm_file_candidates_without_reading_tensors(monkeypatch):
    from tnviz.model.demos import minilm_dir

    with open_weights(minilm_dir() / "model.safetensors") as weights:
        def no_reads(*args, **kwargs):
            raise AssertionError("a tensor was read")

        monkeypatch.setattr(weights, "get", no_reads)
        weights._handle = None
        found = candidates(weights)
        kinds = {}
        for c in found:
            kinds[c.kind] = kinds.get(c.kind, 0) + 1
        assert kinds == {"Linear": 6 * 6 + 1, "Embedding": 3}
        ffn = candidates(weights, r"intermediate\.dense|output\.dense")
        assert len(ffn) == 6 * 3 and all(c.params == c.shape[0] * c.shape[1] for c in ffn)


def test_candidates_kinds_and_skips(tmp_path, state):
    path = save_safetensors({**state, "pos_ids": torch.arange(6)[None]}, tmp_path / "m.safetensors")
    with open_weights(path) as weights:
        found = {c.name: c.kind for c in candidates(weights)}
    assert found == {"conv.weight": "Conv", "embed.weight": "Embedding", "fc.weight": "Linear"}
    with open_weights(path) as weights, pytest.raises(ModelFileError, match="valid regular expression"):
        candidates(weights, "fc(")


# ---------------------------------------------------------------------------- refusals


def test_refuses_pickled_module(tmp_path):
    torch.save(_Net(), tmp_path / "module.pt")
    _raises(tmp_path / "module.pt", "pickled Python objects", "state_dict")


def test_refuses_torchscript_before_loading(tmp_path, monkeypatch):
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Linear(4, 3))), tmp_path / "script.pt")
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("TorchScript must never be loaded"))
    _raises(tmp_path / "script.pt", "TorchScript", "state_dict")


def test_refuses_pt2_by_extension_and_by_content(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3))
    program = torch.export.export(model, (torch.randn(2, 4),))
    torch.export.save(program, tmp_path / "prog.pt2")
    _raises(tmp_path / "prog.pt2", ".pt2", "torch.export")
    os.rename(tmp_path / "prog.pt2", tmp_path / "renamed.pt")
    assert sniff(tmp_path / "renamed.pt") == "pt2"
    _raises(tmp_path / "renamed.pt", ".pt2")


@pytest.mark.parametrize("fault", ["overlap", "gap", "size", "trailing", "dtype", "header"])
def test_our_safetensors_checks_refuse_what_safe_open_refuses(tmp_path, fault):
    """The header is read and checked by tnviz (read_safetensors_header), not by safe_open's
    memory map: each malformed file below is refused by both, with the rule named."""
    import struct

    from safetensors import safe_open

    tensors = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
               "b": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}}
    data = bytes(32)
    if fault == "overlap":
        tensors["b"]["data_offsets"] = [8, 24]
    elif fault == "gap":
        tensors["b"]["data_offsets"], data = [24, 40], bytes(40)
    elif fault == "size":
        tensors["b"]["shape"] = [5]
    elif fault == "trailing":
        data += b"junk"
    elif fault == "dtype":
        tensors["b"]["dtype"] = "F33"
    header = json.dumps(tensors).encode()
    blob = struct.pack("<Q", len(header) + (10**9 if fault == "header" else 0)) + header + data
    path = tmp_path / f"{fault}.safetensors"
    path.write_bytes(blob)
    with pytest.raises(Exception):
        with safe_open(str(path), framework="pt") as handle:
            [handle.get_tensor(k) for k in handle.keys()]
    # a header length past the end is not recognised as safetensors at all (sniff); the rest are malformed
    _raises(path, *(["truncated or malformed"] if fault != "header" else []), f"{fault}.safetensors")


def test_refuses_truncated_safetensors(tmp_path, state):
    path = save_safetensors(state, tmp_path / "m.safetensors")
    data = path.read_bytes()
    (tmp_path / "half.safetensors").write_bytes(data[: len(data) // 2])
    _raises(tmp_path / "half.safetensors", "truncated or malformed", "half.safetensors")
    # cut inside the header: no longer recognisable as safetensors at all
    (tmp_path / "head.safetensors").write_bytes(data[:20])
    _raises(tmp_path / "head.safetensors", "head.safetensors")


def test_refuses_truncated_state_dict(tmp_path, state):
    torch.save(state, tmp_path / "a.pt")
    data = (tmp_path / "a.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    _raises(tmp_path / "cut.pt", "cut.pt")


@pytest.mark.parametrize("name", ["weights.txt", "model.onnx", "model.h5", "noext"])
def test_refuses_unknown_extensions(tmp_path, state, name):
    path = save_safetensors(state, tmp_path / "m.safetensors")
    os.rename(path, tmp_path / name)
    _raises(tmp_path / name, "must end in one of", ".safetensors", name)


def test_refuses_content_that_contradicts_the_extension(tmp_path, state):
    torch.save(state, tmp_path / "really_a_pickle.safetensors")
    _raises(tmp_path / "really_a_pickle.safetensors", "must contain safetensors data")
    (tmp_path / "random.pt").write_bytes(os.urandom(4096))
    _raises(tmp_path / "random.pt", "none of these")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    _raises(tmp_path / "empty.safetensors", "must not be empty")


def test_refuses_files_without_2d_or_4d_weights(tmp_path):
    path = save_safetensors({"fc.bias": torch.zeros(5), "norm.weight": torch.ones(5)}, tmp_path / "b.safetensors")
    _raises(path, "at least one 2-D", "fc.bias")
    torch.save({"step": torch.tensor(3)}, tmp_path / "s.pt")
    _raises(tmp_path / "s.pt", "at least one 2-D")
    with open_weights(path, require_weights=False) as weights:  # shapes-only use stays possible
        assert weights.names() == ["fc.bias", "norm.weight"]


def test_refuses_files_over_the_size_cap(tmp_path, state):
    path = save_safetensors(state, tmp_path / "m.safetensors")
    message = _raises(path, "at most 100 bytes", max_bytes=100)
    assert str(path.stat().st_size) in message


def test_safetensors_have_no_default_cap_and_files_loaded_whole_do(tmp_path, state, monkeypatch):
    """(issue 18) a safetensors file is read tensor by tensor, so by default it has no size cap (a
    5 GiB file, sparse on disk, opens with its tensor listed); a pickled state dict is loaded whole and keeps the
    default cap (MAX_FILE_BYTES, here lowered to 100 bytes); a cap the caller gives (the app's upload
    cap) holds for every format; a file twice the RAM opens (read tensor by tensor, never mapped whole)."""
    import struct

    # twice the machine's RAM (at least 5 GiB): safe_open's whole-file memory map is refused there
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    rows = max(5 * 2**30, 2 * ram) // (4 * 1024) + 1
    head = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    header = json.dumps({"head.weight": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
                         "big.weight": {"dtype": "F32", "shape": [rows, 1024], "data_offsets": [48, 48 + rows * 4096]}}).encode()
    big = tmp_path / "big.safetensors"
    with open(big, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header + head.numpy().tobytes())
        fh.truncate(8 + len(header) + 48 + rows * 4096)  # a hole: no disk used
    assert big.stat().st_size > max(5 * 2**30, 2 * ram)
    with open_weights(big) as weights:
        assert weights.shape("big.weight") == (rows, 1024)
        assert torch.equal(weights.get("head.weight"), head)
    _raises(big, f"at most {2**30} bytes", max_bytes=2**30)

    from tnviz.model import readers

    monkeypatch.setattr(readers, "MAX_FILE_BYTES", 100)
    torch.save(state, tmp_path / "m.pt")
    _raises(tmp_path / "m.pt", "at most 100 bytes")
    small = save_safetensors(state, tmp_path / "m.safetensors")
    assert small.stat().st_size > 100
    with open_weights(small) as weights:
        assert sorted(weights.names()) == sorted(state)


# ---------------------------------------------------------------------------- Hugging Face zips


def _tiny_bert_folder(folder: Path) -> tuple[dict, dict]:
    from tnviz.model.bert import Bert

    config = {"model_type": "bert", "vocab_size": 40, "hidden_size": 8, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 20}
    torch.manual_seed(1)
    model = Bert(config)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_safetensors(model.state_dict(), folder / "model.safetensors")
    return config, model.state_dict()


def _zip_folder(folder: Path, target: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for file in folder.iterdir():
            archive.write(file, prefix + file.name)
    return target


def test_hf_zip_opens_extracts_and_cleans_up(tmp_path):
    config, state = _tiny_bert_folder(tmp_path / "bert")
    for prefix in ("", "my-model/"):
        archive = _zip_folder(tmp_path / "bert", tmp_path / "bert.zip", prefix)
        assert sniff(archive) == "hf_zip"
        weights = open_weights(archive)
        assert weights.format == "hf_folder" and weights.config == config
        assert all(torch.equal(weights.get(n), t) for n, t in state.items())
        extracted = weights.folder
        assert extracted.exists()
        weights.close()
        assert not extracted.exists()


def test_refuses_zip_path_traversal(tmp_path):
    _, _ = _tiny_bert_folder(tmp_path / "bert")
    archive = _zip_folder(tmp_path / "bert", tmp_path / "evil.zip")
    with zipfile.ZipFile(archive, "a") as handle:
        handle.writestr("../../escaped.txt", "gotcha")
    _raises(archive, "stay inside", "../../escaped.txt")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()


def test_refuses_zip_links_and_absolute_paths(tmp_path):
    _tiny_bert_folder(tmp_path / "bert")
    archive = _zip_folder(tmp_path / "bert", tmp_path / "link.zip")
    with zipfile.ZipFile(archive, "a") as handle:
        info = zipfile.ZipInfo("evil_link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        handle.writestr(info, "/etc/passwd")
    _raises(archive, "not links")
    archive = _zip_folder(tmp_path / "bert", tmp_path / "abs.zip")
    with zipfile.ZipFile(archive, "a") as handle:
        handle.writestr("/tmp/absolute.txt", "x")
    _raises(archive, "stay inside")


def test_refuses_zip_bombs_and_zips_without_a_model(tmp_path):
    _tiny_bert_folder(tmp_path / "bert")
    archive = _zip_folder(tmp_path / "bert", tmp_path / "big.zip")
    with zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("zeros.bin", b"\0" * 2_000_000)
    assert archive.stat().st_size < 100_000
    _raises(archive, "uncompressed", max_bytes=1_000_000)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as handle:
        handle.writestr("readme.md", "hello")
    _raises(tmp_path / "other.zip", "config.json", "model.safetensors")
    (tmp_path / "sharded").mkdir()
    (tmp_path / "sharded" / "config.json").write_text("{}")
    save_safetensors({"w": torch.ones(2, 2)}, tmp_path / "sharded" / "model-00001-of-00002.safetensors")
    _raises(tmp_path / "sharded", "or shards with model.safetensors.index.json")


def _deflated_hf_zip(tmp_path: Path) -> bytes:
    _tiny_bert_folder(tmp_path / "bert")
    archive = tmp_path / "bert.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        for file in (tmp_path / "bert").iterdir():
            handle.write(file, file.name)
    return archive.read_bytes()


def test_refuses_damaged_zip_members_with_one_line(tmp_path):
    """(issue 15 item 7) a damaged deflate stream (zlib.error) and a member whose CRC-32 or size lies
    (BadZipFile) are refusals naming the member, not tracebacks; no extracted folder is left."""
    import tempfile

    good = _deflated_hf_zip(tmp_path)
    start = good.index(b"model.safetensors") + len("model.safetensors")
    damaged = bytearray(good)
    for k in range(start + 40, start + 300):
        damaged[k] ^= 0x55
    (tmp_path / "damaged.zip").write_bytes(bytes(damaged))
    before = set(Path(tempfile.gettempdir()).glob("tnviz-hf-*"))
    message = _raises(tmp_path / "damaged.zip", "readable zip archive", "'model.safetensors'")
    assert "\n" not in message
    with zipfile.ZipFile(tmp_path / "crc.zip", "w") as handle:  # stored, then one data byte changed: bad CRC-32
        handle.writestr("config.json", (tmp_path / "bert" / "config.json").read_text())
        handle.writestr("model.safetensors", (tmp_path / "bert" / "model.safetensors").read_bytes())
    crc = bytearray((tmp_path / "crc.zip").read_bytes())
    at = crc.index(b"model.safetensors") + len("model.safetensors") + 200
    crc[at] ^= 0xFF
    (tmp_path / "crc.zip").write_bytes(bytes(crc))
    _raises(tmp_path / "crc.zip", "readable zip archive", "Bad CRC-32")
    assert set(Path(tempfile.gettempdir()).glob("tnviz-hf-*")) == before


# ---------------------------------------------------------------------------- fuzz


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=300), header=st.integers(min_value=0, max_value=400),
       extension=st.sampled_from([".safetensors", ".pt", ".zip"]))
def test_random_bytes_never_crash(tmp_path, data, header, extension):
    path = tmp_path / f"fuzz{extension}"
    # half the cases look like a safetensors header (length + '{') followed by junk
    payload = header.to_bytes(8, "little") + b"{" + data if header % 2 else data
    path.write_bytes(payload)
    try:
        open_weights(path).close()
    except ModelFileError:
        pass


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(min_value=0, max_value=10**9), st.integers(min_value=1, max_value=255)),
                      min_size=1, max_size=8))
def test_corrupted_hf_zips_never_crash(tmp_path_factory, flips):
    """Random byte flips anywhere in a valid Hugging Face zip: refused, or read, never a traceback."""
    folder = tmp_path_factory.mktemp("zips")
    good = bytearray(_deflated_hf_zip(folder))
    for where, mask in flips:
        good[where % len(good)] ^= mask
    path = folder / "fuzz.zip"
    path.write_bytes(bytes(good))
    try:
        open_weights(path).close()
    except ModelFileError:
        pass


def test_refuse_message_names_the_rule_then_the_value(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"onnx")
    message = _raises(tmp_path / "x.onnx")
    assert message.index("must end in one of") < message.index("x.onnx")


def test_io_imports_without_torch_and_package_exports_resolve():
    import subprocess
    import sys

    code = ("import sys, tnviz.model.io as io; assert 'torch' not in sys.modules, 'torch imported';"
            "import tnviz.model as m; [getattr(m, n) for n in m.__all__]")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

"""Read model weights safely, one tensor at a time, never executing code from the file.

Accepted (checked by content, not only by extension):

* ``.safetensors``: memory-mapped through ``safetensors.safe_open``; each tensor is read when asked.
* ``.pt`` / ``.pth`` / ``.bin``: a PyTorch **state_dict** (nested dicts of tensors are flattened
  with dotted names), loaded with ``torch.load(weights_only=True, mmap=True)`` (legacy non-zip
  files without ``mmap``).
* ``.zip`` of a Hugging Face-format folder (``config.json`` + ``model.safetensors``), extracted
  safely (no absolute paths, no ``..``, no links, size-capped), or such a folder given directly.

Refused with a :class:`~tnviz.errors.ModelFileError` naming the rule, the value and what to
upload instead: pickled modules, TorchScript archives, ``.pt2`` (torch.export) archives, unknown
extensions, files over the size cap, truncated or malformed files, files without a 2-D or 4-D
weight.

>>> import torch, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
>>> _ = save_safetensors({"fc.weight": torch.ones(3, 4), "fc.bias": torch.zeros(3)}, path)
>>> with open_weights(path) as weights:
...     [c.name for c in candidates(weights)], weights.shape("fc.weight")
(['fc.weight'], (3, 4))
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import struct
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from ..errors import ModelFileError

if TYPE_CHECKING:  # torch is imported where used
    import torch

#: Largest weights file accepted by default (bytes). The app passes its own, smaller upload cap.
MAX_FILE_BYTES = 4 * 1024**3
#: Largest upload the app accepts (bytes): ``tnviz app`` sets Streamlit's cap to it, the pages check it.
MAX_UPLOAD_BYTES = 200 * 1024**2
#: Largest total uncompressed size of a zip's members, and most members, by default.
MAX_ZIP_BYTES = 4 * 1024**3
MAX_ZIP_MEMBERS = 2000
#: Largest safetensors JSON header (the format's own reader refuses above 100 MB too).
MAX_HEADER_BYTES = 100 * 1024**2

STATE_DICT_EXTENSIONS = (".pt", ".pth", ".bin")
EXTENSIONS = (".safetensors", *STATE_DICT_EXTENSIONS, ".zip")

_WHAT_TO_UPLOAD = (
    "upload a .safetensors file, a state_dict saved with torch.save(model.state_dict(), 'model.pt'), "
    "or a zip of a Hugging Face folder (config.json + model.safetensors)"
)

# Names of weights that are normalisation parameters even when they are 2-D (rare, but e.g. some
# RMSNorm variants store (1, d)); biases are skipped by name and by being 1-D.
_NORM_PATTERN = re.compile(r"(^|[._])(norm|layernorm|layer_norm|ln(_\w+)?|bn\d*|batchnorm|rmsnorm)([._]|$)", re.I)
_EMBEDDING_PATTERN = re.compile(r"(embed|wte|wpe|tok_embeddings|word_embeddings|shared)", re.I)

# safetensors dtype strings -> torch dtype names
_ST_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "U16": "uint16", "U32": "uint32", "U64": "uint64",
}


# --------------------------------------------------------------------------------------------
# Content sniffing


def sniff(path: str | os.PathLike) -> str:
    """Name the kind of a file from its bytes (not its name).

    One of ``'safetensors'``, ``'state_dict_zip'`` (torch.save zip), ``'pickle'`` (legacy
    torch.save or any pickle), ``'torchscript'``, ``'pt2'``, ``'hf_zip'``, ``'zip'`` (another zip),
    ``'empty'`` or ``'unknown'``.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(16)
    if not head:
        return "empty"
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return "unknown"
        return _zip_kind(names)
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 0 < header_len <= MAX_HEADER_BYTES and head[8:9] == b"{":
            return "safetensors"
    return "unknown"


def _zip_kind(names: list[str]) -> str:
    base = {n.rstrip("/").split("/")[-1] for n in names}
    if "archive_format" in base or any("/models/" in n and n.endswith(".json") for n in names):
        return "pt2"
    if "constants.pkl" in base or any("/code/" in n or n.startswith("code/") for n in names):
        return "torchscript"
    if "data.pkl" in base:
        return "state_dict_zip"
    if "config.json" in base and any(n.endswith(".safetensors") for n in names):
        return "hf_zip"
    return "zip"


_REFUSALS = {
    "torchscript": (
        "TorchScript archives are refused: loading one runs the model's compiled code; "
        "save the weights instead with torch.save(model.state_dict(), 'model.pt') or safetensors"
    ),
    "pt2": (
        ".pt2 (torch.export) archives are refused: they hold a program, not a weights file tnviz can "
        "read tensor by tensor; save model.state_dict() with torch.save or safetensors instead"
    ),
    "empty": "a weights file must not be empty",
    "zip": (
        "a zip must be a Hugging Face-format folder with config.json and model.safetensors, "
        "but this one has neither a config.json nor a .safetensors file"
    ),
}


# --------------------------------------------------------------------------------------------
# Readers


class WeightsFile:
    """Read-only view of named tensors in a file, each read only when asked for.

    ``names()``, ``shape(name)``, ``dtype(name)`` cost nothing per tensor; ``get(name)`` reads
    one tensor. ``config`` is the Hugging Face ``config.json`` for folders, else ``None``.
    Close it (or use ``with``) to release the memory map and any extracted temporary folder.
    """

    format: str = ""
    path: Path
    config: dict | None = None
    folder: Path | None = None

    def names(self) -> list[str]:
        raise NotImplementedError

    def shape(self, name: str) -> tuple[int, ...]:
        raise NotImplementedError

    def dtype(self, name: str) -> str:
        """The dtype as torch names it, without the ``torch.`` prefix (e.g. ``'float32'``)."""
        raise NotImplementedError

    def get(self, name: str, device: Any = None, dtype: Any = None) -> "torch.Tensor":
        """Read one tensor (optionally moved to ``device`` / cast to ``dtype``)."""
        raise NotImplementedError

    def numel(self, name: str) -> int:
        n = 1
        for size in self.shape(name):
            n *= size
        return n

    def __contains__(self, name: object) -> bool:
        return name in set(self.names())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def _check_name(self, name: str) -> None:
        if name not in self:
            shown = ", ".join(self.names()[:8])
            raise KeyError(f"a tensor name must be one of the file's {len(self)} names ({shown}, ...), got {name!r}")

    def close(self) -> None:
        self._cleanup = getattr(self, "_cleanup", None)
        if self._cleanup is not None:
            shutil.rmtree(self._cleanup, ignore_errors=True)
            self._cleanup = None

    def __enter__(self) -> "WeightsFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.format} {self.path.name!r}: {len(self)} tensors>"


def _move(tensor: "torch.Tensor", device: Any, dtype: Any) -> "torch.Tensor":
    if device is None and dtype is None:
        return tensor
    return tensor.to(device=device, dtype=dtype)


class SafetensorsWeights(WeightsFile):
    """A memory-mapped ``.safetensors`` file (``safetensors.safe_open``).  Names, shapes and dtypes
    come from its header, read once (200,000 tensors cost milliseconds, not one call each)."""

    format = "safetensors"

    def __init__(self, path: str | os.PathLike):
        from safetensors import safe_open

        self.path = Path(path)
        try:
            self._handle = safe_open(str(self.path), framework="pt", device="cpu")
            self._names = list(self._handle.keys())
            header, self._data_start = _safetensors_header(self.path, with_start=True)
            self._offsets = {n: tuple(int(o) for o in header[n]["data_offsets"]) for n in self._names}
            self._shapes = {n: tuple(int(d) for d in header[n]["shape"]) for n in self._names}
            self._dtypes = {n: _ST_DTYPES.get(header[n]["dtype"], str(header[n]["dtype"]).lower()) for n in self._names}
        except Exception as error:  # the Rust reader raises its own types for bad headers/buffers
            raise ModelFileError(
                f"a .safetensors file must have a complete header and data section; "
                f"{self.path.name!r} is truncated or malformed ({error}); re-export it with safetensors"
            ) from error
        self.metadata: dict[str, str] = dict(self._handle.metadata() or {})

    def names(self) -> list[str]:
        return list(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._shapes

    def __len__(self) -> int:
        return len(self._names)

    def shape(self, name: str) -> tuple[int, ...]:
        if name not in self._shapes:
            self._check_name(name)
        return self._shapes[name]

    def dtype(self, name: str) -> str:
        if name not in self._dtypes:
            self._check_name(name)
        return self._dtypes[name]

    def get(self, name: str, device: Any = None, dtype: Any = None) -> "torch.Tensor":
        """Read one tensor with a plain file read into fresh memory, not through the memory map: a
        tensor read from the map stays in this process's resident set as file pages for as long
        as the file is open, so reading every weight of a 2 GB file once left 3 GB resident
        (measured); read this way, a tensor's memory is freed with the tensor."""
        import torch

        if name not in self._shapes:
            self._check_name(name)
        start, end = self._offsets[name]
        kind = getattr(torch, self._dtypes[name], None)
        if not isinstance(kind, torch.dtype) or sys.byteorder != "little":
            return _move(self._handle.get_tensor(name), device, dtype)
        raw = torch.empty(end - start, dtype=torch.uint8)
        with open(self.path, "rb", buffering=0) as fh:
            fh.seek(self._data_start + start)
            view = memoryview(raw.numpy())
            got = 0
            while got < len(view):
                n = fh.readinto(view[got:])
                if not n:
                    raise ModelFileError(f"a .safetensors file must hold every tensor its header names; "
                                         f"{self.path.name!r} ends inside {name!r}")
                got += n
        tensor = raw.view(kind).reshape(self._shapes[name]) if end > start else torch.empty(self._shapes[name],
                                                                                               dtype=kind)
        return _move(tensor, device, dtype)

    def close(self) -> None:
        self._handle = None
        self._shapes, self._dtypes, self._offsets = {}, {}, {}
        super().close()


def _safetensors_header(path: Path, with_start: bool = False) -> Any:
    """The JSON header of a safetensors file (``safe_open`` has already checked it); with
    ``with_start``, also where its data section starts."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    return (header, 8 + n) if with_start else header


class StateDictWeights(WeightsFile):
    """A ``torch.save`` state_dict loaded with ``weights_only=True`` (memory-mapped when zip)."""

    format = "state_dict"

    def __init__(self, path: str | os.PathLike, kind: str):
        import pickle

        import torch

        self.path = Path(path)
        mmap = kind == "state_dict_zip"
        try:
            obj = torch.load(str(self.path), map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as error:
            raise ModelFileError(
                f"a .pt/.pth file must hold only tensors (a state_dict); {self.path.name!r} holds pickled "
                f"Python objects ({_pickled_global(error)}), which could run code when loaded; "
                f"save model.state_dict() instead, or a .safetensors file"
            ) from error
        except Exception as error:
            raise ModelFileError(
                f"a .pt/.pth state_dict must be readable by torch.load(weights_only=True); "
                f"{self.path.name!r} is truncated or malformed ({_first_line(error)}); {_WHAT_TO_UPLOAD}"
            ) from error
        tensors: dict[str, torch.Tensor] = {}
        _flatten(obj, "", tensors)
        if not tensors:
            raise ModelFileError(
                f"a .pt/.pth file must be a state_dict (a dict of tensors); {self.path.name!r} holds "
                f"a {type(obj).__name__} without tensors; {_WHAT_TO_UPLOAD}"
            )
        self._tensors = tensors

    def names(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def shape(self, name: str) -> tuple[int, ...]:
        self._check_name(name)
        return tuple(self._tensors[name].shape)

    def dtype(self, name: str) -> str:
        self._check_name(name)
        return str(self._tensors[name].dtype).removeprefix("torch.")

    def get(self, name: str, device: Any = None, dtype: Any = None) -> "torch.Tensor":
        self._check_name(name)
        return _move(self._tensors[name], device, dtype)

    def close(self) -> None:
        self._tensors = {}
        super().close()


def _flatten(obj: Any, prefix: str, out: dict) -> None:
    """Collect tensors from nested dicts / lists as dotted names (checkpoint {'model': {...}} etc.)."""
    import torch

    if isinstance(obj, torch.Tensor):
        out[prefix or "tensor"] = obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            _flatten(value, f"{prefix}.{index}" if prefix else str(index), out)


def _pickled_global(error: BaseException) -> str:
    """The class torch's weights_only unpickler refused (its own message is long advice)."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    return found.group(1) if found else "e.g. a whole nn.Module"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


# --------------------------------------------------------------------------------------------
# Hugging Face folders and zips


def safe_extract(zip_path: str | os.PathLike, dest: str | os.PathLike, max_bytes: int = MAX_ZIP_BYTES,
                 max_members: int = MAX_ZIP_MEMBERS) -> Path:
    """Extract a zip into ``dest`` refusing path traversal, links and oversize content.

    The size cap is enforced on the bytes actually written, not only on the sizes the zip claims.
    """
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as error:
        raise ModelFileError(f"a .zip upload must be a readable zip archive; {Path(zip_path).name!r} is not ({error})") from error
    with archive:
        members = archive.infolist()
        if len(members) > max_members:
            raise ModelFileError(f"a zip may hold at most {max_members} members, got {len(members)}")
        claimed = sum(m.file_size for m in members)
        if claimed > max_bytes:
            raise ModelFileError(f"a zip's content may be at most {max_bytes} bytes uncompressed, got {claimed}")
        written = 0
        for member in members:
            name = member.filename
            parts = Path(name.replace("\\", "/")).parts
            if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
                raise ModelFileError(f"zip member paths must stay inside the folder (no absolute paths, no '..'), got {name!r}")
            mode = member.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ModelFileError(f"zip members must be plain files, not links, got {name!r}")
            target = (dest / name).resolve()
            if target != dest and dest not in target.parents:
                raise ModelFileError(f"zip member paths must stay inside the folder, got {name!r}")
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(member) as source, open(target, "wb") as sink:
                    while chunk := source.read(1 << 20):
                        written += len(chunk)
                        if written > max_bytes:
                            raise ModelFileError(f"a zip's content may be at most {max_bytes} bytes uncompressed, got more")
                        sink.write(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as error:
                # a damaged deflate stream, a member lying about its size (bad CRC-32), an unknown
                # compression, an encrypted member: the archive cannot be read, whatever else it holds
                raise ModelFileError(f"a .zip upload must be a readable zip archive; its member {name!r} is damaged "
                                     f"or unreadable ({_first_line(error)})") from None
    return dest


def _find_hf_root(folder: Path) -> Path:
    """The folder holding config.json (the root or the single top-level folder of a zip)."""
    if (folder / "config.json").is_file():
        return folder
    configs = [p.parent for p in folder.rglob("config.json") if "__MACOSX" not in p.parts]
    configs = [c for c in configs if any(c.glob("*.safetensors")) or (c / "pytorch_model.bin").exists()]
    if len(configs) == 1:
        return configs[0]
    raise ModelFileError(
        f"a Hugging Face folder must contain exactly one config.json next to model.safetensors, "
        f"found {len(configs)} in {folder.name!r}"
    )


class HFFolderWeights(SafetensorsWeights):
    """A Hugging Face-format folder: ``config.json`` + ``model.safetensors`` (memory-mapped)."""

    format = "hf_folder"

    def __init__(self, folder: str | os.PathLike, cleanup: Path | None = None, max_bytes: int = MAX_FILE_BYTES):
        self._cleanup = cleanup
        try:
            root = _find_hf_root(Path(folder))
            config_path = root / "config.json"
            try:
                config = json.loads(config_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise ModelFileError(f"config.json must be valid JSON; {error}") from error
            if not isinstance(config, dict):
                raise ModelFileError(f"config.json must be a JSON object, got {type(config).__name__}")
            weights = root / "model.safetensors"
            if not weights.is_file():
                found = sorted(p.name for p in root.iterdir() if p.suffix in (".safetensors", ".bin"))
                raise ModelFileError(
                    f"a Hugging Face folder must contain a single model.safetensors (sharded or .bin checkpoints "
                    f"are not read); found {found}; re-save with model.save_pretrained(dir, safe_serialization=True) "
                    f"and max_shard_size large enough for one file"
                )
            _check_size(weights, max_bytes)
            if sniff(weights) != "safetensors":
                raise ModelFileError(f"model.safetensors must be a safetensors file; its content is {sniff(weights)!r}")
            super().__init__(weights)
        except BaseException:
            self.close()
            raise
        self.folder = root
        self.config = config

    def close(self) -> None:
        if hasattr(self, "_handle"):
            SafetensorsWeights.close(self)
        else:
            WeightsFile.close(self)


# --------------------------------------------------------------------------------------------
# Entry point


def _check_size(path: Path, max_bytes: int) -> None:
    size = path.stat().st_size
    if size > max_bytes:
        raise ModelFileError(f"a weights file may be at most {max_bytes} bytes, {path.name!r} has {size}")


def open_weights(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES, require_weights: bool = True,
                 extract_to: str | os.PathLike | None = None) -> WeightsFile:
    """Open a weights file or Hugging Face folder for reading tensor by tensor.

    ``max_bytes`` caps the file (and a zip's uncompressed content). With ``require_weights`` the
    file must hold at least one 2-D or 4-D weight. A zip is extracted to ``extract_to`` (else a
    temporary folder removed by ``close()``). Raises :class:`ModelFileError` with the reason.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"a weights path must exist, got {str(path)!r}")
    if path.is_dir():
        weights: WeightsFile = HFFolderWeights(path, max_bytes=max_bytes)
    else:
        weights = _open_file(path, max_bytes, extract_to)
    if require_weights:
        try:
            if not candidates(weights):
                shapes = ", ".join(f"{n} {list(weights.shape(n))}" for n in weights.names()[:6])
                raise ModelFileError(
                    f"a model file must hold at least one 2-D (Linear/Embedding) or 4-D (Conv) weight; "
                    f"{path.name!r} has none ({shapes})"
                )
        except BaseException:
            weights.close()
            raise
    return weights


def _open_file(path: Path, max_bytes: int, extract_to: str | os.PathLike | None) -> WeightsFile:
    suffix = path.suffix.lower()
    if suffix == ".pt2":
        raise ModelFileError(f"{_REFUSALS['pt2']} (got {path.name!r})")
    if suffix not in EXTENSIONS:
        raise ModelFileError(
            f"a weights file must end in one of {', '.join(EXTENSIONS)}, got {path.name!r}; {_WHAT_TO_UPLOAD}"
        )
    _check_size(path, max_bytes)
    kind = sniff(path)
    if kind in _REFUSALS:
        raise ModelFileError(f"{_REFUSALS[kind]} (got {path.name!r})")
    if kind == "unknown":
        raise ModelFileError(
            f"a weights file must be safetensors, a torch.save state_dict or a zip of a Hugging Face folder; "
            f"the content of {path.name!r} is none of these (truncated or another format); {_WHAT_TO_UPLOAD}"
        )
    if suffix == ".safetensors" and kind != "safetensors":
        raise ModelFileError(f"a .safetensors file must contain safetensors data, {path.name!r} contains {kind!r}")
    if suffix == ".zip" and kind != "hf_zip":
        raise ModelFileError(
            f"a .zip upload must be a Hugging Face folder (config.json + model.safetensors), "
            f"{path.name!r} contains {kind!r}; upload a .pt/.safetensors file directly instead"
        )
    if kind == "safetensors":
        return SafetensorsWeights(path)
    if kind in ("state_dict_zip", "pickle"):
        return StateDictWeights(path, kind)
    # hf_zip
    if extract_to is None:
        target = Path(tempfile.mkdtemp(prefix="tnviz-hf-"))
        cleanup: Path | None = target
    else:
        target, cleanup = Path(extract_to), None
    try:
        safe_extract(path, target, max_bytes=max_bytes)
    except BaseException:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        raise
    return HFFolderWeights(target, cleanup=cleanup, max_bytes=max_bytes)


# --------------------------------------------------------------------------------------------
# Candidates and writing


@dataclass(frozen=True)
class Candidate:
    """A weight that a tensor network can replace: its name, shape, kind and parameter count."""

    name: str
    shape: tuple[int, ...]
    kind: str  # 'Linear' | 'Conv' | 'Embedding'
    params: int
    dtype: str = "float32"


_FLOAT_DTYPES = {"float64", "float32", "float16", "bfloat16"}


def candidate_kind(name: str, shape: tuple[int, ...]) -> str | None:
    """'Linear', 'Conv' or 'Embedding' for a compressible weight, ``None`` for biases, norms, buffers."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("bias", "running_mean", "running_var", "num_batches_tracked", "position_ids"):
        return None
    if _NORM_PATTERN.search(name):
        return None
    if len(shape) == 4:
        return "Conv"
    if len(shape) == 2 and min(shape) > 1:
        return "Embedding" if _EMBEDDING_PATTERN.search(name) else "Linear"
    return None


def candidates(weights: WeightsFile, pattern: str | None = None) -> list[Candidate]:
    """Compressible weights (2-D Linear/Embedding, 4-D Conv) whose names match ``pattern`` (regex search).

    Biases, norms, integer buffers and 1-D tensors are skipped; only shapes are read.
    """
    regex = None
    if pattern:
        try:
            regex = re.compile(pattern)
        except re.error as error:
            raise ModelFileError(f"a layer pattern must be a valid regular expression, got {pattern!r} ({error})") from error
    found = []
    for name in weights.names():
        if weights.dtype(name) not in _FLOAT_DTYPES:
            continue
        shape = weights.shape(name)
        kind = candidate_kind(name, shape)
        if kind is None or (regex is not None and not regex.search(name)):
            continue
        params = 1
        for size in shape:
            params *= size
        found.append(Candidate(name, shape, kind, params, weights.dtype(name)))
    return found


def save_safetensors(tensors: Mapping[str, "torch.Tensor"], path: str | os.PathLike,
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Write tensors to ``path`` (CPU, contiguous, shared storage un-shared); atomic replace."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(plain, str(temporary), metadata=dict(metadata) if metadata else None)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


def state_dict_of(weights: WeightsFile, device: Any = None) -> dict[str, "torch.Tensor"]:
    """All tensors as a dict (reads everything: for small models and tests)."""
    return {name: weights.get(name, device=device) for name in weights.names()}

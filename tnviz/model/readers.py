"""The readers of weights files: each opens one file and reads its tensors one at a time, never
executing code from it.  The kind of a file is told by its bytes (:func:`sniff`), not its name.

* :class:`SafetensorsWeights`: a ``.safetensors`` file; names, shapes and dtypes from its header,
  each tensor read with a plain file read when asked for;
* :class:`StateDictWeights`: a PyTorch state_dict loaded with ``torch.load(weights_only=True)``
  (memory-mapped when a zip).

Hugging Face folders (one file or sharded) are :mod:`tnviz.model.hf_folder`; the entry point that
chooses between them is :func:`tnviz.model.io.open_weights`.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from ..errors import ModelFileError

if TYPE_CHECKING:  # torch is imported where used
    import torch

#: Largest weights file accepted by default (bytes) where it is loaded whole: a pickled state dict
#: (``torch.load``) or a zip (extracted).  Safetensors files and shards are read tensor by tensor
#: and have no default cap (LLaMA-2 7B ships 10 GB shards); the app passes its own, smaller upload
#: cap, which every format obeys.
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


#: Bytes per element of each safetensors dtype.
_ST_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4,
                "I16": 2, "I8": 1, "U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8}


def read_safetensors_header(path: Path) -> tuple[dict[str, dict], dict[str, str], int]:
    """``(tensors, metadata, data_start)`` of a safetensors file, checked as the format's own
    reader checks it (header inside the file and at most :data:`MAX_HEADER_BYTES`, known dtypes,
    each tensor's byte range its shape times its dtype's size, the ranges tiling the data section
    to the end of the file), without mapping the file: ``safe_open`` memory-maps it whole, which
    the kernel refuses for a file larger than RAM (a 47 GiB file on a 24 GiB machine: ENOMEM).
    Raises ``ValueError`` naming the rule broken."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError("the file is shorter than its 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise ValueError(f"a header of {n} bytes does not fit the file ({size} bytes, headers up to {MAX_HEADER_BYTES})")
        header = json.loads(fh.read(n))
    if not isinstance(header, dict):
        raise ValueError(f"the header must be a JSON object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError("__metadata__ must map strings to strings")
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict) or info.get("dtype") not in _ST_ITEMSIZE:
            raise ValueError(f"tensor {name!r} must have a known dtype, got {info.get('dtype') if isinstance(info, dict) else info!r}")
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise ValueError(f"tensor {name!r} must have a shape of non-negative integers, got {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise ValueError(f"tensor {name!r} must have data_offsets [begin, end], got {offsets!r}")
        if offsets[1] - offsets[0] != math.prod(shape) * _ST_ITEMSIZE[info["dtype"]]:
            raise ValueError(f"tensor {name!r} of shape {shape} ({info['dtype']}) must span "
                             f"{math.prod(shape) * _ST_ITEMSIZE[info['dtype']]} bytes, its offsets span {offsets[1] - offsets[0]}")
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            raise ValueError(f"the tensors' byte ranges must tile the data section; {name!r} starts at {begin}, not {end}")
        end = stop
    if 8 + n + end != size:
        raise ValueError(f"the data section must end the file: the tensors end at byte {8 + n + end}, the file has {size}")
    return header, metadata, 8 + n


class SafetensorsWeights(WeightsFile):
    """A ``.safetensors`` file read tensor by tensor with plain file reads.  Names (sorted, as
    ``safe_open`` lists them), shapes and dtypes come from its header, read and checked once
    (:func:`read_safetensors_header`; 200,000 tensors cost milliseconds)."""

    format = "safetensors"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            header, self.metadata, self._data_start = read_safetensors_header(self.path)
        except Exception as error:
            raise ModelFileError(
                f"a .safetensors file must have a complete header and data section; "
                f"{self.path.name!r} is truncated or malformed ({error}); re-export it with safetensors"
            ) from None
        self._names = sorted(header)
        self._offsets = {n: tuple(int(o) for o in header[n]["data_offsets"]) for n in self._names}
        self._shapes = {n: tuple(int(d) for d in header[n]["shape"]) for n in self._names}
        self._dtypes = {n: _ST_DTYPES[header[n]["dtype"]] for n in self._names}

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
        if not isinstance(kind, torch.dtype) or sys.byteorder != "little":  # a dtype this torch lacks
            from safetensors import safe_open

            with safe_open(str(self.path), framework="pt", device="cpu") as handle:
                return _move(handle.get_tensor(name), device, dtype)
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
        self._shapes, self._dtypes, self._offsets = {}, {}, {}
        super().close()


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


def _check_size(path: Path, max_bytes: int | None, streamed: bool = False) -> None:
    """Refuse ``path`` above ``max_bytes``; ``None``: no cap for a file read tensor by tensor
    (``streamed``: safetensors), :data:`MAX_FILE_BYTES` for one loaded whole."""
    if max_bytes is None:
        if streamed:
            return
        max_bytes = MAX_FILE_BYTES
    size = path.stat().st_size
    if size > max_bytes:
        raise ModelFileError(f"a weights file may be at most {max_bytes} bytes, {path.name!r} has {size}")

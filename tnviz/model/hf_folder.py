"""Hugging Face folders: ``config.json`` beside one ``model.safetensors`` or beside shards named by
``model.safetensors.index.json``, given as a folder or a zip (extracted safely).

A sharded folder is read shard by shard: names, shapes and dtypes come from each shard's header
(read once), a tensor from its shard when asked for.  The index is data from an upload, so it is
checked before it is trusted: every shard it names must be a plain file name in the folder and a
safetensors file, every tensor it names must be in the shard it names, and every tensor of a shard
must be in the index (a folder mixed from two checkpoints is refused, not half read).

>>> import json, tempfile, pathlib, torch
>>> from safetensors.torch import save_file
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> save_file({"a.weight": torch.ones(2, 3)}, str(folder / "model-00001-of-00002.safetensors"))
>>> save_file({"b.weight": torch.ones(3, 2)}, str(folder / "model-00002-of-00002.safetensors"))
>>> index = {"weight_map": {"a.weight": "model-00001-of-00002.safetensors",
...                         "b.weight": "model-00002-of-00002.safetensors"}}
>>> _ = (folder / "model.safetensors.index.json").write_text(json.dumps(index))
>>> _ = (folder / "config.json").write_text("{}")
>>> with HFFolderWeights(folder) as weights:
...     weights.names(), weights.shape("b.weight"), weights.format
(['a.weight', 'b.weight'], (3, 2), 'hf_folder')
"""
from __future__ import annotations

import json
import os
import re
import stat
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelFileError
from .readers import (MAX_ZIP_BYTES, MAX_ZIP_MEMBERS, SafetensorsWeights, WeightsFile, _check_size,
                      _first_line, sniff)

if TYPE_CHECKING:  # torch is imported where used
    import torch

#: The single weights file and the index of a sharded one, as ``save_pretrained`` names them.
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
#: Most shards an index may name (a 405B checkpoint has 191).
MAX_SHARDS = 1000


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
        f"a Hugging Face folder must contain exactly one config.json next to model.safetensors (or its shards), "
        f"found {len(configs)} in {folder.name!r}"
    )


class ShardedWeights(WeightsFile):
    """The shards of a checkpoint named by ``model.safetensors.index.json``, read as one file: the
    names in shard order (and each shard's own order), each tensor read from its shard alone."""

    format = "safetensors_sharded"

    def __init__(self, index_path: str | os.PathLike, max_bytes: int | None = None):
        self.path = Path(index_path)
        self._shards: dict[str, SafetensorsWeights] = {}
        self._where: dict[str, SafetensorsWeights] = {}
        try:
            self._open(max_bytes)
        except BaseException:
            self.close()
            raise

    def _open(self, max_bytes: int | None) -> None:
        root, name = self.path.parent, self.path.name
        try:
            index = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise ModelFileError(f"{name} must be valid JSON; {error}") from None
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
            raise ModelFileError(f"{name} must map tensor names to shard files in 'weight_map'; got "
                                 f"{type(weight_map).__name__ if not isinstance(weight_map, dict) else 'an empty or non-string map'}")
        files = sorted(set(weight_map.values()))
        if len(files) > MAX_SHARDS:
            raise ModelFileError(f"{name} may name at most {MAX_SHARDS} shards; it names {len(files)}")
        for file in files:
            if "/" in file or "\\" in file or file in (".", "..") or not file.endswith(".safetensors"):
                raise ModelFileError(f"{name} must name shards as .safetensors files in its own folder; it names {file!r}")
            path = root / file
            if not path.is_file():
                held = sum(1 for v in weight_map.values() if v == file)
                raise ModelFileError(f"a sharded checkpoint must hold every shard its index names; {file!r} "
                                     f"(with {held} tensor{'s' * (held != 1)}) is missing")
            _check_size(path, max_bytes, streamed=True)
            if sniff(path) != "safetensors":
                raise ModelFileError(f"shard {file!r} must be a safetensors file; its content is {sniff(path)!r}")
            self._shards[file] = SafetensorsWeights(path)
        for tensor, file in weight_map.items():
            if tensor not in self._shards[file]:
                raise ModelFileError(f"{name} names tensor {tensor!r} in shard {file!r}, which does not hold it "
                                     f"(the index and the shards are from different checkpoints)")
        self._names = []
        for file, shard in self._shards.items():
            for tensor in shard.names():
                if weight_map.get(tensor) != file:
                    raise ModelFileError(f"shard {file!r} holds tensor {tensor!r}, which {name} "
                                         f"{'places in ' + repr(weight_map[tensor]) if tensor in weight_map else 'does not name'}"
                                         f" (the index and the shards are from different checkpoints)")
                self._where[tensor] = shard
                self._names.append(tensor)

    @property
    def shards(self) -> list[Path]:
        return [s.path for s in self._shards.values()]

    def names(self) -> list[str]:
        return list(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def __len__(self) -> int:
        return len(self._names)

    def _shard(self, name: str) -> SafetensorsWeights:
        shard = self._where.get(name)
        if shard is None:
            self._check_name(name)
        return shard

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shard(name).shape(name)

    def dtype(self, name: str) -> str:
        return self._shard(name).dtype(name)

    def get(self, name: str, device: Any = None, dtype: Any = None) -> "torch.Tensor":
        return self._shard(name).get(name, device, dtype)

    def close(self) -> None:
        for shard in self._shards.values():
            shard.close()
        self._shards, self._where, self._names = {}, {}, []
        super().close()


class HFFolderWeights(WeightsFile):
    """A Hugging Face-format folder: ``config.json`` + ``model.safetensors`` or its shards
    (:class:`ShardedWeights`); ``config`` is the parsed ``config.json``, ``folder`` its folder."""

    format = "hf_folder"

    def __init__(self, folder: str | os.PathLike, cleanup: Path | None = None, max_bytes: int | None = None):
        self._cleanup = cleanup
        self._inner: WeightsFile | None = None
        try:
            root = _find_hf_root(Path(folder))
            config_path = root / "config.json"
            try:
                config = json.loads(config_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise ModelFileError(f"config.json must be valid JSON; {error}") from error
            if not isinstance(config, dict):
                raise ModelFileError(f"config.json must be a JSON object, got {type(config).__name__}")
            single, index = root / SINGLE_FILE, root / INDEX_FILE
            if single.is_file():
                _check_size(single, max_bytes, streamed=True)
                if sniff(single) != "safetensors":
                    raise ModelFileError(f"model.safetensors must be a safetensors file; its content is {sniff(single)!r}")
                self._inner = SafetensorsWeights(single)
            elif index.is_file():
                self._inner = ShardedWeights(index, max_bytes)
            else:
                found = sorted(p.name for p in root.iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
                raise ModelFileError(
                    f"a Hugging Face folder must contain model.safetensors, or shards with {INDEX_FILE} "
                    f"(.bin checkpoints are not read); found {found}; re-save with "
                    f"model.save_pretrained(dir, safe_serialization=True)"
                )
        except BaseException:
            self.close()
            raise
        self.path = self._inner.path
        self.folder = root
        self.config = config

    @property
    def sharded(self) -> bool:
        return isinstance(self._inner, ShardedWeights)

    def names(self) -> list[str]:
        return self._inner.names()

    def __contains__(self, name: object) -> bool:
        return name in self._inner

    def __len__(self) -> int:
        return len(self._inner)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._inner.shape(name)

    def dtype(self, name: str) -> str:
        return self._inner.dtype(name)

    def get(self, name: str, device: Any = None, dtype: Any = None) -> "torch.Tensor":
        return self._inner.get(name, device, dtype)

    def close(self) -> None:
        if getattr(self, "_inner", None) is not None:
            self._inner.close()
        super().close()

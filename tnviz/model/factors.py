"""The factors of a weights-only compression, per weight: held in memory, or read from a file.

:func:`tnviz.model.apply.compress_weights` decomposes the weights of a file that may be larger
than memory, one at a time.  Without an output folder it holds every weight's factors in memory
(they are what the result writes).  With one, each weight's factors go to the run's progress
folder as soon as it is done (:mod:`tnviz.model.resume`) and only their place on disk stays in
memory: a 47 GiB LLaMA-shaped file compressed 20x has 2.3 GiB of factors, which held in memory
made the run's peak resident set grow with the model (issue 18).  Once the output folder is
written and the progress folder removed, :meth:`Factors.repoint` points every weight at its
tensors in the output's ``model.safetensors``, so the result can still be written again, zipped
or exported dense.

A weight's tensors are returned in its network's order, in the weight's dtype, read with a plain
file read (:class:`tnviz.model.readers.SafetensorsWeights`) into fresh memory that is freed with
them; the headers of the files read are parsed once.

>>> import torch
>>> f = Factors()
>>> f.hold("w", {"A": torch.ones(2, 3), "B": torch.zeros(3)})
>>> list(f), f.shapes("w"), f.dtype("w")
(['w'], {'A': (2, 3), 'B': (3,)}, 'float32')
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from ..errors import TnvizError


@dataclass(frozen=True)
class _OnDisk:
    file: Path
    keys: tuple[str, ...]  # the file's tensor names, in the network's order
    names: tuple[str, ...]  # the network's tensor names they hold
    dtype: str  # the weight's dtype: what the tensors are returned in


class Factors(Mapping):
    """Weight name -> its factors (network tensor name -> tensor), see the module doc."""

    def __init__(self) -> None:
        self._held: dict[str, dict[str, torch.Tensor]] = {}
        self._disk: dict[str, _OnDisk] = {}
        self._order: list[str] = []
        self._readers: dict[Path, Any] = {}
        self._gone: str | None = None  # why the files can no longer be read

    # ------------------------------------------------------------------ filling
    def hold(self, name: str, tensors: Mapping[str, torch.Tensor]) -> None:
        """Keep ``name``'s factors in memory (as given: already in the weight's dtype)."""
        self._add(name)
        self._held[name] = dict(tensors)

    def on_disk(self, name: str, file: str | os.PathLike, names: Sequence[str], dtype: str,
                prefix: str = "") -> None:
        """``name``'s factors are the tensors ``prefix + t`` for ``t`` in ``names`` of the
        safetensors ``file``, returned in ``dtype``."""
        self._add(name)
        self._disk[name] = _OnDisk(Path(file), tuple(prefix + t for t in names), tuple(names), dtype)

    def repoint(self, file: str | os.PathLike, prefix_of: Any) -> None:
        """Read every on-disk weight from ``file`` from now on, its tensor ``t`` under
        ``prefix_of(name) + t`` (the output folder's ``model.safetensors`` once the progress
        folder is gone)."""
        self._readers.clear()
        for name, where in list(self._disk.items()):
            self.on_disk(name, file, where.names, where.dtype, prefix_of(name))
        self._gone = None

    def forget_files(self, why: str) -> None:
        """The files are gone (``why``, in words): reading an on-disk weight raises it."""
        self._readers.clear()
        self._gone = why if self._disk else None

    def _add(self, name: str) -> None:
        if name not in self._held and name not in self._disk:
            self._order.append(name)
        self._held.pop(name, None)
        self._disk.pop(name, None)

    # ------------------------------------------------------------------ reading
    @property
    def on_disk_count(self) -> int:
        """How many weights' factors are read from a file (only their place held in memory)."""
        return len(self._disk)

    @property
    def held_count(self) -> int:
        """How many weights' factors are held in memory."""
        return len(self._held)

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        return name in self._held or name in self._disk

    def shapes(self, name: str) -> dict[str, tuple[int, ...]]:
        """``name``'s tensor shapes by network tensor name, without reading the tensors."""
        if name in self._held:
            return {t: tuple(v.shape) for t, v in self._held[name].items()}
        where = self._where(name)
        reader = self._reader(where.file)
        return {t: tuple(reader.shape(k)) for t, k in zip(where.names, where.keys)}

    def dtype(self, name: str) -> str:
        """The dtype ``name``'s tensors come in (``"float32"``)."""
        if name in self._held:
            first = next(iter(self._held[name].values()), None)
            return "float32" if first is None else str(first.dtype).removeprefix("torch.")
        return self._where(name).dtype

    def __getitem__(self, name: str) -> dict[str, torch.Tensor]:
        if name in self._held:
            return self._held[name]
        where = self._where(name)
        reader, kind = self._reader(where.file), getattr(torch, where.dtype)
        try:
            return {t: reader.get(k).to(kind).contiguous() for t, k in zip(where.names, where.keys)}
        except OSError as error:
            raise TnvizError(f"the factors of {name!r} are read from {str(where.file)!r}, which cannot be read "
                             f"({error.strerror or error}); compress again to write them") from None

    def _where(self, name: str) -> _OnDisk:
        if name not in self._disk:
            raise KeyError(name)
        if self._gone is not None:
            raise TnvizError(f"the factors of {name!r} are no longer on disk: {self._gone}")
        return self._disk[name]

    def _reader(self, file: Path) -> Any:
        if file not in self._readers:
            from .readers import SafetensorsWeights

            if not file.is_file():
                raise TnvizError(f"the factors are read from {str(file)!r}, which is gone; compress again to "
                                 f"write them")
            self._readers[file] = SafetensorsWeights(file)
        return self._readers[file]


__all__ = ["Factors"]

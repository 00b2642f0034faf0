"""Resumable runs: each finished weight's factors and numbers go into a progress folder beside the
output (``.<out>.tnviz-resume``) as soon as the weight is done, with one line per weight in a
journal; a run killed at any point (``kill -9``) and started again with ``--resume`` /
``resume=True`` takes the finished weights from there and decomposes only the others, so it writes
the folder an uninterrupted run writes, byte for byte.

The progress folder's header records what the run compresses: the input's tensor names, shapes
and dtypes and the settings (rules, plan, options), each as a SHA-256.  A resume whose input or
settings differ is refused with which one differs.  A factor file is written to a temporary name
and renamed before its journal line is appended (and both are flushed to disk), so a kill between
the two only loses that weight; a torn last line is ignored.  The progress folder is removed once
the output folder is written.

``TNVIZ_TEST_HOLD_AFTER=k`` (tests only): after ``k`` weights are journaled the process stops
working and waits, to be killed from outside at a known point.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import TnvizError
from ..network import TensorNetwork

FORMAT = "tnviz.partial"
HEADER = "progress.json"
JOURNAL = "journal.jsonl"
HOLD_ENV = "TNVIZ_TEST_HOLD_AFTER"


def progress_folder(target: str | os.PathLike) -> Path:
    target = Path(target).expanduser().resolve()
    return target.parent / f".{target.name}.tnviz-resume"


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Finished:
    """A weight decomposed by an earlier run, read back: what a decomposition result offers."""

    network: TensorNetwork
    tensors: dict[str, torch.Tensor]
    params: int
    rel_error: float
    data_error: float | None
    ranks: dict[str, int]
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def fingerprint(source: Any, plan: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a run compresses, as the header of its progress folder."""
    tensors = [[n, list(source.shapes[n]), source.dtypes[n]] for n in source.names] if source is not None else []
    layers = [[lp.name, lp.method, {k: v for k, v in lp.options.items()}] for lp in plan.layers]
    return {"format": FORMAT, "version": 1, "input": _digest(tensors), "settings": _digest([dict(settings), layers]),
            "layers": [lp.name for lp in plan.layers]}


class Journal:
    """The progress folder of one run into ``target`` (see the module doc)."""

    def __init__(self, target: str | os.PathLike, header: Mapping[str, Any], resume: bool = False) -> None:
        self.folder = progress_folder(target)
        self.header = dict(header)
        self.finished: dict[str, Any] = {}
        self.files: dict[str, Path] = {}  # weight name -> its factors' file (this run's and the stopped run's)
        self._lock = threading.Lock()
        self._count = 0
        if resume and (self.folder / HEADER).is_file():
            self._read()
        else:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            (self.folder / HEADER).write_text(json.dumps(self.header, indent=2))
        self.resumed = len(self.finished)

    def _read(self) -> None:
        from safetensors.torch import load_file

        from .apply import Kept

        try:
            old = json.loads((self.folder / HEADER).read_text())
        except ValueError:
            old = {}
        for key, what in (("format", "format"), ("input", "input tensors (names, shapes, dtypes)"),
                          ("settings", "settings"), ("layers", "planned weights")):
            if old.get(key) != self.header.get(key):
                raise TnvizError(f"--resume must continue the same run; the stopped run in {str(self.folder)!r} had "
                                 f"other {what} (run without --resume to start over)")
        lines = (self.folder / JOURNAL).read_text().splitlines() if (self.folder / JOURNAL).is_file() else []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:  # a line torn by the kill: that weight is done again
                continue
            if "kept" in entry:
                self.finished[entry["name"]] = Kept(entry["name"], entry["kept"])
                continue
            path = self.folder / entry["file"]
            if not path.is_file():
                continue
            self.files[entry["name"]] = path
            self.finished[entry["name"]] = Finished(
                TensorNetwork.from_dict(entry["network"]), load_file(str(path)), int(entry["params"]),
                float(entry["rel_error"]), entry["data_error"], {k: int(v) for k, v in entry["ranks"].items()},
                float(entry["seconds"]))
        self._count = len(lines)

    def record(self, name: str, outcome: Any) -> None:
        """Journal one finished weight (a decomposition, or a Kept) durably."""
        from safetensors.torch import save_file

        with self._lock:
            k = self._count
            self._count += 1
            if hasattr(outcome, "reason"):
                entry: dict[str, Any] = {"name": name, "kept": outcome.reason}
            else:
                file = f"{k:06d}.safetensors"
                tmp = self.folder / f".{file}.tmp"
                save_file({t: v.detach().to("cpu").contiguous() for t, v in outcome.tensors.items()}, str(tmp))
                os.replace(tmp, self.folder / file)
                self.files[name] = self.folder / file
                entry = {"name": name, "file": file, "params": int(outcome.params),
                         "rel_error": float(outcome.rel_error),
                         "data_error": None if outcome.data_error is None else float(outcome.data_error),
                         "ranks": {k2: int(v) for k2, v in outcome.ranks.items()}, "seconds": float(outcome.seconds),
                         "network": outcome.network.to_dict()}
            with open(self.folder / JOURNAL, "a") as fh:
                fh.write(json.dumps(entry) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            hold = os.environ.get(HOLD_ENV)
        if hold and self._count >= int(hold):
            while True:  # the test kills this process now
                time.sleep(1)

    def done(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def stopped_run(target: str | os.PathLike) -> str | None:
    """What a stopped run into ``target`` finished, in words, or ``None`` where none was stopped."""
    folder = progress_folder(target)
    try:
        header = json.loads((folder / HEADER).read_text())
    except (OSError, ValueError):
        return None
    lines = (folder / JOURNAL).read_text().splitlines() if (folder / JOURNAL).is_file() else []
    return (f"a run into it was stopped after {len(lines)} of {len(header.get('layers', []))} weights (its progress "
            f"is in {str(folder)!r}); rerun it with --resume / resume=True to finish it")

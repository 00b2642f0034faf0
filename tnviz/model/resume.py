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

In a torch.distributed run every rank journals the weights it decomposes into the progress folder
of rank 0's output (its own journal, ``journal.r<rank>.jsonl``; rank 0's is ``journal.jsonl``), and
a resume, with any number of ranks or in one process, reads them all.

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
    """A journaled weight (decomposed by this run or a stopped one): what a decomposition result
    offers, its tensors read from its factors' ``file`` when asked (only the record stays in memory)."""

    network: TensorNetwork
    file: Path
    params: int
    rel_error: float
    data_error: float | None
    ranks: dict[str, int]
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    method: str = ""  # the method that made it ('' in journals from before it was recorded: the plan's)

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """The factors as the decomposition made them (its dtype), in the network's order."""
        from safetensors.torch import load_file

        loaded = load_file(str(self.file))
        return {t: loaded[t] for t in self.network.tensor_names}


def fingerprint(source: Any, plan: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a run compresses, as the header of its progress folder."""
    tensors = [[n, list(source.shapes[n]), source.dtypes[n]] for n in source.names] if source is not None else []
    layers = [[lp.name, lp.method, {k: v for k, v in lp.options.items()}] for lp in plan.layers]
    return {"format": FORMAT, "version": 1, "input": _digest(tensors), "settings": _digest([dict(settings), layers]),
            "layers": [lp.name for lp in plan.layers]}


class Journal:
    """The progress folder of one run into ``target`` (see the module doc)."""

    def __init__(self, target: str | os.PathLike, header: Mapping[str, Any], resume: bool = False,
                 group: bool = False) -> None:
        self.folder = progress_folder(target)
        self.header = dict(header)
        self.finished: dict[str, Any] = {}
        self.files: dict[str, Path] = {}  # weight name -> its factors' file (this run's and the stopped run's)
        self._lock = threading.Lock()
        self._count = 0
        # in a process group every rank journals the weights it decomposes into its own journal
        # (rank 0: journal.jsonl, rank r: journal.r<r>.jsonl) and reads every rank's on resume
        self.rank = 0
        if group:
            import torch.distributed as dist

            self.rank = dist.get_rank()
        self._own = JOURNAL if self.rank == 0 else f"journal.r{self.rank}.jsonl"
        self._prefix = "" if self.rank == 0 else f"r{self.rank}-"
        failure = None
        if self.rank == 0:
            try:
                self._open(resume)
            except TnvizError as error:
                if not group:
                    raise
                failure = str(error)
        if group:  # rank 0's outcome on every rank (a refusal raised everywhere, not a hang), then each reads
            import torch.distributed as dist

            said = [failure]
            dist.broadcast_object_list(said, src=0)
            if said[0] is not None:
                raise TnvizError(said[0])
            if self.rank != 0:
                self.folder.mkdir(parents=True, exist_ok=True)
                if resume and (self.folder / HEADER).is_file():
                    self._read()
            dist.barrier()  # no rank journals before every rank has read what the stopped run finished
        self.resumed = len(self.finished)

    def _open(self, resume: bool) -> None:
        if resume and (self.folder / HEADER).is_file():
            self._read()
        else:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            (self.folder / HEADER).write_text(json.dumps(self.header, indent=2))

    def _read(self) -> None:
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
        lines = [line for path in _journals(self.folder) for line in path.read_text().splitlines()]
        own = self.folder / self._own
        self._count = len(own.read_text().splitlines()) if own.is_file() else 0
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
            self.finished[entry["name"]] = _finished(entry, path)

    def record(self, name: str, outcome: Any) -> Any:
        """Journal one finished weight (a decomposition, or a Kept) durably; returns what a resume
        would read back (the :class:`Finished` record, or the Kept)."""
        from safetensors.torch import save_file

        with self._lock:
            k = self._count
            self._count += 1
            if hasattr(outcome, "reason"):
                entry: dict[str, Any] = {"name": name, "kept": outcome.reason}
            else:
                file = f"{self._prefix}{k:06d}.safetensors"
                tmp = self.folder / f".{file}.tmp"
                save_file({t: v.detach().to("cpu").contiguous() for t, v in outcome.tensors.items()}, str(tmp))
                os.replace(tmp, self.folder / file)
                self.files[name] = self.folder / file
                entry = {"name": name, "file": file, "params": int(outcome.params),
                         "rel_error": float(outcome.rel_error),
                         "data_error": None if outcome.data_error is None else float(outcome.data_error),
                         "ranks": {k2: int(v) for k2, v in outcome.ranks.items()}, "seconds": float(outcome.seconds),
                         "network": outcome.network.to_dict(), "method": getattr(outcome, "method", "")}
                if outcome.extra.get("auto"):  # method 'auto': the search, so a resumed run reports it too
                    entry["auto"] = outcome.extra["auto"]
            with open(self.folder / self._own, "a") as fh:
                fh.write(json.dumps(entry) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            hold = os.environ.get(HOLD_ENV)
        if hold and self._count >= int(hold):
            while True:  # the test kills this process now
                time.sleep(1)
        return outcome if "kept" in entry else _finished(entry, self.folder / entry["file"])

    def done(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _finished(entry: Mapping[str, Any], path: Path) -> Finished:
    return Finished(TensorNetwork.from_dict(entry["network"]), path, int(entry["params"]), float(entry["rel_error"]),
                    entry["data_error"], {k: int(v) for k, v in entry["ranks"].items()}, float(entry["seconds"]),
                    {"auto": entry["auto"]} if entry.get("auto") else {}, entry.get("method", ""))


def _journals(folder: Path) -> list[Path]:
    """Every rank's journal in a progress folder (rank 0's, or a single process's, first)."""
    own = folder / JOURNAL
    return ([own] if own.is_file() else []) + sorted(folder.glob("journal.r*.jsonl"))


def stopped_run(target: str | os.PathLike) -> str | None:
    """What a stopped run into ``target`` finished, in words, or ``None`` where none was stopped."""
    folder = progress_folder(target)
    try:
        header = json.loads((folder / HEADER).read_text())
    except (OSError, ValueError):
        return None
    lines = [line for path in _journals(folder) for line in path.read_text().splitlines()]
    return (f"a run into it was stopped after {len(lines)} of {len(header.get('layers', []))} weights (its progress "
            f"is in {str(folder)!r}); rerun it with --resume / resume=True to finish it")

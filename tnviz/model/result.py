"""What :func:`tnviz.compress` returns: :class:`Compression` (the applied plan, its measured
effect, healing and the folder it writes) and :class:`HealOutcome` (one healing of it).  Split from
:mod:`tnviz.model.compress`, which runs the pipeline and keeps re-exporting both names."""

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import TnvizError
from .apply import Applied, LayerResult
from .folder import SEPARATOR, Item, write_folder, zip_folder
from .heal import HEALINGS, HealReport, heal
from .plan import Plan, block_and_role
from .subject import Subject
from .surgery import tn_linear, tn_modules

ProgressFn = Callable[[int, int, str], None]


@dataclass
class HealOutcome:
    """What one healing did: the metric before and after, whether it helped, and which model was kept."""

    mode: str
    steps: int
    before: dict[str, float]
    after: dict[str, float]
    improved: bool
    kept: str  # 'healed' or 'previous' (healing made the held-out metric worse, so it was undone)
    report: HealReport | None = None
    seconds: float = 0.0
    healed_state: dict | None = field(default=None, repr=False)  # the undone healing's tensors, to keep anyway

    @property
    def message(self) -> str:
        return self.report_line()

    def report_line(self, metric: str | None = None) -> str:
        if not self.after:
            return f"{self.mode} healing ({self.steps} {HEALINGS[self.mode].unit}): calibration loss " + \
                ("lowered" if self.improved else "not lowered")
        m = metric or next(iter(self.after))
        arrow = f"{self.before[m]:.4f} -> {self.after[m]:.4f}"
        if self.improved:
            return f"{self.mode} healing ({self.steps} {HEALINGS[self.mode].unit}): {m} {arrow}"
        kept = ("kept the model from before healing" if self.kept == "previous"
                else "kept the healed model as asked")
        return f"{self.mode} healing did not help the held-out {m} ({arrow}); {kept}"


@dataclass
class Compression:
    """The result of :func:`compress`: the layers replaced and those kept dense, the compressed
    model (inputs with an architecture) or factors (weights-only files), the functional metrics,
    and what it took.  :meth:`write` writes the compressed folder; :meth:`heal` fine-tunes."""

    subject: Subject
    applied: Applied
    settings: dict[str, Any]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    heals: list[HealOutcome] = field(default_factory=list)
    seconds: float = 0.0
    resumed: int = 0  # weights taken from a stopped run's progress (resume=True)
    world_size: int = 1  # the torch.distributed ranks the weights were spread over (1: one process or a 1-rank group)
    backend: str | None = None  # that group's backend (gloo, nccl); None without a group

    # ------------------------------------------------------------------ views
    @property
    def layers(self) -> list[LayerResult]:
        return self.applied.layers

    @property
    def skipped(self) -> list[dict[str, str]]:
        return self.applied.skipped

    @property
    def model(self) -> nn.Module | None:
        return self.applied.model

    @property
    def original(self) -> nn.Module | None:
        return self.subject.model

    @property
    def plan(self) -> Plan:
        return self.applied.plan

    @property
    def data_aware(self) -> bool:
        return self.applied.data_aware

    @property
    def device(self) -> str:
        return self.applied.device

    @property
    def totals(self) -> dict[str, Any]:
        return self.applied.totals

    @property
    def _architecture(self) -> bool:
        """Whether the layers are modules of a model (named by module, their weights by the model's
        names), even where the model is not held whole (the block-by-block path)."""
        return self.model is not None

    def rows(self) -> list[dict[str, Any]]:
        return self.applied.rows()

    # ------------------------------------------------------------------ heal
    def heal(self, mode: str, steps: int | None = None, progress: ProgressFn | None = None,
             keep: str = "better", on_loss: Callable[[str, float], None] | None = None) -> HealOutcome:
        """Fine-tune the compressed model by ``mode`` (:data:`tnviz.model.heal.HEALINGS`), measure it
        on the held-out inputs, and keep the better model: a healing that made the held-out metric
        worse is undone (``keep='better'``), unless ``keep='healed'``.  ``on_loss(curve, loss)``
        sees the training loss as it goes (the page draws it live).  Returns what happened."""
        if self.model is None:
            raise TnvizError(f"healing needs a model with an architecture; {self.subject.name!r} holds weights only")
        if keep not in ("better", "healed"):
            raise TnvizError(f"keep must be 'better' or 'healed'; got {keep!r}")
        started = time.perf_counter()
        measured = self.subject.metric is not None
        before = (self.metrics.get("healed") or self.metrics.get("compressed") or self.subject.measure(self.model)
                  if measured else {})
        saved = copy.deepcopy(self.model.state_dict())
        try:
            report = heal(self.model, self.subject, mode, steps, progress, on_loss)
            after = self.subject.measure(self.model) if measured else {}
        except BaseException:  # cancelled from the progress callback (or failed): the model as it came
            self.model.load_state_dict(saved)
            raise
        # without a metric, the healing's own loss on the calibration inputs is the judge
        improved = self.subject.better(after, before) if measured else \
            sum(report.loss_after.values()) < sum(report.loss_before.values())
        kept, healed_state = "healed", None
        if not improved and keep == "better":
            healed_state = copy.deepcopy(self.model.state_dict())
            self.model.load_state_dict(saved)
            kept = "previous"
        used = HEALINGS[mode].default_steps if steps is None else int(steps)
        outcome = HealOutcome(mode, used, before, after, improved, kept, report, time.perf_counter() - started,
                              healed_state)
        self.heals.append(outcome)
        self.settings.setdefault("heal", []).append({"mode": mode, "steps": used, "keep": keep})
        if measured:  # what healing produced, even where it was undone (``heals`` says which model was kept)
            self.metrics["healed"] = after
        return outcome

    def keep_healed(self, outcome: HealOutcome) -> None:
        """Keep the model of a healing that was undone because it did not help (the user's choice)."""
        if outcome.healed_state is None or outcome not in self.heals:
            raise TnvizError("only a healing of this compression that was undone can be kept")
        self.model.load_state_dict(outcome.healed_state)
        outcome.kept, outcome.healed_state = "healed", None
        self.settings["heal"][self.heals.index(outcome)]["keep"] = "healed"

    @property
    def current(self) -> dict[str, float]:
        """The metric of the compressed model as it is now (after the healings that were kept)."""
        now = self.metrics.get("compressed", {})
        for h in self.heals:
            if h.kept == "healed" and h.after:
                now = h.after
        return now

    # ------------------------------------------------------------------ output
    def manifest(self) -> dict[str, Any]:
        """``tnviz.json`` without its format fields: nothing in it depends on the clock or machine."""
        source = self.subject.source
        key_map = {} if source is None else {k: v for k, v in source.key_map.items() if k != v}
        layers = []
        for r in self.layers:
            entry = {
                "name": r.weight_name if self._architecture else r.name,
                "module": r.name if self._architecture else None,
                "shape": list(r.shape), "dtype": self._dtype_of(r), "kind": r.kind, "method": r.method,
                "params_before": r.params_before, "params_after": r.params_after, "rel_error": r.rel_error,
                "data_error": r.data_error, "ranks": {k: int(v) for k, v in r.ranks.items()},
                "network": r.network.to_dict(),
            }
            if r.transposed:  # the input stores this weight as (in, out) (GPT-2's Conv1D); "shape" is (out, in)
                entry["transposed"] = True
            if r.tied:  # modules sharing this weight (a tied lm_head), by the model's weight names
                entry["tied"] = list(r.tied)
            layers.append(entry)
        names, changed = self._untouched()
        doc: dict[str, Any] = {
            "source": self.subject.name,
            "method": sorted({r.method for r in self.layers}),
            "settings": self.settings,
            "layers": layers,
            "untouched": names,
            "changed": changed,
            "skipped": list(self.skipped),
            "totals": {k: v for k, v in self.totals.items() if k in ("layers", "params_before", "params_after", "ratio")},
            "data_aware": self.data_aware,
        }
        if self.metrics:
            doc["functional"] = self.metrics
        if key_map:
            doc["key_map"] = key_map
        if self.applied.permutations or self.settings.get("order_search"):
            doc["permutations"] = [p.to_dict(self._file_name) for p in self.applied.permutations]
            doc["order_notes"] = list(self.applied.order_notes)
        return doc

    def report(self) -> dict[str, Any]:
        """The manifest plus what this run took (``seconds`` in all and per layer) and where (``device``):
        what ``tnviz compress --json`` prints."""
        doc = self.manifest()
        for entry, r in zip(doc["layers"], self.layers):
            entry["seconds"] = r.seconds
            entry["block"], entry["role"] = block_and_role(r.name)
            if r.search is not None:  # method 'auto': what was chosen, the runner-up, every candidate
                entry["search"] = r.search
        doc["totals"] = dict(self.totals)
        doc["seconds"] = self.seconds
        doc["device"] = self.device
        doc["world_size"] = self.world_size
        if self.backend is not None:
            doc["backend"] = self.backend
        if self.heals:
            doc["heals"] = [{"mode": h.mode, "steps": h.steps, "improved": h.improved, "kept": h.kept,
                             "seconds": h.seconds} for h in self.heals]
        return doc

    def write(self, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the compressed folder (:mod:`tnviz.model.folder`); never over the input."""
        protect = [self.subject.source.path] if self.subject.source is not None else []
        return write_folder(folder, self._items(), self.manifest(), overwrite=overwrite, protect=protect)

    def write_dense(self, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write a plain Hugging Face folder of dense weights rebuilt from the networks, with the
        input's config and tokenizer (:mod:`tnviz.model.dense`): transformers loads it alone."""
        from .dense import write_dense

        return write_dense(self, folder, overwrite=overwrite)

    def zip(self) -> bytes:
        """The compressed folder as zip bytes (the app's download)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="tnviz-export-") as tmp:
            return zip_folder(self.write(Path(tmp) / "out"))

    # ------------------------------------------------------------------ the tensors
    def _dtype_of(self, r: LayerResult) -> str:
        src = self.subject.source
        name = r.weight_name if self._architecture else r.name
        if src is not None and src.key_map and self._architecture:
            name = src.key_map.get(name, name)
        if src is not None and name in src.dtypes:
            return src.dtypes[name]
        return "float32"

    def _factor_items(self) -> list[Item]:
        items = []
        if self.model is None:  # a weights-only file: each weight's factors read when written, one weight held
            factors, cache = self.applied.factors, {}

            def tensors(name: str) -> dict[str, torch.Tensor]:
                if name not in cache:
                    cache.clear()
                    cache[name] = factors[name]
                return cache[name]

            for r in self.layers:
                dtype = factors.dtype(r.weight_name)
                for t, shape in factors.shapes(r.weight_name).items():
                    items.append(Item(f"{r.weight_name}{SEPARATOR}{t}", dtype, shape,
                                      lambda w=r.weight_name, t=t: tensors(w)[t]))
            return items
        modules = dict(self.model.named_modules())
        for r in self.layers:
            dtype = self._dtype_of(r)
            lin = tn_linear(modules[r.name])
            for t, v in lin.named_network_tensors().items():
                items.append(Item(f"{self._file_name(r.weight_name)}{SEPARATOR}{t}", dtype, tuple(v.shape),
                                  lambda v=v, d=dtype: v.detach().to("cpu", getattr(torch, d))))
        return items

    def _file_name(self, model_key: str) -> str:
        src = self.subject.source
        return src.key_map.get(model_key, model_key) if src is not None else model_key

    def _current(self) -> dict[str, torch.Tensor]:
        """The compressed model's tensors by the ORIGINAL model's state_dict names (a TN layer's bias
        under ``<module>.bias``), to compare with and write in place of the input's."""
        state = self.model.state_dict()
        tns = tn_modules(self.model)
        out: dict[str, torch.Tensor] = {}
        prefixes = tuple(f"{n}." for n in tns)
        for key, t in state.items():
            if key.startswith(prefixes):
                module = next(n for n in tns if key.startswith(f"{n}."))
                if key[len(module) + 1:] in ("bias", "linear.bias"):
                    out[f"{module}.bias"] = t
                continue
            out[key] = t
        if self.applied.permutations:  # dense tensors go back to the input's order (the reader re-applies it)
            from .permute import unpermute_state

            out = unpermute_state(out, self.applied.permutations)
        return out

    def _untouched(self) -> tuple[list[str], list[str]]:
        """Every input tensor that is not a compressed weight (in input order), and those of them
        whose value healing changed."""
        src = self.subject.source
        compressed = {self._file_name(r.weight_name) if self._architecture else r.weight_name for r in self.layers}
        compressed |= {self._file_name(t) for r in self.layers for t in r.tied}  # a tied alias is the same weight
        names = [n for n in src.names if n not in compressed] if src is not None else []
        if self.model is None:
            return names, []
        current, original = self._current(), self.subject.model.state_dict()
        inverse = {v: k for k, v in src.key_map.items()}
        changed = []
        for n in names:
            key = inverse.get(n)
            if key is None or key not in current or key not in original:
                continue
            if not torch.equal(current[key].detach().cpu(), original[key].detach().cpu()):
                changed.append(n)
        return names, changed

    def _items(self) -> list[Item]:
        items = self._factor_items()
        src = self.subject.source
        names, _ = self._untouched()
        if self.model is None:  # a weights-only file: every other tensor streamed from it, bit for bit
            weights = self.subject.weights
            if weights is None:
                raise TnvizError(f"the input {self.subject.name!r} was closed before its tensors were written")
            items += [Item(n, src.dtypes[n], src.shapes[n], lambda n=n: weights.get(n)) for n in names]
            return items
        current = self._current()
        inverse = {v: k for k, v in src.key_map.items()}
        for n in names:
            key = inverse.get(n)
            if key is None or key not in current:  # a tensor the model does not hold (a pooler): copied
                value = src.extra[n]
                items.append(Item(n, src.dtypes[n], src.shapes[n], lambda v=value: v))
                continue
            dtype = src.dtypes[n]
            value = current[key]
            items.append(Item(n, dtype, src.shapes[n], lambda v=value, d=dtype: v.detach().to("cpu", getattr(torch, d))))
        return items

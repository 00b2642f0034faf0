"""``tnviz.compress``: one pipeline for every input and every face.

:func:`compress` takes what a user brings (a demo name, a Hugging Face folder or zip, a
weights-only file, a :class:`~tnviz.model.subject.Subject` or an ``nn.Module``), plans which weights
to replace by which networks (:mod:`tnviz.model.plan`), collects calibration statistics once when
the input has an architecture (data-aware by default), decomposes weight by weight
(:mod:`tnviz.model.apply`), measures the functional effect, optionally heals
(:mod:`tnviz.model.heal`), and writes the compressed folder (:mod:`tnviz.model.folder`).  The CLI's
``tnviz compress``, the app's Tensorize page and scripts all call it, so the same input and
settings write the same bytes.

Because every weight is independent, the per-weight loop is the unit a ``torch.distributed``
launcher can shard by weight name.

>>> import tnviz                                                  # doctest: +SKIP
>>> result = tnviz.compress("digits-mlp", "out/", layers=r"fc[12]$", ratio=8)
>>> result.totals["ratio"] > 7, sorted(result.metrics)
(True, ['compressed', 'original'])
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..errors import TnvizError
from .apply import Applied, LayerResult, Options, apply_plan, compress_weights
from .device import resolve_device
from .distributed import rank as group_rank
from .distributed import resolve as resolve_distributed
from .folder import SEPARATOR, Item, check_target, write_folder, zip_folder
from .heal import HEALINGS, HealReport, heal
from .plan import Plan, Rule, block_and_role, make_plan, truncation_from
from .subject import Subject, open_subject
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
        return doc

    def report(self) -> dict[str, Any]:
        """The manifest plus what this run took (``seconds`` in all and per layer) and where (``device``):
        what ``tnviz compress --json`` prints."""
        doc = self.manifest()
        for entry, r in zip(doc["layers"], self.layers):
            entry["seconds"] = r.seconds
            entry["block"], entry["role"] = block_and_role(r.name)
        doc["totals"] = dict(self.totals)
        doc["seconds"] = self.seconds
        doc["device"] = self.device
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
        if self.model is None:
            for r in self.layers:
                for t, v in self.applied.factors[r.weight_name].items():
                    items.append(Item(f"{r.weight_name}{SEPARATOR}{t}", str(v.dtype).removeprefix("torch."),
                                      tuple(v.shape), lambda v=v: v))
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
        current, original = self._current(), self.subject.model.state_dict()
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


def rules_from(*, layers: str | None = None, method: str = "mpo", truncation: Mapping[str, Any] | None = None,
               in_dims: Sequence[int] | None = None, out_dims: Sequence[int] | None = None) -> list[Rule]:
    """One rule from the CLI's options: every layer matching ``layers`` by ``method`` at ``truncation``."""
    return [Rule(layers or ".*", method, dict(truncation or {"ratio": 2.0}),
                 tuple(in_dims) if in_dims else None, tuple(out_dims) if out_dims else None)]


def compress(source: Any, output: str | os.PathLike | None = None, *, rules: Sequence[Rule] | None = None,
             method: str = "mpo", layers: str | None = None, truncation: Mapping[str, Any] | None = None,
             target: Mapping[str, float] | None = None, max_rank: int | None = None, rtol: float | None = None,
             energy: float | None = None, ratio: float | None = None, target_ratio: float | None = None,
             error_budget: float | None = None, data_aware: bool | None = None, calibration: Sequence[Any] | None = None,
             input_covs: Mapping[str, Any] | None = None, heal: str | None = None, heal_steps: int | None = None,
             device: Any = "auto", progress: ProgressFn | None = None, overwrite: bool = False,
             placement: str = "auto", bond_split: str = "data", distributed: bool | None = None,
             dense: bool = False, resume: bool = False, blockwise: bool | None = None,
             **decompose_options: Any) -> Compression:
    """Compress ``source`` (see the module doc) and, with ``output``, write the compressed folder.

    What to compress: ``rules`` (per name pattern: method, truncation, legs; first match wins), or
    the one rule of ``layers`` (a regex over module names, or tensor names for a weights-only file)
    with ``method`` and one truncation: ``max_rank``, ``rtol``, ``energy``, ``ratio`` (each layer's),
    or a global ``target_ratio`` / ``error_budget`` spread over the layers by sensitivity (also
    given as ``truncation={...}`` / ``target={...}``; default ``ratio=2``).  ``data_aware``
    (default: when the input has an architecture) minimises each layer's error on the calibration
    inputs (``calibration`` batches for an ``nn.Module`` given in code; ``input_covs`` by weight
    name for a weights-only file).  ``heal``: a key of :data:`tnviz.model.heal.HEALINGS`, kept only
    where it helps the held-out metric.  ``progress(done, total, label)`` is called as it goes.
    ``distributed`` (default: when a torch.distributed process group of several ranks is
    initialized): the weights are spread over the ranks (:mod:`tnviz.model.distributed`); rank 0
    measures, heals and writes ``output`` (the single-process run's bytes), the other ranks return
    the layers only.  ``dense``: ``output`` is written as a plain Hugging Face folder of dense
    weights rebuilt from the networks (:meth:`Compression.write_dense`) instead of the compressed one.
    With ``output``, each finished weight is journaled beside it (:mod:`tnviz.model.resume`);
    ``resume``: a run into ``output`` that was stopped continues after its finished weights.
    ``blockwise``: a causal LM's Hugging Face folder compressed one decoder block at a time, with
    one block's weights in memory (:mod:`tnviz.model.blockwise`; each block calibrated on the
    compressed blocks' output); default: when the run is data-aware and the whole-model path would
    need more than the memory available (or ``TNVIZ_MEMORY_BUDGET`` GiB), unless healing or a dense
    export (which need the whole model) is asked for.
    """
    started = time.perf_counter()
    given = truncation_from(max_rank=max_rank, rtol=rtol, energy=energy, ratio=ratio, target_ratio=target_ratio,
                            error_budget=error_budget, required=False)
    if given and (truncation is not None or target is not None):
        raise TnvizError(f"give the truncation once: as truncation/target or as a keyword; got {given} and "
                         f"{truncation or target}")
    if "target" in given:
        target = given["target"]
    elif given:
        truncation = given
    if rules is not None and (layers is not None or truncation is not None):
        raise TnvizError("give either rules or layers/method/truncation, not both")
    if heal is not None and heal not in HEALINGS:
        raise TnvizError(f"healing must be one of {list(HEALINGS)}; got {heal!r}")
    spread = resolve_distributed(distributed)
    lead = not spread or group_rank() == 0
    dev = resolve_device(device)
    if blockwise is None and calibration is None and not spread and heal is None and not dense:
        from .blockwise import wants_blockwise

        blockwise = wants_blockwise(source, data_aware)
    if blockwise:
        if calibration is not None:
            raise TnvizError("a block-by-block compression calibrates on the folder's own inputs; calibration=... "
                             "is for a model given in code")
        rules = list(rules) if rules is not None else rules_from(layers=layers, method=method, truncation=truncation)
        return compress_blockwise(source, output, rules=rules, target=target, data_aware=data_aware, heal=heal,
                                  dense=dense, spread=spread, device=dev, progress=progress, overwrite=overwrite,
                                  resume=resume, placement=placement, bond_split=bond_split,
                                  decompose_options=decompose_options)
    subject = open_subject(source, dev)
    if calibration is not None:
        subject.calibration = list(calibration)
    rules = list(rules) if rules is not None else rules_from(layers=layers, method=method, truncation=truncation)
    aware = subject.has_model and bool(subject.calibration) if data_aware is None else bool(data_aware)
    if aware and subject.has_model and not subject.calibration:
        raise TnvizError("a data-aware compression needs calibration batches; pass calibration=... or data_aware=False")
    if heal is not None and not subject.has_model:
        raise TnvizError(f"healing needs a model with an architecture (a demo name or a Hugging Face folder); "
                         f"{subject.name!r} holds weights only")
    plan = make_plan(subject, rules, target=target, device=dev)
    from .resume import Journal, fingerprint

    journal, target, refusal = None, output if lead else None, None
    if target is not None:
        try:
            check_target(target, overwrite=overwrite, protect=[subject.source.path] if subject.source is not None else [])
        except TnvizError as error:
            refusal = error
    if spread:  # rank 0's output (the CLI gives it to rank 0 alone) and its refusal on every rank: all journal there
        import torch.distributed as dist

        said = [None if target is None else str(target), refusal]
        dist.broadcast_object_list(said, src=0)
        target, refusal = said
    if refusal is not None:
        raise refusal
    if target is not None:
        journal = Journal(target, fingerprint(subject.source, plan, {
            **plan.settings(), "data_aware": aware, "placement": placement, "bond_split": bond_split,
            "decompose": decompose_options, "heal": [heal, heal_steps], "dense": dense}), resume=resume, group=spread)
    if subject.has_model:
        steps = len(plan.layers) + (1 if aware else 0)
        if progress and aware:
            progress(0, steps, "calibration")
        stats = subject.input_stats(plan.names(), dev) if aware else None

        def step(done: int, total: int, label: str) -> None:
            if progress:
                progress(done + (1 if aware else 0), steps, label)

        applied = apply_plan(subject.model, plan, data_aware=aware, stats=stats or {}, device=dev,
                             progress=step if progress else None, placement=placement, bond_split=bond_split,
                             distributed=spread, journal=journal, **decompose_options)
        applied.data_aware = aware and bool(stats)
    else:
        if aware and input_covs is None:
            raise TnvizError(f"a data-aware compression needs calibration inputs; {subject.name!r} holds weights only "
                             f"(pass input_covs=... or data_aware=False)")
        applied = compress_weights(subject.weights, plan, covariances=input_covs if aware else None, device=dev,
                                   progress=progress, placement=placement, bond_split=bond_split,
                                   distributed=spread, journal=journal, **decompose_options)
    result = Compression(subject, applied, _settings(plan, applied.data_aware, placement, bond_split, decompose_options))
    if not lead:  # the other ranks' share is done: rank 0 measures, heals and writes
        result.seconds = time.perf_counter() - started
        return result
    if subject.metric is not None:
        result.metrics = {"original": subject.measure_original(), "compressed": subject.measure(result.model)}
    if heal is not None:
        result.heal(heal, heal_steps, progress)
    result.seconds = time.perf_counter() - started
    if output is not None:
        (result.write_dense if dense else result.write)(output, overwrite=overwrite)
        if journal is not None:
            journal.done()
    result.resumed = journal.resumed if journal is not None else 0
    return result


def _settings(plan: Plan, aware: bool, placement: str, bond_split: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's ``settings`` of a run (without its healing)."""
    settings: dict[str, Any] = {**plan.settings(), "data_aware": aware, "placement": placement,
                                "bond_split": bond_split}
    if options:
        settings["decompose"] = {k: str(v).removeprefix("torch.") if isinstance(v, torch.dtype) else v
                                 for k, v in options.items()}  # precision=torch.float64 as JSON
    return settings


# ---------------------------------------------------------------------- the result
class BlockwiseCompression(Compression):
    """What :func:`compress_blockwise` returns: the layers are modules of a model that is never
    held whole, so the folder's factors are read back from the journal one weight at a time (as
    the model path's TN layers hold them) and every other tensor is copied from the shards."""

    journal: Any = None
    dtypes: dict = None  # layer name -> the module's weight dtype (what its TN layer is built in)

    @property
    def _architecture(self) -> bool:
        return True

    def _factor_items(self) -> list:
        from safetensors.torch import load_file

        from ..nn import TNLinear

        cache: dict[str, dict[str, torch.Tensor]] = {}

        def tensors(r: Any) -> dict[str, torch.Tensor]:
            # the TN layer the model path builds (build_layer: in the module's dtype), its tensors
            if r.name not in cache:
                cache.clear()
                lin = TNLinear.from_tensors(r.network, load_file(str(self.journal.files[r.name])), None, device="cpu",
                                            dtype=self.dtypes[r.name])
                cache[r.name] = {t: v.detach() for t, v in lin.named_network_tensors().items()}
            return cache[r.name]

        items = []
        for r in self.layers:
            dtype = self._dtype_of(r)
            for t, v in tensors(r).items():
                items.append(Item(f"{self._file_name(r.weight_name)}{SEPARATOR}{t}", dtype, tuple(v.shape),
                                  lambda r=r, t=t, d=dtype: tensors(r)[t].to("cpu", getattr(torch, d))))
        cache.clear()
        return items

    def _items(self) -> list:
        weights, src = self.subject.weights, self.subject.source
        if weights is None:
            raise TnvizError(f"the input {self.subject.name!r} was closed before its tensors were written")
        names, _ = self._untouched()
        return self._factor_items() + [Item(n, src.dtypes[n], src.shapes[n], lambda n=n: weights.get(n))
                                       for n in names]

    def heal(self, *args: Any, **kwargs: Any) -> Any:
        raise TnvizError("healing needs the whole model in memory; a block-by-block compression holds one block "
                         "(compress without --blockwise to heal)")

    def write_dense(self, *args: Any, **kwargs: Any) -> Any:
        raise TnvizError("a dense export needs the whole model in memory; a block-by-block compression holds one "
                         "block (compress without --blockwise, or load the folder with load_compressed)")


def compress_blockwise(source: Any, output: Any, *, rules: Any, target: Any = None, data_aware: bool | None = None,
                       heal: Any = None, dense: bool = False, spread: bool = False, device: Any = "cpu",
                       progress: Any = None, overwrite: bool = False, resume: bool = False, placement: str = "auto",
                       bond_split: str = "data", decompose_options: Mapping[str, Any] | None = None,
                       on_stats: Callable[[int | None, dict], None] | None = None) -> "BlockwiseCompression":
    """:func:`tnviz.compress` of a causal LM's Hugging Face folder block by block (:mod:`tnviz.model.blockwise`);
    ``on_stats(block, stats)`` sees each block's calibration statistics as they are collected."""
    from .blockwise import Skeleton, run_blockwise
    from .io import HFFolderWeights, open_weights
    from .resume import Journal, fingerprint
    from .subject import Source, hf_inputs, side_files

    started = time.perf_counter()
    device = resolve_device(device)
    decompose_options = dict(decompose_options or {})
    for refused, why in ((data_aware is False, "it is the data-aware path (without calibration, compress the "
                                               "weights file alone)"),
                         (heal is not None, "healing needs the whole model in memory"),
                         (dense, "a dense export needs the whole model in memory"),
                         (spread, "it runs in one process (a distributed run spreads the whole-model path)"),
                         (output is None, "it writes its progress beside the output as it goes: give an output")):
        if refused:
            raise TnvizError(f"a block-by-block compression cannot run here: {why}")
    if not isinstance(source, (str, os.PathLike)):
        raise TnvizError(f"a block-by-block compression reads a Hugging Face folder or zip; got {type(source).__name__}")
    weights = open_weights(source)
    try:
        if not isinstance(weights, HFFolderWeights):
            raise TnvizError(f"a block-by-block compression reads a Hugging Face folder or zip (config.json + "
                             f"sharded safetensors); {Path(source).name!r} holds weights only")
        skeleton = Skeleton(weights, device)
        src = Source.of_weights(weights, None, skeleton.keys)
        if Path(source).is_file():
            src.path = str(source)
        src.side_files = side_files(Path(weights.folder))
        kind, calibration, heldout, inputs = hf_inputs(weights, device)
        subject = Subject(Path(source).name, kind, None, calibration, heldout, inputs, src, weights=weights)
        plan = skeleton.plan(rules, target, device)
        check_target(output, overwrite=overwrite, protect=[src.path])
        journal = Journal(output, fingerprint(src, plan, {
            **plan.settings(), "data_aware": True, "placement": placement, "bond_split": bond_split,
            "decompose": dict(decompose_options), "heal": [None, None], "dense": False, "blockwise": True}),
            resume=resume)
        applied, metrics = run_blockwise(skeleton, plan, calibration, heldout, journal=journal, progress=progress,
                                         on_stats=on_stats, placement=placement, bond_split=bond_split,
                                         **decompose_options)
        settings = {**_settings(plan, True, placement, bond_split, decompose_options), "blockwise": True}
        result = BlockwiseCompression(subject, applied, settings, metrics)
        with skeleton.with_blocks() as model:
            modules = dict(model.named_modules())
            result.dtypes = {r.name: modules[r.name].weight.dtype for r in applied.layers}
        result.journal = journal
        result.resumed = journal.resumed
        result.seconds = time.perf_counter() - started
        result.write(output, overwrite=overwrite)
        journal.done()
        return result
    finally:
        weights.close()


__all__ = ["Compression", "BlockwiseCompression", "HealOutcome", "compress", "compress_blockwise", "rules_from",
           "Options"]

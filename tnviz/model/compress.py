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

>>> import tnviz
>>> result = tnviz.compress("digits-mlp", layers=r"fc[12]$", ratio=8)     # with "out/": the folder too
>>> result.totals["ratio"] > 7, sorted(result.metrics)
(True, ['compressed', 'original'])
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ..errors import TnvizError
from .apply import Options, apply_plan, compress_weights
from .device import resolve_device
from .distributed import group_active
from .distributed import rank as group_rank
from .distributed import resolve as resolve_distributed
from .folder import SEPARATOR, Item, check_target
from .heal import HEALINGS
from .plan import Plan, Rule, make_plan, truncation_from
from .subject import Subject, open_subject

from .result import Compression, HealOutcome, ProgressFn  # noqa: F401 (re-exported)


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
             dense: bool = False, resume: bool = False, order_search: bool = False, blockwise: bool | None = None,
             **decompose_options: Any) -> Compression:
    """Compress ``source`` (see the module doc) and, with ``output``, write the compressed folder.

    What to compress: ``rules`` (per name pattern: method, truncation, legs; first match wins), or
    the one rule of ``layers`` (a regex over module names, or tensor names for a weights-only file)
    with ``method`` (a decomposition, or ``"auto"``: per weight the network with the lowest error at
    its parameter budget, :mod:`tnviz.model.auto`) and one truncation: ``max_rank``, ``rtol``, ``energy``, ``ratio`` (each layer's),
    or a global ``target_ratio`` / ``error_budget`` spread over the layers by sensitivity (also
    given as ``truncation={...}`` / ``target={...}``; default ``ratio=2``).  ``data_aware``
    (default: when the input has an architecture) minimises each layer's error on the calibration
    inputs (``calibration`` batches for an ``nn.Module`` given in code; ``input_covs`` by weight
    name for a weights-only file).  ``heal``: a key of :data:`tnviz.model.heal.HEALINGS`, kept only
    where it helps the held-out metric.  ``progress(done, total, label)`` is called as it goes.
    ``distributed`` (default ``None``: when a torch.distributed process group of several ranks is
    initialized; ``True``: over the initialized group of any size, one rank included; with nccl,
    each rank after ``torch.cuda.set_device`` of its own GPU): the weights
    are spread over the ranks (:mod:`tnviz.model.distributed`); rank 0 measures, heals and writes
    ``output`` (the single-process run's bytes), the other ranks return the layers only.  ``dense``: ``output`` is written as a plain Hugging Face folder of dense
    weights rebuilt from the networks (:meth:`Compression.write_dense`) instead of the compressed one.
    With ``output``, each finished weight is journaled beside it (:mod:`tnviz.model.resume`);
    ``resume``: a run into ``output`` that was stopped continues after its finished weights.
    ``order_search``: re-order the hidden neurons of each feed-forward pair before decomposing it
    (:mod:`tnviz.model.permute`; the model's function is unchanged); the folder stores the
    permutations and its reader applies them (:func:`tnviz.model.folder.load_compressed`).
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
    several = spread and group_active()  # a 1-rank group runs the spread code alone: block by block too
    dev = resolve_device(device)
    if blockwise and order_search:
        raise TnvizError("the neuron-order search needs the whole model (it permutes both weights of a pair); "
                         "a block-by-block run cannot do it: drop order_search or pass blockwise=False")
    if blockwise is None and calibration is None and not several and heal is None and not dense and not order_search:
        from .blockwise import wants_blockwise

        blockwise = wants_blockwise(source, data_aware)
    if blockwise:
        if calibration is not None:
            raise TnvizError("a block-by-block compression calibrates on the folder's own inputs; calibration=... "
                             "is for a model given in code")
        rules = list(rules) if rules is not None else rules_from(layers=layers, method=method, truncation=truncation)
        return compress_blockwise(source, output, rules=rules, target=target, data_aware=data_aware, heal=heal,
                                  dense=dense, spread=several, device=dev, progress=progress, overwrite=overwrite,
                                  resume=resume, placement=placement, bond_split=bond_split,
                                  decompose_options=decompose_options)
    subject = open_subject(source, dev)
    if calibration is not None:
        subject.calibration = list(calibration)
    rules = list(rules) if rules is not None else rules_from(layers=layers, method=method, truncation=truncation)
    aware = subject.has_model and bool(subject.calibration) if data_aware is None else bool(data_aware)
    if aware and subject.has_model and not subject.calibration:
        raise TnvizError("a data-aware compression needs calibration batches; pass calibration=... or data_aware=False")
    if order_search and not subject.has_model:
        raise TnvizError(f"the order search needs a model with an architecture (its feed-forward pairs); "
                         f"{subject.name!r} holds weights only")
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
            "decompose": decompose_options, "heal": [heal, heal_steps], "dense": dense,
            **({"order_search": True} if order_search else {})}), resume=resume, group=spread)
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
                             distributed=spread, journal=journal, order_search=order_search, **decompose_options)
        applied.data_aware = aware and bool(stats)
    else:
        if aware and input_covs is None:
            raise TnvizError(f"a data-aware compression needs calibration inputs; {subject.name!r} holds weights only "
                             f"(pass input_covs=... or data_aware=False)")
        applied = compress_weights(subject.weights, plan, covariances=input_covs if aware else None, device=dev,
                                   progress=progress, placement=placement, bond_split=bond_split,
                                   distributed=spread, journal=journal, **decompose_options)
    result = Compression(subject, applied, _settings(plan, applied.data_aware, placement, bond_split, decompose_options,
                                                     order_search))
    if spread:  # where it ran: the report's, never the folder's (a spread run writes the single-process bytes)
        import torch.distributed as dist

        result.world_size, result.backend = dist.get_world_size(), str(dist.get_backend())
    if not lead:  # the other ranks' share is done: rank 0 measures, heals and writes
        result.seconds = time.perf_counter() - started
        return result
    if subject.metric is not None:
        result.metrics = {"original": subject.measure_original(), "compressed": subject.measure(result.model)}
    if heal is not None:
        result.heal(heal, heal_steps, progress)
    result.seconds = time.perf_counter() - started
    if output is not None:
        written = (result.write_dense if dense else result.write)(output, overwrite=overwrite)
        if journal is not None:
            _off_the_journal(applied.factors, written, dense)
            journal.done()
    result.resumed = journal.resumed if journal is not None else 0
    return result


def _off_the_journal(factors: Any, written: Path, dense: bool) -> None:
    """The factors a weights-only run left in its progress folder, read from ``written`` from now
    on (the folder's ``model.safetensors`` holds them under ``<weight>::<tensor>``), or, after a
    dense export (which holds none), known to be gone."""
    from .folder import SEPARATOR, WEIGHTS_FILE

    if not factors.on_disk_count:
        return
    if dense:
        factors.forget_files(f"the run wrote the dense folder {str(written)!r} and removed its progress folder; "
                             f"compress without --dense (or without an output) to keep them")
    else:
        factors.repoint(Path(written) / WEIGHTS_FILE, lambda name: f"{name}{SEPARATOR}")


def _settings(plan: Plan, aware: bool, placement: str, bond_split: str, options: Mapping[str, Any],
              order_search: bool = False) -> dict[str, Any]:
    """The manifest's ``settings`` of a run (without its healing)."""
    settings: dict[str, Any] = {**plan.settings(), "data_aware": aware, "placement": placement,
                                "bond_split": bond_split}
    if order_search:  # only when asked: the folders of runs without it keep their bytes
        settings["order_search"] = True
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

"""Data-aware compression of a causal LM that does not fit in memory, one decoder block at a time.

The model is built from ``config.json`` with its parameters on the meta device (no memory; its
buffers, such as the rotary frequencies, real), and only the tensors outside the decoder blocks
(embeddings, final norm, head) are read from the shards.  Then:

1. the calibration batches run through the model's own forward up to the first block, whose
   stand-in records the hidden states and what the model passes every block (attention masks,
   position embeddings): the model's code builds them, for any layout transformers knows;
   planned embeddings are compressed first (they have no input covariance), so block 0 sees
   the compressed embedding's output;
2. block by block: a copy of block ``k`` from the meta model gets its tensors, read one by one
   from the mmap'd shards; the hidden states pushed through it give its linear layers' input
   covariances (padding rows left out, as in the whole-model pass); its planned weights are
   compressed by :func:`tnviz.model.apply.apply_plan` (one function for every path) and
   journaled (:mod:`tnviz.model.resume`); the *compressed* block's output becomes the next
   block's input; the block is freed.  The held-out batches follow the same way through the
   original blocks and the compressed ones, for the metric;
3. the planned weights after the blocks (an untied ``lm_head``) are compressed on the final
   hidden states, and perplexity and next-token KL (:func:`tnviz.model.evaluate.causal_lm_report`)
   are computed from the two held-out streams through the model's own norm and head.

Only one block's weights (and its compressed copy) are resident.  The folder is written by the
same writer as the whole-model path (:meth:`tnviz.model.compress.Compression.write`), streamed:
each factor is read back from the journal at its turn, every other tensor copied from the shards.

Block 0's covariances equal the whole-model pass's; a later block's are those of its input after
the compressed blocks before it (what the compressed model feeds it), so the result differs from
the whole-model path's, which calibrates every layer on the original model's activations.
"""
from __future__ import annotations

import contextlib
import copy
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..errors import ModelFileError, TnvizError
from .apply import Applied, apply_plan
from ..nn.workspace import release
from .memory import available_bytes, map_large_blocks, trim

#: Bytes per model value the whole-model data-aware path holds: the float32 model and its copy.
WHOLE_MODEL_BYTES_PER_VALUE = 8


class _Stop(Exception):
    """Raised by the last stand-in of a capture: nothing after the blocks is needed."""


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device and their buffers real
    (a rotary embedding's frequencies are computed, not read).  Tied parameters stay tied."""
    register = nn.Module.register_parameter

    def on_meta(self: nn.Module, name: str, param: Any) -> None:
        register(self, name, param)
        if param is not None and param.device.type != "meta":
            self._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


class _Shared:
    """What the stand-ins read and write: never copied with the model they sit in."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.mode = "capture"
        self.calls: list[tuple[torch.Tensor, tuple, dict]] = []
        self.final: dict[int, torch.Tensor] = {}  # id(batch's input_ids) -> final hidden states
        self.key: int | None = None

    def __deepcopy__(self, memo: dict) -> "_Shared":
        return self


class _StandIn(nn.Module):
    """Block ``index`` of the model while blocks are run one by one: in a capture it records
    its call (and the last one stops the forward); in a replay the first returns the final
    hidden states of the batch and the others pass them on."""

    def __init__(self, index: int, shared: _Shared, attention_type: Any = None) -> None:
        super().__init__()
        self.index, self.shared = index, shared
        if attention_type is not None:
            self.attention_type = attention_type

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        s = self.shared
        if s.mode == "capture":
            s.calls.append((hidden_states, args, kwargs))
            if self.index == s.count - 1:
                raise _Stop
            return hidden_states
        return s.final[s.key] if self.index == 0 else hidden_states


class _Once(dict):
    """Statistics by layer name, each let go once a decomposition has read it."""

    def get(self, key: Any, default: Any = None) -> Any:
        return self.pop(key, default)


class _Slot:
    """The arguments the model passes one block for one batch (besides the hidden states)."""

    def __init__(self, args: tuple, kwargs: dict) -> None:
        self.args, self.kwargs = args, kwargs

    def __deepcopy__(self, memo: dict) -> "_Slot":
        return self


class _Stage(nn.Module):
    """One block at its own module path, so that its layers carry the whole model's names
    (``model.layers.3.mlp.up_proj``), run on stored hidden states."""

    def __init__(self, path: str, block: nn.Module) -> None:
        super().__init__()
        parent: nn.Module = self
        *outer, leaf = path.split(".")
        for part in outer:
            child = nn.Module()
            parent.add_module(part, child)
            parent = child
        parent.add_module(leaf, block)
        self.path = path

    def forward(self, hidden_states: torch.Tensor, slot: _Slot, attention_mask: Any = None) -> torch.Tensor:
        out = self.get_submodule(self.path)(hidden_states, *slot.args, **slot.kwargs)
        return out[0] if isinstance(out, tuple) else out


class _Replayed(nn.Module):
    """The model's head run on the stored final hidden states of each batch (the metric's view
    of a model whose blocks were run one at a time)."""

    def __init__(self, outer: nn.Module, shared: _Shared, final: Mapping[int, torch.Tensor]) -> None:
        super().__init__()
        self.outer, self.shared, self.final = outer, shared, dict(final)

    def forward(self, **batch: Any) -> Any:
        self.shared.mode, self.shared.final = "replay", self.final
        self.shared.key = id(batch["input_ids"])
        return self.outer(**batch, use_cache=False)


# ---------------------------------------------------------------------- the skeleton
def block_list(model: nn.Module, config: Mapping[str, Any]) -> tuple[str, nn.ModuleList]:
    """The path and the ModuleList of a decoder's blocks: the largest ModuleList whose length is
    the config's layer count."""
    from .hf import LAYER_COUNT_KEYS

    count = next((config[k] for k in LAYER_COUNT_KEYS if isinstance(config.get(k), int)), None)
    found = [(sum(p.numel() for p in m.parameters()), name, m) for name, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) == count and count]
    if not found:
        raise TnvizError(f"block-by-block compression needs a model whose decoder blocks form one list of "
                         f"the config's {count} layers; {type(model).__name__} has none")
    _, name, blocks = max(found, key=lambda f: f[0])
    return name, blocks


class Skeleton:
    """A Hugging Face causal LM with every tensor outside its blocks read from the weights and the
    blocks left on the meta device; :meth:`block` gives one block with its tensors."""

    def __init__(self, weights: Any, device: torch.device) -> None:
        from .hf import _build, check_architecture, check_config, is_causal_lm, tied_aliases

        config = dict(weights.config or {})
        check_config(config, weights)
        if config.get("model_type") == "bert" or not is_causal_lm(config, weights):
            raise TnvizError(f"block-by-block compression is for causal language models (LLaMA, Mistral, Qwen2, "
                             f"GPT-2 ...); {weights.folder.name!r} is a {config.get('model_type')!r} model that is not")
        with parameters_on_meta():
            model = _build(config, causal=True)
        self.keys = check_architecture(model, weights, config)
        self.aliases = tied_aliases(model)
        self.weights, self.device, self.config = weights, device, config
        self.path, blocks = block_list(model, config)
        self.meta_blocks = list(blocks)
        self.shared = _Shared(len(blocks))
        for k, block in enumerate(blocks):
            blocks[k] = _StandIn(k, self.shared, getattr(block, "attention_type", None))
        self._materialize(model, "")
        self.model = model.to(device).eval()

    def _value(self, name: str, like: torch.Tensor) -> torch.Tensor:
        key = self.keys.get(name) or self.keys.get(self.aliases.get(name, ""))
        if key is None:
            raise ModelFileError(f"the weights must hold every tensor of the architecture; {name!r} is missing")
        return self.weights.get(key).to(like.dtype)

    def _materialize(self, module: nn.Module, prefix: str) -> None:
        """Every meta parameter of ``module`` (its names under ``prefix``) read from the weights;
        one tensor for parameters shared by several modules."""
        made: dict[int, nn.Parameter] = {}
        for name, p in module.named_parameters(prefix=prefix.rstrip("."), remove_duplicate=False):
            if p.device.type != "meta":
                continue
            if id(p) not in made:
                made[id(p)] = nn.Parameter(self._value(name, p), requires_grad=False)
            owner, _, leaf = name[len(prefix):].rpartition(".")
            (module.get_submodule(owner) if owner else module)._parameters[leaf] = made[id(p)]
        for name, b in module.named_buffers(prefix=prefix.rstrip(".")):
            if name in self.keys:  # a persistent buffer the checkpoint holds (non-persistent ones are computed)
                b.copy_(self._value(name, b))

    def block(self, k: int) -> nn.Module:
        """Block ``k`` with its tensors read from the weights, on the device."""
        block = copy.deepcopy(self.meta_blocks[k])
        self._materialize(block, f"{self.path}.{k}.")
        return block.to(self.device).eval()

    @contextlib.contextmanager
    def with_blocks(self) -> Iterator[nn.Module]:
        """The model with its meta blocks in place of the stand-ins (for the layer table)."""
        blocks = self.model.get_submodule(self.path)
        standins = list(blocks)
        for k, b in enumerate(self.meta_blocks):
            blocks[k] = b
        try:
            yield self.model
        finally:
            for k, b in enumerate(standins):
                blocks[k] = b

    def plan(self, rules: Any, target: Any, device: Any) -> Any:
        """The plan of the whole model (names and shapes from the meta blocks; a global target's
        allocation reads each weight from the shards, one at a time)."""
        from types import SimpleNamespace

        from .plan import make_plan

        with self.with_blocks() as model:
            modules = dict(model.named_modules())

            def read(info: Any) -> torch.Tensor:
                value = self._value(info.weight_name, modules[info.name].weight)
                return value.t() if info.transposed else value

            return make_plan(SimpleNamespace(model=model, weights=None, read_weight=read), rules, target=target,
                             device=device)

    def block_bytes(self, k: int) -> int:
        return sum(p.numel() * p.element_size() for p in self.meta_blocks[k].parameters())

    @torch.no_grad()
    def capture(self, outer: nn.Module, batches: Sequence[Mapping[str, Any]]) -> tuple[list, list[list[_Slot]]]:
        """Each batch's hidden states at the first block (through ``outer``'s embeddings) and what
        the model passes each block for it."""
        hidden, slots = [], []
        for batch in batches:
            self.shared.mode, self.shared.calls = "capture", []
            try:
                outer(**batch, use_cache=False)
            except _Stop:
                pass
            calls = self.shared.calls
            if len(calls) != self.shared.count:
                raise TnvizError(f"block-by-block compression needs the model to call each of its "
                                 f"{self.shared.count} blocks once per forward; it called {len(calls)}")
            hidden.append(calls[0][0])
            slots.append([_Slot(a, kw) for _, a, kw in calls])
            self.shared.calls = []
        return hidden, slots


# ---------------------------------------------------------------------- deciding
def whole_model_bytes(weights: Any) -> int:
    """What the whole-model data-aware path holds for these weights (the model and its copy, float32)."""
    return WHOLE_MODEL_BYTES_PER_VALUE * sum(weights.numel(n) for n in weights.names())


def memory_budget() -> int | None:
    """The memory a whole-model run may use: ``TNVIZ_MEMORY_BUDGET`` (GiB) or what the system has available now."""
    import os

    text = os.environ.get("TNVIZ_MEMORY_BUDGET")
    if text:
        try:
            value = float(text)
        except ValueError:
            raise TnvizError(f"TNVIZ_MEMORY_BUDGET must be a number of GiB; got {text!r}") from None
        if value <= 0:
            raise TnvizError(f"TNVIZ_MEMORY_BUDGET must be a positive number of GiB; got {text!r}")
        return int(value * 2**30)
    return available_bytes()


def wants_blockwise(source: Any, data_aware: bool | None) -> bool:
    """The automatic choice: a data-aware run of a causal LM's Hugging Face folder (not a zip: a
    model that does not fit in memory is not uploaded as one) whose whole-model run would need
    more than :func:`memory_budget`."""
    import os

    from .demos import DEMOS

    if data_aware is False or not isinstance(source, (str, os.PathLike)) or str(source) in DEMOS:
        return False
    path = Path(source)
    if not path.is_dir():
        return False
    from .hf import is_causal_lm
    from .io import HFFolderWeights, open_weights

    try:
        weights = open_weights(path)
    except (ModelFileError, OSError):
        return False  # the whole-model path opens it again and says what is wrong
    try:
        if not isinstance(weights, HFFolderWeights):
            return False
        config = weights.config or {}
        if config.get("model_type") == "bert" or not is_causal_lm(config, weights):
            return False
        budget = memory_budget()
        return budget is not None and whole_model_bytes(weights) > budget
    finally:
        weights.close()


# ---------------------------------------------------------------------- the run
def _sub_plan(plan: Any, names: Sequence[str]) -> Any:
    from dataclasses import replace

    wanted = set(names)
    return replace(plan, layers=tuple(lp for lp in plan.layers if lp.name in wanted))


def _merge(applied: Applied, results: list, skipped: list) -> None:
    results.extend(applied.layers)
    skipped.extend(applied.skipped)


@torch.no_grad()
def _run(stage: nn.Module, hidden: list, slots: list[list[_Slot]], k: int) -> list:
    out = []
    for h, s in zip(hidden, slots):
        out.append(stage(h, s[k]))
        release()  # TN layers pool their intermediates by size (tnviz.nn.workspace): each batch has its own
    return out


def run_blockwise(skeleton: Skeleton, plan: Any, calibration: Sequence[Mapping[str, Any]],
                  heldout: Sequence[Mapping[str, Any]], *, journal: Any = None, progress: Any = None,
                  on_stats: Callable[[int | None, dict], None] | None = None, measure: bool = True,
                  **apply_options: Any) -> tuple[Applied, dict[str, dict[str, float]]]:
    """The block-by-block run of the module doc: the layers compressed (in plan order) and the
    metrics (``{}`` without ``measure``).  ``on_stats(block, stats)`` sees each block's
    calibration statistics (``block`` ``None`` for the layers after the blocks)."""
    from .apply import calibration_stats
    from .calibrate import collect_input_stats
    from .evaluate import causal_lm_report

    started = time.perf_counter()
    map_large_blocks()  # a decomposition's temporaries go back to the system as it frees them
    dev = skeleton.device
    prefix = skeleton.path + "."
    count = len(skeleton.meta_blocks)
    modules = dict(skeleton.model.named_modules())
    by_block: dict[int, list[str]] = {}
    first, last = [], []
    for lp in plan.layers:
        if lp.name.startswith(prefix):
            by_block.setdefault(int(lp.name[len(prefix):].split(".", 1)[0]), []).append(lp.name)
        elif isinstance(modules.get(lp.name), nn.Embedding):
            first.append(lp.name)
        else:
            last.append(lp.name)
    total = len(plan.layers) + count + 1
    done = [0]

    def step(label: str, n: int = 1) -> None:
        done[0] += n
        if progress:
            progress(min(done[0], total), total, label)

    results: list = []
    skipped: list = []
    original = skeleton.model
    held_orig, slots_held = skeleton.capture(original, heldout) if measure else ([], [])
    compressed = original
    if first:  # the embeddings: no input covariance; the blocks see their compressed output
        applied = apply_plan(original, _sub_plan(plan, first), data_aware=False, device=dev, journal=journal,
                             **apply_options)
        _merge(applied, results, skipped)
        compressed = applied.model
        step("embeddings", len(first))
    calib, slots_calib = skeleton.capture(compressed, calibration)
    held_comp = skeleton.capture(compressed, heldout)[0] if measure else []
    for k in range(count):
        path = f"{skeleton.path}.{k}"
        stage = _Stage(path, skeleton.block(k))
        names = by_block.get(k, [])
        if measure:
            held_orig = _run(stage, held_orig, slots_held, k)
            trim()
        if names:
            unfinished = [n for n in names if journal is None or n not in journal.finished]
            batches = [{"hidden_states": h, "slot": s[k], "attention_mask": b.get("attention_mask")}
                       for h, s, b in zip(calib, slots_calib, calibration)]
            stats = _Once(collect_input_stats(stage, batches, unfinished, device=dev) if unfinished else {})
            del batches
            if on_stats is not None:
                on_stats(k, dict(stats))
            applied = apply_plan(stage, _sub_plan(plan, names), data_aware=True, stats=stats, device=dev,
                                 journal=journal, in_place=True, workers=1, **apply_options)
            _merge(applied, results, skipped)
            stage = applied.model  # the original block goes with its statistics
            del applied, stats
            trim()
            step(f"block {k}", len(names))
        calib = _run(stage, calib, slots_calib, k)
        if measure:
            held_comp = _run(stage, held_comp, slots_held, k)
        del stage
        release()  # the TN layers' pooled intermediates (tnviz.nn.workspace): this block's are not needed again
        trim()
        step(f"block {k}")
    shared = skeleton.shared
    final_calib = {id(b["input_ids"]): h for b, h in zip(calibration, calib)}
    if last:
        replayed = _Replayed(compressed, shared, final_calib)
        chosen = [n for n in last if journal is None or n not in journal.finished]
        stats = calibration_stats(replayed, list(calibration), [f"outer.{n}" for n in chosen], dev) if chosen else {}
        stats = {n.removeprefix("outer."): s for n, s in stats.items()}
        if on_stats is not None:
            on_stats(None, stats)
        applied = apply_plan(compressed, _sub_plan(plan, last), data_aware=True, stats=stats, device=dev,
                             journal=journal, **apply_options)
        _merge(applied, results, skipped)
        compressed = applied.model
        step("head", len(last))
    metrics: dict[str, dict[str, float]] = {}
    if measure and heldout:
        reference = _Replayed(original, shared, {id(b["input_ids"]): h for b, h in zip(heldout, held_orig)})
        model = _Replayed(compressed, shared, {id(b["input_ids"]): h for b, h in zip(heldout, held_comp)})
        metrics = {"original": causal_lm_report(reference, reference, heldout).as_dict(),
                   "compressed": causal_lm_report(reference, model, heldout).as_dict()}
    step("done")
    order = {lp.name: i for i, lp in enumerate(plan.layers)}
    results.sort(key=lambda r: order[r.name])
    skipped.sort(key=lambda s: order[s["name"]])
    applied = Applied(results, skipped, True, str(dev), time.perf_counter() - started, plan)
    return applied, metrics

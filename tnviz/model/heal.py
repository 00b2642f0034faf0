"""Heal a tensorized model: a short fine-tune after compression.

* :func:`heal_layerwise`: each TN layer is distilled to the original layer's outputs on the
  calibration inputs (a few Adam steps on ``||f_TN(x) - f(x_orig)||^2 / ||f(x_orig)||^2``). With
  ``inputs='compressed'`` (default) ``x`` is what the layer sees inside the compressed model after
  the layers before it were healed (one calibration pass per layer, in forward order), so each
  layer also undoes the remaining error of those before it; ``'original'`` uses the original
  model's inputs (one pass in all; pure per-layer distillation). Padding tokens (``attention_mask`` 0) are left out.
* :func:`heal_distill`: every TN layer distilled jointly to the original model's outputs on the
  calibration inputs (no labels; the layers correct one another's errors at the model's end).
* :func:`heal_end_to_end`: the whole compressed model trained on labelled data (the digits demos).

All are seeded, change the model in place and return a :class:`HealReport` (loss history).
:data:`HEALINGS` is the registry the CLI's ``--heal`` choices, the app's radio and the tests share;
:func:`heal` runs one on a compressed model of a :class:`~tnviz.model.subject.Subject`.

>>> import torch
>>> from tnviz.model.plan import Rule, make_plan
>>> from tnviz.model.apply import apply_plan
>>> _ = torch.manual_seed(0)
>>> model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
>>> batches = [torch.randn(256, 64)]
>>> rule = Rule("^0$", "mpo", {"max_rank": 2}, in_dims=(8, 8), out_dims=(8, 8))
>>> result = apply_plan(model, make_plan(model, [rule]), calibration=batches, device="cpu")
>>> report = heal_layerwise(result.model, model, batches, steps=50)
>>> report.loss_after["0"] < report.loss_before["0"]
True
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..errors import TnvizError
from ..nn import TNEmbedding, workspace
from .calibrate import call_model
from .data import digits_split
from .evaluate import first_tensor, position_mask
from .replay import block_of, find_blocks, replaying
from .surgery import tn_modules, to_device

if TYPE_CHECKING:
    from .subject import Subject

ProgressFn = Callable[[int, int, str], None]


@dataclass
class HealReport:
    """Per layer (layer-wise) or for the model (``'model'``, end-to-end): loss before and after."""

    mode: str
    loss_before: dict[str, float] = field(default_factory=dict)
    loss_after: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    kept: list[str] = field(default_factory=list)  # layers whose healing did not lower the loss (left as they came)
    layer_steps: dict[str, int] = field(default_factory=dict)  # steps each layer trained (early stop, budget)
    # the training loss as it went, per layer (layer-wise) or for "model": one value per step
    # (per epoch for end-to-end, the mean over its batches), the loss that loss_before/after measure
    curve: dict[str, list[float]] = field(default_factory=dict)


LossFn = Callable[[str, float], None]
"""Called with (curve name, training loss) at every point a healing adds to its curve."""


def _record(report: "HealReport", name: str, value: float, on_loss: LossFn | None) -> None:
    report.curve.setdefault(name, []).append(value)
    if on_loss:
        on_loss(name, value)


def _rows(x: torch.Tensor, mask: torch.Tensor | None, conv: bool) -> torch.Tensor:
    if conv:
        return x
    if mask is not None and tuple(x.shape[:-1]) == tuple(mask.shape):
        x = x[mask.to(x.device)]
    return x.reshape(-1, x.shape[-1])


class _Seen(Exception):
    """Raised by a capture hook once every wanted input of a batch is stored: the rest of that
    forward pass is not needed (on MiniLM this halves the cost of layer-wise healing's captures)."""


@torch.no_grad()
def _capture(model: nn.Module, names: Sequence[str], batches: Sequence[Any], want_output: bool,
             want_input: bool = True) -> dict:
    """The inputs (``'x'``, unless not ``want_input``) and, with ``want_output``, the outputs
    (``'y'``) of modules ``names`` on ``batches``, as rows (padding tokens left out).  Without
    outputs, each forward pass stops as soon as every module has been reached: what comes after
    cannot change what it saw."""
    modules = dict(model.named_modules())
    store: dict[str, dict[str, list]] = {n: {"x": [], "y": []} for n in names}
    state: dict[str, Any] = {"mask": None, "seen": set()}

    def hook(name: str, conv: bool):
        def run(module, args, kwargs, output):
            if want_input:
                x = args[0] if args else kwargs["input"]
                store[name]["x"].append(_rows(x.detach(), state["mask"], conv))
            if want_output:
                store[name]["y"].append(_rows(output.detach(), state["mask"], conv))
            else:
                state["seen"].add(name)
                if len(state["seen"]) == len(store):
                    raise _Seen
        return run

    handles = []
    for n in names:
        conv = isinstance(modules[n], nn.Conv2d) or hasattr(modules[n], "kernel_size")
        handles.append(modules[n].register_forward_hook(hook(n, conv), with_kwargs=True))
    was = model.training
    model.eval()
    try:
        for batch in batches:
            state["mask"] = batch["attention_mask"].bool() if isinstance(batch, Mapping) and "attention_mask" in batch else None
            state["seen"] = set()
            try:
                call_model(model, batch)
            except _Seen:
                pass
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return {n: {k: torch.cat(v) for k, v in d.items() if v} for n, d in store.items()}


class _CompressedInputs:
    """What each layer of ``names`` sees inside ``model`` now, asked for layer after layer in
    forward order while the layers before are being changed (healed).

    A layer in block ``b`` of a model whose blocks sit in one ``nn.ModuleList`` (one call each per
    forward, a tensor out: :func:`tnviz.model.replay.find_blocks`) depends only on the output of
    block ``b - 1``; once no layer still to come sits in blocks ``< b``, that output is final.  It
    is recorded on the way (a hook on the block, during the capture that runs it anyway), and
    later captures replay the latest recording instead of running the model from its start: a
    layer's capture runs its own block and at most the one before, not every block before it, with
    the same numbers.  Layers outside the blocks, or models of another shape, get a full capture
    each (stopped at the layer, as :func:`_capture` does)."""

    def __init__(self, model: nn.Module, names: Sequence[str], batches: Sequence[Any], replay: bool = True):
        self.model, self.names, self.batches = model, list(names), batches
        found = find_blocks(model, self.names) if replay else None
        self.prefix, self.blocks = found if found is not None else ("", None)
        self.recorded: tuple[int, list] | None = None  # (block j, its final outputs per batch)
        self.passes = 0  # forward calls of the model, for the tests

    def _block(self, name: str) -> int | None:
        return None if self.blocks is None else block_of(name, self.prefix)

    def __call__(self, name: str) -> torch.Tensor:
        """The input rows of layer ``name``; every layer before it in ``names`` is final."""
        b = self._block(name)
        later = self.names[self.names.index(name):]
        # blocks < b hold no layer still to change (layers outside the blocks may sit anywhere)
        settled = b is not None and all(self._block(n) is None or self._block(n) >= b for n in later) \
            and all(self._block(n) is not None for n in later)
        if not settled:
            self.recorded = None
            self.passes += len(self.batches)
            return _capture(self.model, [name], self.batches, want_output=False)[name]["x"]
        replay = self.recorded if self.recorded is not None and self.recorded[0] < b else None
        record = b - 1 if b > 0 and (replay is None or replay[0] < b - 1) else None
        outputs: list = []
        handle = None if record is None else \
            self.blocks[record].register_forward_hook(lambda module, args, out: outputs.append(out))
        try:
            with replaying(self.blocks, replay[0] + 1, replay[1]) if replay else contextlib.nullcontext():
                self.passes += len(self.batches)
                x = _capture(self.model, [name], self.batches, want_output=False)[name]["x"]
        finally:
            if handle is not None:
                handle.remove()
        if record is not None:
            usable = len(outputs) == len(self.batches) and all(isinstance(o, torch.Tensor) for o in outputs)
            self.recorded = (record, outputs) if usable else None
            if not usable:
                self.blocks = None  # not one call with a tensor out per forward: full captures from here
        return x


class Adam:
    """Adam (Kingma & Ba), the update of ``torch.optim.Adam``'s defaults (no weight decay, no
    amsgrad) step for step, bit for bit on CPU (tests/test_model_heal.py), on ``torch._foreach``
    ops: one call per op for all the parameters, and no ``torch.optim`` (whose first optimizer
    imports ``torch._dynamo``: 3 s of a first healing on the 2-core development CPU).  Parameters
    without a gradient are left as they are."""

    def __init__(self, params: Sequence[torch.Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params = [p for p in params]
        if not self.params:
            raise TnvizError("Adam needs at least one parameter; got none")
        if not lr > 0 or not 0 <= betas[0] < 1 or not 0 <= betas[1] < 1 or not eps >= 0:
            raise TnvizError(f"Adam needs lr > 0, betas in [0, 1) and eps >= 0; got lr={lr}, betas={betas}, eps={eps}")
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.state: dict[int, tuple[torch.Tensor, torch.Tensor, list[int]]] = {}

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [p for p in self.params if p.grad is not None]
        if not live:
            return
        beta1, beta2 = self.betas
        for p in live:
            if id(p) not in self.state:
                self.state[id(p)] = (torch.zeros_like(p, memory_format=torch.preserve_format),
                                     torch.zeros_like(p, memory_format=torch.preserve_format), [0])
        states = [self.state[id(p)] for p in live]
        grads = [p.grad for p in live]
        avgs, sqs = [s[0] for s in states], [s[1] for s in states]
        for s in states:
            s[2][0] += 1
        torch._foreach_lerp_(avgs, grads, 1 - beta1)
        torch._foreach_mul_(sqs, beta2)
        torch._foreach_addcmul_(sqs, grads, grads, 1 - beta2)
        steps = [float(s[2][0]) for s in states]
        step_size = [(self.lr / (1 - beta1 ** t)) * -1 for t in steps]
        root = [(1 - beta2 ** t) ** 0.5 for t in steps]
        denom = torch._foreach_sqrt(sqs)
        torch._foreach_div_(denom, root)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(live, avgs, denom, step_size)


def heal_layerwise(model: nn.Module, original: nn.Module, batches: Sequence[Any], *, steps: int = 100,
                   lr: float = 1e-3, batch_rows: int = 512, inputs: str = "compressed", seed: int = 0,
                   progress: ProgressFn | None = None, holdout: float = 0.0, eval_every: int = 10,
                   patience: int = 2, budget_s: float | None = None, on_loss: LossFn | None = None,
                   replay: bool = True) -> HealReport:
    """Distil each TN layer of ``model`` (in place) to the matching layer of ``original``.

    ``batches`` are calibration inputs on the models' devices (moved as needed); Embedding
    layers are skipped (their inputs are token ids).  A seeded ``holdout`` share of each layer's
    rows is not trained on: every ``eval_every`` steps its loss is measured, the layer keeps its
    best state on it (its state before healing included, so no layer ends worse on held-out rows
    than it came), and training stops after ``patience`` measurements without improvement or when
    the layer's share of ``budget_s`` (seconds for the whole healing, spread over the layers
    left) is spent.  ``holdout=0`` (default) trains on every row for ``steps`` steps (or until
    the budget is spent) and judges on every row.  Not the default yet: on the digits MLP at ratio
    16 (60 steps, lr 2e-3) a 20 % held-out split judged fc1's healing useless on unseen rows and
    kept it as it came, and accuracy fell from 0.612 (every row) to 0.552.
    """
    if not 0 <= holdout < 1:
        raise TnvizError(f"the held-out share must be in [0, 1); got holdout={holdout}")
    if eval_every < 1 or patience < 1:
        raise TnvizError(f"eval_every and patience must be at least 1; got {eval_every} and {patience}")
    if inputs not in ("compressed", "original"):
        raise TnvizError(f"healing inputs must be 'compressed' or 'original'; got {inputs!r}")
    if steps < 1:
        raise TnvizError(f"healing needs at least one step; got steps={steps}")
    start = time.perf_counter()
    layers = {n: m for n, m in tn_modules(model).items() if not isinstance(m, TNEmbedding)}
    if not layers:
        raise TnvizError("layer-wise healing needs at least one TN Linear/Conv layer; the model has none")
    dev_c = next(model.parameters()).device
    dev_o = next(original.parameters()).device
    # the teacher's outputs, once for every layer (and its inputs where they are the training inputs)
    targets = _capture(original, list(layers), [to_device(b, dev_o) for b in batches], want_output=True,
                       want_input=inputs == "original")
    moved = [to_device(b, dev_c) for b in batches]
    seen = _CompressedInputs(model, list(layers), moved, replay=replay)
    report = HealReport("layer-wise", steps=steps)
    generator = torch.Generator().manual_seed(seed)
    was = model.training
    for k, (name, layer) in enumerate(layers.items()):
        if progress:
            progress(k, len(layers), name)
        if inputs == "compressed":
            # what this layer sees now, after the layers before it were healed (in forward order),
            # so that it corrects their remaining error once, not an error they no longer make
            x = seen(name).to(dev_c)
        else:
            x = targets[name]["x"].to(dev_c)
        y = targets[name]["y"].to(dev_c)
        scale = float((y.double() ** 2).mean()) or 1.0
        params = [p for p in layer.parameters() if p.requires_grad]
        optimizer = Adam(params, lr=lr)
        layer.train()

        def loss_of(rows: torch.Tensor) -> torch.Tensor:
            return ((layer(x[rows]) - y[rows]) ** 2).mean() / scale

        everything = torch.arange(len(x))
        n_val = int(len(x) * holdout) if len(x) > 1 else 0
        order = torch.randperm(len(x), generator=generator) if n_val else everything
        val, train = order[:n_val], order[n_val:]
        judge = val if n_val else everything

        def judged() -> float:
            with torch.no_grad():
                return float(loss_of(judge))

        with torch.no_grad():
            report.loss_before[name] = float(loss_of(judge))
            start_state = {k: v.detach().clone() for k, v in layer.state_dict().items()}
        best, best_state, stale = report.loss_before[name], start_state, 0
        deadline = None if budget_s is None else \
            time.perf_counter() + max(0.0, start + budget_s - time.perf_counter()) / (len(layers) - k)
        for step in range(1, steps + 1):
            rows = train[torch.randint(0, len(train), (min(batch_rows, len(train)),), generator=generator)]
            optimizer.zero_grad()
            loss = loss_of(rows)
            loss.backward()
            optimizer.step()
            _record(report, name, float(loss.detach()), on_loss)
            out_of_time = deadline is not None and time.perf_counter() > deadline
            if n_val and (step % eval_every == 0 or step == steps or out_of_time):
                now = judged()
                if now < best:
                    best, stale = now, 0
                    best_state = {k: v.detach().clone() for k, v in layer.state_dict().items()}
                else:
                    stale += 1
                if stale >= patience:
                    break
            if out_of_time:
                break
        report.layer_steps[name] = step
        layer.eval()
        with torch.no_grad():
            restored = bool(n_val) and best_state is start_state  # no held-out measurement beat the start
            if n_val:
                layer.load_state_dict(best_state)
            report.loss_after[name] = judged()
            if restored or report.loss_after[name] > report.loss_before[name]:  # never worse than it came
                layer.load_state_dict(start_state)
                report.loss_after[name] = report.loss_before[name]
                report.kept.append(name)
    model.train(was)
    model.eval()
    if progress:
        progress(len(layers), len(layers), "done")
    report.seconds = time.perf_counter() - start
    return report


def heal_distill(model: nn.Module, original: nn.Module, batches: Sequence[Any], *, steps: int = 60, lr: float = 2e-4,
                 seed: int = 0, progress: ProgressFn | None = None, on_loss: LossFn | None = None) -> HealReport:
    """Distil every TN layer of ``model`` (in place) jointly to ``original``'s outputs on ``batches``.

    Adam on the TN layers' parameters only (everything else stays as it is), one calibration
    batch per step drawn at random (seeded), loss ``||f(b) - f_orig(b)||^2 / ||f_orig(b)||^2``
    on the model's main output (a tensor, the first of a tuple, or ``last_hidden_state``). Unlike
    :func:`heal_layerwise` it fits what the model computes at its end, so the layers correct one
    another; the loss is reported over all ``batches`` (``'model'``), and the model is restored
    if it ended worse on them than it came.
    """
    if steps < 1:
        raise TnvizError(f"healing needs at least one step; got steps={steps}")
    if not batches:
        raise TnvizError("distillation needs at least one calibration batch; got none")
    start = time.perf_counter()
    params = [p for m in tn_modules(model).values() for p in m.parameters() if p.requires_grad]
    if not params:
        raise TnvizError("distillation needs at least one TN layer with parameters; the model has none")
    dev_c = next(model.parameters()).device
    dev_o = next(original.parameters()).device
    moved = [to_device(b, dev_c) for b in batches]
    was_o = original.training
    original.eval()
    with torch.no_grad():
        targets = [first_tensor(call_model(original, to_device(b, dev_o))).detach().to(dev_c) for b in batches]
    original.train(was_o)
    # padded text batches: the loss and its scale count real tokens only
    masks = [position_mask(b, y) for b, y in zip(moved, targets)]
    masks = [torch.ones((), dtype=y.dtype, device=y.device) if m is None else m for m, y in zip(masks, targets)]

    def mean_over(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.expand_as(values)
        return (values * weights).sum() / weights.sum().clamp(min=1)

    scales = [float(mean_over(y.double() ** 2, m.double())) or 1.0 for y, m in zip(targets, masks)]

    def loss_of(k: int) -> torch.Tensor:
        return mean_over((first_tensor(call_model(model, moved[k])) - targets[k]) ** 2, masks[k]) / scales[k]

    def full_loss() -> float:
        with torch.no_grad():
            return sum(float(loss_of(k)) for k in range(len(moved))) / len(moved)

    was = model.training
    model.eval()  # distil the function as evaluated (no dropout); gradients still flow
    report = HealReport("distill", steps=steps)
    report.loss_before["model"] = full_loss()
    start_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    chosen = {id(p) for p in params}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen]
    for p in frozen:  # no gradients for what is not trained
        p.requires_grad_(False)
    try:
        for step in range(steps):
            if progress and step % max(1, steps // 20) == 0:
                progress(step, steps, f"step {step + 1}")
            k = int(torch.randint(0, len(moved), (1,), generator=generator))
            optimizer.zero_grad()
            loss = loss_of(k)
            loss.backward()
            optimizer.step()
            _record(report, "model", float(loss.detach()), on_loss)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    report.loss_after["model"] = full_loss()
    if report.loss_after["model"] > report.loss_before["model"]:  # never leave the model worse than it came
        model.load_state_dict(start_state)
        report.loss_after["model"] = report.loss_before["model"]
        report.kept.append("model")
    model.train(was)
    model.eval()
    workspace.release()  # the layers trained in eval mode, which keeps the workspace's buffers
    if progress:
        progress(steps, steps, "done")
    report.seconds = time.perf_counter() - start
    return report


def heal_end_to_end(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 3, lr: float = 1e-3,
                    batch_size: int = 64, seed: int = 0, progress: ProgressFn | None = None,
                    on_loss: LossFn | None = None) -> HealReport:
    """Train every parameter of ``model`` (in place) with cross-entropy on labelled ``x, y``."""
    if epochs < 1:
        raise TnvizError(f"healing needs at least one epoch; got epochs={epochs}")
    start = time.perf_counter()
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    report = HealReport("end-to-end", steps=epochs)
    generator = torch.Generator().manual_seed(seed)
    optimizer = Adam(model.parameters(), lr=lr)

    def full_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(nn.functional.cross_entropy(model(x), y))

    report.loss_before["model"] = full_loss()
    for epoch in range(epochs):
        if progress:
            progress(epoch, epochs, f"epoch {epoch + 1}")
        model.train()
        order = torch.randperm(len(y), generator=generator).to(device)
        total = 0.0
        for s in range(0, len(y), batch_size):
            rows = order[s:s + batch_size]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[rows]), y[rows])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
        _record(report, "model", total / len(y), on_loss)
    report.loss_after["model"] = full_loss()
    model.eval()
    if progress:
        progress(epochs, epochs, "done")
    report.seconds = time.perf_counter() - start
    return report


def heal_digits(model: nn.Module, *, epochs: int = 3, lr: float = 1e-3, seed: int = 0,
                progress: ProgressFn | None = None, on_loss: LossFn | None = None) -> HealReport:
    """End-to-end healing of a digits demo on its training split."""
    data = digits_split()
    return heal_end_to_end(model, data.x_train, data.y_train, epochs=epochs, lr=lr, seed=seed, progress=progress,
                           on_loss=on_loss)


# ---------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Healing:
    """One way to heal: what it fits, the unit of its ``steps`` and its default, and which
    subjects it applies to."""

    name: str
    description: str
    unit: str
    default_steps: int
    kinds: tuple[str, ...]  # subject kinds it applies to
    run: Callable[..., HealReport]  # (model, subject, steps, progress, on_loss) -> HealReport


HEALINGS: dict[str, Healing] = {
    "layer-wise": Healing(
        "layer-wise", "each TN layer distilled to the original layer's outputs on the calibration inputs",
        "steps per layer", 50, ("digits", "sentences", "outputs", "model"),
        lambda model, subject, steps, progress=None, on_loss=None: heal_layerwise(
            model, subject.model, subject.calibration, steps=steps, progress=progress, on_loss=on_loss)),
    "distill": Healing(
        "distill", "every TN layer trained jointly towards the original model's outputs on the calibration inputs",
        "steps", 60, ("digits", "sentences", "outputs", "model"),
        lambda model, subject, steps, progress=None, on_loss=None: heal_distill(
            model, subject.model, subject.calibration, steps=steps, progress=progress, on_loss=on_loss)),
    "end-to-end": Healing(
        "end-to-end", "the whole compressed model trained on the digits labels (digits demos)",
        "epochs", 2, ("digits",),
        lambda model, subject, steps, progress=None, on_loss=None: heal_digits(
            model, epochs=steps, progress=progress, on_loss=on_loss)),
}


def heal(model: nn.Module, subject: "Subject", mode: str, steps: int | None = None,
         progress: ProgressFn | None = None, on_loss: LossFn | None = None) -> HealReport:
    """Heal the compressed ``model`` of ``subject`` in place by the healing ``mode`` of :data:`HEALINGS`."""
    healing = HEALINGS.get(mode)
    if healing is None:
        raise TnvizError(f"healing must be one of {list(HEALINGS)}; got {mode!r}")
    if subject.kind not in healing.kinds:
        raise TnvizError(f"{mode!r} healing applies to {', '.join(healing.kinds)} subjects; {subject.name!r} is a "
                         f"{subject.kind} subject (choose one of "
                         f"{[h for h, v in HEALINGS.items() if subject.kind in v.kinds]})")
    steps = healing.default_steps if steps is None else int(steps)
    # a healing registered without ``on_loss`` still runs; it draws no curve as it goes
    return healing.run(model, subject, steps, progress) if on_loss is None else \
        healing.run(model, subject, steps, progress, on_loss)

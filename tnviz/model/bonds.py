"""Bond features of a model: capture the bond states of its TN layers with forward hooks
(:class:`BondCapture`, :func:`capture_bonds`), everything about one bond of one model
(:func:`inspect_bond`), the gauge move on a TN layer or inside a model, and the tensorized digits
MLP demo.  These drive torch models (``tnviz.nn``, ``tnviz.model``), so they live here, above them;
the arithmetic is the core's (:mod:`tnviz.bonds`: the cut, the statistics, the gauge matrices).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..bonds.analysis import BondStats, bond_stats, top_inputs
from ..bonds.cut import REDUCTIONS, BondCut, bond_cut, bond_state, finish_from_state, reduce_state  # noqa: F401
from ..bonds.gauge import gauge_matrix, gauge_report
from ..errors import TnvizError
from ..gauge import apply_gauge

# ---------------------------------------------------------------------- capture with hooks
class BondCapture:
    """Record bond activations of every :class:`~tnviz.nn.TNLinear` in ``model`` while it runs.

    ``bonds`` maps a layer's module name to the bonds to record (default: every bond of every
    TN layer).  The hooks are forward hooks that compute the state beside the layer and return
    ``None``: the model's outputs are untouched.  ``keep_states`` also keeps the full states.

    >>> import torch, tnviz
    >>> from tnviz.nn import TNLinear
    >>> layer = TNLinear(tnviz.mpo([4, 4], [4, 4], ranks=3))
    >>> with BondCapture(layer) as cap:
    ...     _ = layer(torch.randn(7, 16))
    >>> cap.activations("", "b1").shape
    (7, 3)
    """

    def __init__(self, model: Any, bonds: Mapping[str, Sequence[str]] | None = None, reduce: str = "sum",
                 at: Mapping[str, int] | None = None, keep_states: bool = False) -> None:
        from ..nn import TNLinear

        if reduce not in REDUCTIONS:
            raise TnvizError(f"a bond reduction must be one of {list(REDUCTIONS)}; got {reduce!r}")
        layers = {name: m for name, m in model.named_modules() if isinstance(m, TNLinear)}
        if not layers:
            raise TnvizError(f"bond capture needs a model with TNLinear layers; {type(model).__name__} has none")
        if bonds is None:
            bonds = {name: m.network.bonds for name, m in layers.items()}
        unknown = [name for name in bonds if name not in layers]
        if unknown:
            raise TnvizError(f"bond capture names TN layers of the model ({list(layers)}); {unknown} are not")
        self.cuts = {(name, b): bond_cut(layers[name].network, b) for name, bs in bonds.items() for b in bs}
        self.layers = layers
        self.reduce, self.at, self.keep_states = reduce, at, keep_states
        self._records: dict[tuple[str, str], list[Any]] = {k: [] for k in self.cuts}
        self._states: dict[tuple[str, str], list[Any]] = {k: [] for k in self.cuts}
        self._handles: list[Any] = []

    def _hook(self, name: str):
        import torch

        def hook(module, inputs, output) -> None:
            x = inputs[0]
            with torch.no_grad():
                x2d = x.detach().reshape(-1, module.in_features)
                tensors = {n: t.detach() for n, t in module.named_network_tensors().items()}
                for (layer, _), cut in self.cuts.items():
                    if layer != name:
                        continue
                    state = bond_state(cut, x2d, tensors)
                    self._records[(layer, cut.bond)].append(reduce_state(cut, state, self.reduce, self.at))
                    if self.keep_states:
                        self._states[(layer, cut.bond)].append(state)
            return None

        return hook

    def __enter__(self) -> "BondCapture":
        for name in {layer for layer, _ in self.cuts}:
            self._handles.append(self.layers[name].register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def activations(self, layer: str, bond: str) -> np.ndarray:
        """All recorded ``(N, bond)`` activations of ``bond`` in ``layer``, as float64 numpy."""
        import torch

        rec = self._records[(layer, bond)]
        if not rec:
            return np.zeros((0, self.cuts[(layer, bond)].size))
        return torch.cat(rec).double().cpu().numpy()

    def states(self, layer: str, bond: str) -> list[Any]:
        """The full states per call (only with ``keep_states=True``)."""
        return list(self._states[(layer, bond)])


def capture_bonds(model: Any, batches: Iterable[Any], bonds: Mapping[str, Sequence[str]] | None = None,
                  reduce: str = "sum", at: Mapping[str, int] | None = None) -> dict[tuple[str, str], np.ndarray]:
    """Run ``batches`` through ``model`` (eval mode, no gradients) and return
    ``{(layer name, bond): (N, bond size) float64 array}``."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with BondCapture(model, bonds, reduce, at) as cap, torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        model.train(was_training)
    return {key: cap.activations(*key) for key in cap.cuts}


@dataclass(frozen=True)
class BondInspection:
    """Everything shown about one bond of one model (see :func:`inspect_bond`), as plain data."""

    layer: str
    cut: BondCut
    activations: np.ndarray  # (N, r), float64
    stats: BondStats
    top: np.ndarray  # (r, k) sample indices, most active first
    gauge: str | None = None
    X: np.ndarray | None = None
    activations_after: np.ndarray | None = None
    stats_after: BondStats | None = None
    gauge_rows: tuple[dict[str, Any], ...] = ()
    output_change: float | None = None  # max |model'(x) - model(x)| after the gauge move
    output_scale: float | None = None  # max |model(x)|


def inspect_bond(model: Any, layer: str, bond: str, x: Any, labels: Any, *, reduce: str = "sum",
                 at: Mapping[str, int] | None = None, gauge: str | None = None, seed: int = 0, top_k: int = 6,
                 activations: Any = None) -> BondInspection:
    """Capture ``bond`` of TN layer ``layer`` on ``x`` (in float64, on a copy of the model), its
    statistics against ``labels``, its most active inputs and, with ``gauge`` (a key of
    :data:`GAUGE_KINDS`), the same after a seeded gauge move, the :func:`gauge_report` and how much
    the model's outputs moved.  ``activations(model, x) -> (N, r)`` replaces the hooks for models
    whose forward does not call the layer (the autoencoder)."""
    import copy

    import torch

    model64 = copy.deepcopy(model).double().eval()
    modules = dict(model64.named_modules())
    from ..nn import TNLinear

    if not isinstance(modules.get(layer), TNLinear):
        names = [n for n, m in modules.items() if isinstance(m, TNLinear)]
        raise TnvizError(f"bond features need a TN layer of the model ({names}); {layer!r} is not one")
    cut = bond_cut(modules[layer].network, bond)
    x64 = torch.as_tensor(x).double().to(next(model64.parameters()).device)

    def capture(m: Any) -> np.ndarray:
        if activations is not None:
            with torch.no_grad():
                return activations(m, x64).detach().double().cpu().numpy()
        return capture_bonds(m, [x64], bonds={layer: [bond]}, reduce=reduce, at=at)[(layer, bond)]

    labels = np.asarray(labels).reshape(-1)
    acts = capture(model64)
    stats = bond_stats(acts, labels)
    top = top_inputs(acts, top_k)
    if gauge is None:
        return BondInspection(layer, cut, acts, stats, top)
    X = gauge_matrix(gauge, cut.size, seed, acts=acts)
    moved = gauge_model(model64, layer, bond, X)
    after = capture(moved)
    stats_after = bond_stats(after, labels)
    with torch.no_grad():
        y, y2 = model64(x64), moved(x64)
    return BondInspection(
        layer, cut, acts, stats, top, gauge, X, after, stats_after, tuple(gauge_report(stats, stats_after, gauge)),
        float((y2 - y).abs().max()), float(y.abs().max()),
    )


# ---------------------------------------------------------------------- gauge on a layer or a model
def gauge_layer(layer: Any, bond: str, X: np.ndarray) -> Any:
    """A copy of a :class:`~tnviz.nn.TNLinear` with ``X X⁻¹`` inserted on ``bond`` (done in
    float64, stored back in the layer's dtype): the same layer, other bond channels."""
    import copy

    import torch

    net = layer.network
    tensors = {n: t.detach().double().cpu().numpy() for n, t in layer.named_network_tensors().items()}
    moved = apply_gauge(net, tensors, bond, np.asarray(X, dtype=np.float64))
    new = copy.deepcopy(layer)
    new.clear_cache()
    new.load_tensors({n: torch.from_numpy(a) for n, a in moved.items()})
    return new



def gauge_model(model: Any, layer: str, bond: str, X: np.ndarray) -> Any:
    """A deep copy of ``model`` whose TN layer ``layer`` (module name, ``""`` for the model
    itself) has ``X X⁻¹`` inserted on ``bond``; the model computes the same function."""
    import copy

    from ..nn import TNLinear

    modules = dict(model.named_modules())
    if not isinstance(modules.get(layer), TNLinear):
        names = [n for n, m in modules.items() if isinstance(m, TNLinear)]
        raise TnvizError(f"a gauge move acts on a TN layer of the model ({names}); {layer!r} is not one")
    moved = gauge_layer(modules[layer], bond, X)
    if layer == "":
        return moved
    new = copy.deepcopy(model)
    parent_name, _, child = layer.rpartition(".")
    parent = new.get_submodule(parent_name) if parent_name else new
    setattr(parent, child, moved)
    return new


# ---------------------------------------------------------------------- demo model
#: The digits MLP layers that can be tensorized for the demo: layer -> (in_dims, out_dims).
DIGITS_TN_LAYERS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "fc2": ((4, 4, 4, 4), (4, 4, 4, 4)),
    "fc1": ((8, 8), (4, 4, 4, 4)),
}


def tensorized_digits_mlp(layer: str = "fc2", max_rank: int = 8, heal_epochs: int = 0, seed: int = 0,
                          device: Any = None) -> Any:
    """The digits MLP demo with ``layer`` replaced by an MPO (TT-SVD of its weight, ``max_rank``),
    optionally healed end to end for ``heal_epochs`` on the training split (seeded)."""
    import copy

    from .demos import digits_model
    from ..nn import TNLinear

    if layer not in DIGITS_TN_LAYERS:
        raise TnvizError(f"the tensorized digits MLP replaces one of {list(DIGITS_TN_LAYERS)}; got {layer!r}")
    base = digits_model("mlp", seed=seed, device=device)
    model = copy.deepcopy(base)
    in_dims, out_dims = DIGITS_TN_LAYERS[layer]
    tn = TNLinear.from_linear(getattr(base, layer), "mpo", in_dims=list(in_dims), out_dims=list(out_dims),
                              max_rank=max_rank)
    setattr(model, layer, tn)
    if heal_epochs > 0:
        from .heal import heal_digits

        heal_digits(model, epochs=heal_epochs, seed=seed)
    return model.eval()

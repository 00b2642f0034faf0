"""Capture the bond states of the TN layers of a model with forward hooks (see :mod:`tnviz.bonds`).

Drives :class:`~tnviz.nn.TNLinear` layers, so it sits above ``tnviz.nn`` (the cut itself is the
core's :mod:`tnviz.bonds.cut`).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import TnvizError
from .cut import REDUCTIONS, BondCut, bond_cut, bond_state, finish_from_state, reduce_state  # noqa: F401


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

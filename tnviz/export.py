"""Text exports of a network layer: the JSON spec, an ``opt_einsum`` snippet with its
contraction path, a PyTorch snippet built on :class:`tnviz.nn.TNLinear`.

Every snippet is a complete script that runs as is (seeded random tensors stand in for
trained ones).  ``EXPORTS`` is the registry of these formats; the diagram formats (SVG, PNG,
DOT) need a drawing and live in :mod:`tnviz.render.exports`, whose ``EXPORTS`` holds every
format (the app's download buttons use that one).

>>> from tnviz.builders import mpo
>>> code = einsum_snippet(mpo([4, 4], [4, 4], ranks=2), batch=3)
>>> namespace = {}
>>> exec(code, namespace)
>>> namespace["y"].shape
(3, 16)
"""
from __future__ import annotations

import pprint
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .errors import InvalidNetworkError
from .network import TensorNetwork
from .paths import DEFAULT_OPTIMIZER, forward_path


def _header(net: TensorNetwork, what: str) -> str:
    title = net.name or "network"
    return (
        f"# {title}: {what}\n"
        f"# {net.in_features} -> {net.out_features}, {net.params:,} parameters "
        f"(dense {net.dense_params:,}); exported by tnviz\n"
    )


def json_spec(net: TensorNetwork, **_: object) -> str:
    """The SPEC 2.1 network JSON (``tnviz.load_network`` reads it back)."""
    return net.to_json() + "\n"


def einsum_snippet(net: TensorNetwork, *, batch: int = 1, optimize: str = DEFAULT_OPTIMIZER) -> str:
    """A numpy + opt_einsum script: one ``oe.contract`` of the input with every tensor, along
    the path ``tnviz.cost`` picked (``optimize``), leaving ``y`` of shape ``(batch, out_features)``."""
    fwd = forward_path(net, batch, optimize)
    shape_lines = "\n".join(
        f"    {t.name!r}: {tuple(net.shape(t))!r},  # {', '.join(t.indices)}" for t in net.tensors
    )
    return (
        _header(net, "forward pass as one opt_einsum contraction")
        + "import numpy as np\n"
        "import opt_einsum as oe\n\n"
        f"batch = {batch}\n"
        f"in_dims, out_dims = {net.in_dims!r}, {net.out_dims!r}  # input legs {list(net.inputs)}, output legs {list(net.outputs)}\n"
        "shapes = {\n" + shape_lines + "\n}\n"
        f"# x[batch, inputs], then the tensors in the order above -> y[batch, outputs]\n"
        f"equation = {net.layer_equation()!r}\n"
        f"# contraction path from tnviz.cost (optimize={optimize!r}"
        + (f", found by {fwd.optimizer!r}" if fwd.optimizer and fwd.optimizer != optimize else "")
        + f"): {fwd.flops:,} FLOPs at batch {batch}\n"
        f"path = {[tuple(p) for p in fwd.path]!r}\n\n"
        "rng = np.random.default_rng(0)\n"
        "tensors = [rng.standard_normal(shape) for shape in shapes.values()]  # your trained tensors here\n"
        f"x = rng.standard_normal((batch, {net.in_features}))\n"
        "y = oe.contract(equation, x.reshape(batch, *in_dims), *tensors, optimize=path)\n"
        f"y = y.reshape(batch, {net.out_features})\n"
    )


def torch_snippet(net: TensorNetwork, *, batch: int = 1, **_: object) -> str:
    """A PyTorch script: the spec, ``tnviz.nn.TNLinear`` built from it, one forward pass."""
    spec = pprint.pformat(net.to_dict(), indent=1, width=100, sort_dicts=False)
    return (
        _header(net, "a PyTorch layer (tnviz.nn.TNLinear)")
        + "import torch\n\n"
        "import tnviz\n"
        "from tnviz.nn import TNLinear\n\n"
        f"spec = {spec}\n\n"
        "device = 'cuda' if torch.cuda.is_available() else 'cpu'\n"
        "layer = TNLinear(tnviz.load_network(spec)).to(device)\n"
        f"x = torch.randn({batch}, {net.in_features}, device=device)\n"
        f"y = layer(x)  # shape ({batch}, {net.out_features})\n"
    )


@dataclass(frozen=True)
class Export:
    """One export format: what it is called, its file suffix and MIME type, and its maker."""

    label: str
    suffix: str
    mime: str
    make: Callable[..., "str | bytes"]


#: Text export formats by name (the tests iterate over it; :data:`tnviz.render.exports.EXPORTS`
#: adds the diagrams).
EXPORTS: dict[str, Export] = {
    "json": Export("Network JSON", "json", "application/json", json_spec),
    "einsum": Export("opt_einsum snippet", "py", "text/x-python", einsum_snippet),
    "torch": Export("PyTorch snippet", "py", "text/x-python", torch_snippet),
}


def _format(fmt: str, registry: Mapping[str, Export]) -> Export:
    if fmt not in registry:
        where = "" if "svg" in registry else " (the diagrams SVG, PNG and DOT: tnviz.render.exports)"
        raise InvalidNetworkError(f"unknown export format {fmt!r}; choose one of {list(registry)}{where}")
    return registry[fmt]


def export(net: TensorNetwork, fmt: str, *, batch: int = 1, optimize: str = DEFAULT_OPTIMIZER,
           registry: Mapping[str, Export] = EXPORTS, **options: Any) -> "str | bytes":
    """``net`` in the export format ``fmt`` (a key of ``registry``, :data:`EXPORTS` by default)."""
    return _format(fmt, registry).make(net, batch=batch, optimize=optimize, **options)


def export_filename(net: TensorNetwork, fmt: str, registry: Mapping[str, Export] = EXPORTS) -> str:
    """A file name for the export: the network's name made safe, then the format's suffix."""
    spec = _format(fmt, registry)
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in (net.name or "network")).strip("_") or "network"
    extra = {"einsum": "_einsum", "torch": "_torch"}.get(fmt, "")
    return f"{stem}{extra}.{spec.suffix}"

"""Seeded generators for tests and examples: every template, random parameters, random networks.

>>> [name for name, _ in template_networks()][:2]
['MPO / tensor train', 'Tensor ring']
"""
from __future__ import annotations

import random
from typing import Any

from .builders import TEMPLATES, build_template, from_einsum
from .network import TensorNetwork


def template_networks() -> list[tuple[str, TensorNetwork]]:
    """Every template at its default parameters, plus a generic einsum network (a small PEPS-like
    2x2 grid with a cycle) and the paper's Fig. 1 generic layer."""
    nets = [(name, build_template(name)) for name in TEMPLATES]
    nets.append(("generic 2x2 grid", from_einsum(
        "iab,jac,kbd,lcd->ijkl", {"i": 3, "j": 4, "k": 2, "l": 5, "a": 2, "b": 3, "c": 2, "d": 2},
        inputs="ij", name="generic 2x2 grid")))
    return nets


def small_template_networks() -> list[tuple[str, TensorNetwork]]:
    """Every template at small sizes (dense matrices of at most a few thousand entries)."""
    small = {
        "MPO / tensor train": dict(in_dims=[2, 3, 2], out_dims=[3, 2, 2], ranks=[3, 4]),
        "Tensor ring": dict(in_dims=[2, 3], out_dims=[3, 2], ranks=[2, 3]),
        "Tucker": dict(in_dims=[3, 4], out_dims=[2, 5], ranks=[2, 3, 2, 3]),
        "CP": dict(in_dims=[3, 4], out_dims=[5], ranks=3),
        "MPO 3 in / 5 out (Fig. 1)": dict(in_dims=[2, 3, 2], out_dims=[2, 2, 2, 2, 3], ranks=2),
        "Tucker conv kernel (Fig. 3 iv)": dict(in_dims=[3, 3, 3], out_dims=[4], ranks=[3, 2, 2, 2]),
        "CP conv kernel (Fig. 3 v)": dict(in_dims=[3, 3, 3], out_dims=[4], ranks=4),
    }
    nets = [(name, build_template(name, **small.get(name, {}))) for name in TEMPLATES]
    nets.append(template_networks()[-1])
    return nets


def random_network_params(seed: int) -> list[tuple[str, dict[str, Any]]]:
    """For each template, seeded random leg dims and ranks."""
    rng = random.Random(seed)
    out = []
    for name, (_, defaults) in TEMPLATES.items():
        n_in = len(defaults["in_dims"]) if "conv" in name else rng.randint(1, 4)
        n_out = len(defaults["out_dims"]) if "conv" in name else rng.randint(1, 4)
        if name in ("Tensor ring",) and max(n_in, n_out) < 2:
            n_in = 2
        if name == "CP" and n_in + n_out < 2:
            n_out = 2
        in_dims = [rng.randint(1, 6) for _ in range(n_in)]
        out_dims = [rng.randint(1, 6) for _ in range(n_out)]
        if name.startswith("Tucker"):
            ranks: Any = [rng.randint(1, 4) for _ in range(n_in + n_out)]
        elif name.startswith("CP"):
            ranks = rng.randint(1, 5)
        else:
            ranks = rng.randint(1, 5)
        out.append((name, dict(in_dims=in_dims, out_dims=out_dims, ranks=ranks)))
    return out

"""tnviz: design, cost, decompose and run tensorized neural-network layers.

The core (network model, builders, costs, stack views, decompositions) needs only numpy and
opt_einsum at import time; torch, plotly, graphviz and streamlit are imported where used.

>>> import tnviz
>>> net = tnviz.mpo([8, 8, 8, 8], [8, 8, 8, 8], ranks=4)
>>> tnviz.cost(net, batch=1024).flops < tnviz.cost(net, batch=1024).dense_flops
True
"""
from __future__ import annotations

from ._runtime import configure as _configure

_configure()  # before anything loads torch: see tnviz/_runtime.py

from .builders import TEMPLATES, build_template, conv_cp, conv_tucker, cp, from_einsum, mpo, tensor_ring, tucker
from .contract import forward, random_tensors, to_dense, to_tensor
from .cost import OPTIMIZERS, LayerCost, batch_sweep, check_budget, cost, max_useful_ranks
from .errors import (
    BudgetError,
    DecompositionError,
    InvalidNetworkError,
    ModelFileError,
    RankError,
    TnvizError,
)
from .factorize import auto_legs, balanced_factors, propose_legs
from .network import Tensor, TensorNetwork, load_network, save_network
from .stack import stack_report, stack_views
from . import decompose  # a callable package: tnviz.decompose(W, "mpo", ...) (see tnviz/decompose/__init__.py)
from .decompose import DECOMPOSITIONS, Decomposition, pareto_front, tradeoff

__version__ = "0.1.0"

#: Names resolved on first use, because they import torch (the core does not).
_LAZY = {"compress": "tnviz.model.compress", "load_compressed": "tnviz.model.folder"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tnviz' has no attribute {name!r}")

__all__ = [
    "TEMPLATES", "OPTIMIZERS", "Tensor", "TensorNetwork", "LayerCost",
    "TnvizError", "InvalidNetworkError", "RankError", "DecompositionError", "ModelFileError", "BudgetError",
    "load_network", "save_network", "mpo", "tensor_ring", "tucker", "cp", "conv_tucker", "conv_cp",
    "from_einsum", "build_template", "auto_legs", "balanced_factors", "propose_legs",
    "cost", "batch_sweep", "check_budget", "max_useful_ranks",
    "to_dense", "to_tensor", "forward", "random_tensors",
    "stack_views", "stack_report", "compress", "load_compressed",
    "decompose", "DECOMPOSITIONS", "Decomposition", "tradeoff", "pareto_front",
]

"""TN layers for PyTorch: ``TNLinear`` for any layer network, conv and embedding counterparts,
and the execution strategies they choose from.

The strategies and the decision which one a layer runs (:mod:`tnviz.nn.strategies`) plan from
shapes alone and import no torch; the layers import torch when first used
(``from tnviz.nn import TNLinear``).  The core (``import tnviz``) imports neither.

>>> from tnviz.nn import STRATEGIES
>>> list(STRATEGIES)
['factorized', 'rebuilt', 'chain', 'ring', 'modes', 'fused']
"""
from __future__ import annotations

import importlib
from typing import Any

from .chain_strategy import CHAIN
from .factorized import FACTORIZED
from .fused import FUSED
from .modes import MODES
from .rebuild import REBUILT
from .ring import RING
from .strategies import STRATEGIES, Decision, StrategyError, choose, decide, estimates, register_strategy

# The built-in strategies, in the order the registry lists them (ties in the cost model go to the
# earlier one).  Another strategy joins the same way.
for _strategy in (FACTORIZED, REBUILT, CHAIN, RING, MODES, FUSED):
    register_strategy(_strategy)
del _strategy

#: Names that import torch, loaded on first use: name -> module.
_LAZY = {
    "TNLinear": "linear",
    "TNConv2d": "conv", "TuckerConv2d": "conv", "CPConv2d": "conv", "from_conv": "conv", "CONV_METHODS": "conv",
    "TNEmbedding": "embedding",
    "GraphedModule": "graphs", "graphed": "graphs",
}

__all__ = ["TNLinear", "TNConv2d", "TuckerConv2d", "CPConv2d", "from_conv", "CONV_METHODS", "TNEmbedding",
           "STRATEGIES", "StrategyError", "choose", "estimates", "decide", "Decision", "register_strategy",
           "GraphedModule", "graphed"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:  # a submodule (``from tnviz.nn import workspace``) is imported by Python itself
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

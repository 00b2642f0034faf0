"""TN layers for PyTorch: ``TNLinear`` for any layer network, conv counterparts, and the
execution strategies they choose from.

Importing this package imports torch; the core (``import tnviz``) does not.
"""
from __future__ import annotations

from .conv import CONV_METHODS, CPConv2d, TNConv2d, TuckerConv2d, from_conv
from .embedding import TNEmbedding
from .graphs import GraphedModule, graphed
from .linear import TNLinear
from .strategies import STRATEGIES, StrategyError, choose, estimates

__all__ = ["TNLinear", "TNEmbedding", "TNConv2d", "TuckerConv2d", "CPConv2d", "from_conv", "CONV_METHODS", "STRATEGIES", "StrategyError", "choose", "estimates",
           "GraphedModule", "graphed"]

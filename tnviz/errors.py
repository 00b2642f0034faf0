"""The one small error tree of tnviz.

Every message states the rule first, then the offending value, e.g.
``index 'b2' has size 16 in A2 but 8 in A3``.  Public entry points add
context and re-raise; nothing here prints.
"""
from __future__ import annotations


class TnvizError(Exception):
    """Base class for every error tnviz raises on purpose (a user mistake or a refused request)."""


class InvalidNetworkError(TnvizError, ValueError):
    """A network spec (JSON, einsum string, canvas edit, builder call) breaks a rule."""


class RankError(TnvizError, ValueError):
    """A requested rank / truncation setting cannot be honoured."""


class DecompositionError(TnvizError):
    """A decomposition could not be computed for the given weight."""


class ModelFileError(TnvizError):
    """A model or weights file is refused (unsafe kind, malformed, truncated, nothing to compress)."""


class BudgetError(TnvizError):
    """A contraction was refused because a predicted intermediate exceeds the memory budget."""

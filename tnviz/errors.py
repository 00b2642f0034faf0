"""The one small error tree of tnviz.

Every message states the rule first, then the offending value, e.g.
``index 'b2' has size 16 in A2 but 8 in A3``.  Public entry points add
context and re-raise; nothing here prints.
"""
from __future__ import annotations

import re


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
    """A request was refused before any work because its predicted size exceeds a budget: an
    intermediate or an array too large for memory, or a path search too large to finish."""


#: Terminal control sequences (colours, cursor moves: CSI ... final byte) and other escapes.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
#: Control characters other than the whitespace that ``split`` removes.
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def plain_message(error: "BaseException | str") -> str:
    r"""One plain line for people: the message of ``error`` (an exception or text) without
    terminal escapes or control characters, its whitespace and newlines folded into single
    spaces (wrapped errors, torch's for one, carry several lines and colours).

    >>> plain_message("\x1b[31mbad\x1b[0m value\n  on two lines")
    'bad value on two lines'
    """
    text = str(error) if isinstance(error, BaseException) else str(error)
    if isinstance(error, KeyError) and len(error.args) == 1:  # str(KeyError('x')) is "'x'"
        text = str(error.args[0])
    text = _CONTROLS.sub("", _ESCAPES.sub("", text))
    # torch's wrapped weights_only error advises unpickling anyway, which is not ours to give
    text = re.sub(r":?\s*Weights only load failed\..*?(?=;|$)", "", text, flags=re.S)
    return " ".join(text.split())


class Cancelled(Exception):
    """Raised by a progress callback to stop a long run (a compression, a healing, a sweep).  The
    library lets it through and keeps what was there before: no result is returned, and a model
    healed in place is restored to its state before the run.  Not a :class:`TnvizError`: it is
    the user's choice, not a bad input."""

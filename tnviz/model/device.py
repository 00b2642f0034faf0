"""Device choice in one place: the device is always a parameter, ``None``/'auto' picks CUDA when present."""
from __future__ import annotations

from typing import Any

import torch

from ..errors import TnvizError


def resolve_device(device: Any = None) -> torch.device:
    """``None`` or ``'auto'`` -> CUDA when available, else CPU; anything else as ``torch.device`` reads it.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise TnvizError(f"a device must be 'auto', 'cpu' or 'cuda[:N]'; got {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TnvizError(f"the device must exist on this machine; {str(device)!r} was asked but CUDA is not available")
    return dev

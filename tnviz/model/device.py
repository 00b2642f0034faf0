"""Device choice in one place: the device is always a parameter, ``None``/'auto' picks CUDA when present."""
from __future__ import annotations

from typing import Any

import torch


def resolve_device(device: Any = None) -> torch.device:
    """``None`` or ``'auto'`` -> CUDA when available, else CPU; anything else as ``torch.device`` reads it.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)

"""Where and how the fused Triton kernel (:mod:`tnviz.nn.fused`) launches: whether it can run on a
device, and its tiles.  Imports neither torch nor triton (triton is tried once, on first use).

>>> block(5, 64), block(100, 64)     # a tile edge: a power of two, at least MIN_BLOCK, at most the cap
(16, 64)
"""
from __future__ import annotations

import functools
import os
from typing import Any

#: Tile edges ``(ia, ib, oa, ob)`` and warps of one program, by element size in bytes: the largest
#: tiles whose compiled kernel spills no registers on sm_90 (``ptxas -v`` on the kernel compiled for
#: sm_90: 188, 232 and 197 registers for 2, 4 and 8 bytes).  Not yet tuned by timing on a GPU.
TILES = {2: ((64, 64, 64, 64), 8), 4: ((32, 32, 32, 64), 8), 8: ((32, 32, 32, 64), 8)}

#: The ``ob`` tile of every entry of :data:`TILES`: ``U_r`` is recomputed once per ``ob`` tile.
BLOCK_OB = 64

#: ``tl.dot`` needs every tile edge at least this long; smaller legs are padded by masks.
MIN_BLOCK = 16


def block(size: int, largest: int) -> int:
    """The tile edge for a leg of ``size`` when tiles are at most ``largest`` long."""
    return max(MIN_BLOCK, min(largest, 1 << max(0, size - 1).bit_length()))


@functools.lru_cache(maxsize=1)
def triton_importable() -> bool:
    """Whether the optional dependency ``triton`` imports (tried once, on first use)."""
    try:
        import triton  # noqa: F401
    except Exception:  # not installed, or built for another torch/python: the kernel is unavailable
        return False
    return True


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for Triton's CPU interpreter (read at each call)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def device_type(device: Any) -> str:
    """``"cuda"`` for ``"cuda:1"``, ``torch.device("cuda")`` or a CUDA index (torch's reading of
    an int); ``"cpu"`` for ``"cpu"``; without importing torch.

    >>> device_type("cuda:1"), device_type("cpu"), device_type(0)
    ('cuda', 'cpu', 'cuda')
    """
    if isinstance(device, int):
        return "cuda"
    kind = getattr(device, "type", None)
    return kind if isinstance(kind, str) else str(device).split(":")[0]


def available(device: Any) -> bool:
    """Whether the kernel can run on ``device``: CUDA with triton, or CPU under the interpreter."""
    kind = device_type(device)
    # the device first: importing triton takes 0.2-0.5 s, for nothing on a CPU without the interpreter
    return (kind == "cuda" or (kind == "cpu" and interpreting())) and triton_importable()

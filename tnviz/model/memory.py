"""Process memory: give freed heap memory back to the system between weights, and read the
peak resident set.

Decomposing weight after weight allocates and frees tensors of a few to tens of MB.  glibc serves
them from its heap once its mmap threshold has risen past their size (it rises each time such a
block is freed), and keeps what is freed there: compressing the weights of a 1.9 GB file one at a
time held 1.3 GB resident at its peak, 0.44 GB with the threshold fixed, and 0.50 GB with
:func:`trim` after each weight (measured on the 2-core development machine, at about the same
speed).  On other C libraries :func:`trim` does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache
from typing import Callable


@lru_cache(maxsize=1)
def _libc() -> "ctypes.CDLL | None":
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # glibc only (musl has none)
    except (OSError, AttributeError):
        return None
    return libc


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


@lru_cache(maxsize=1)
def _mallinfo2() -> "Callable[[], _Mallinfo2] | None":
    libc = _libc()
    if libc is None:
        return None
    try:
        fn = libc.mallinfo2  # glibc 2.33+ (the older mallinfo's int fields overflow at 2 GiB)
    except AttributeError:
        return None
    fn.restype = _Mallinfo2
    return fn


def free_heap_bytes() -> int | None:
    """Bytes freed but kept by glibc's heaps, all arenas together (``mallinfo2().fordblks``: what
    :func:`trim` can give back); ``None`` where it cannot be read."""
    fn = _mallinfo2()
    return None if fn is None else int(fn().fordblks)


#: Free heap that :func:`trim` between weights leaves alone (``trim(TRIM_FLOOR)``).  Giving memory
#: back costs the next weight the page faults of taking it again: on MiniLM's 12 FFN weights the
#: heap held 100-280 MB free between weights and a trim after each cost 0.2 s of the 1.4 s the
#: decompositions took (measured 2026-12-07 on the 2-core development machine); a model whose
#: weights free more than this is still trimmed after each.
TRIM_FLOOR = 512 << 20


def trim(min_free: int = 0) -> None:
    """Return the heap's free memory to the system (glibc ``malloc_trim(0)``; else nothing), if at
    least ``min_free`` bytes of it are free (when that can be read: else always)."""
    libc = _libc()
    if libc is None:
        return
    if min_free > 0:
        free = free_heap_bytes()
        if free is not None and free < min_free:
            return
    libc.malloc_trim(0)


#: glibc's ``mallopt`` parameter of the size from which a block is mapped on its own (and unmapped when freed).
M_MMAP_THRESHOLD = -3


def map_large_blocks(threshold: int = 1 << 20) -> bool:
    """From now on, glibc maps every block of ``threshold`` bytes or more on its own, so it goes
    back to the system the moment it is freed, not when :func:`trim` is next called (for the rest
    of the process: its threshold no longer rises with the blocks freed).  Returns whether it was set."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))


def peak_rss_bytes() -> int | None:
    """This process's peak resident set (``VmHWM`` of ``/proc/self/status``; ``None`` elsewhere)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def available_bytes() -> int | None:
    """Memory the system can give this process now (``MemAvailable`` of ``/proc/meminfo``; ``None`` elsewhere)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


__all__ = ["trim", "TRIM_FLOOR", "free_heap_bytes", "peak_rss_bytes", "available_bytes", "map_large_blocks"]

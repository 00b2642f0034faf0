"""The per-weight map spread over the ranks of a ``torch.distributed`` process group.

``torchrun --nproc-per-node=N $(which tnviz) compress MODEL -o OUT ...`` starts N processes; each
reads the model and its calibration data, decomposes its share of the weights, and every rank
receives every rank's results (``all_gather_object``), in plan order.  Rank 0 alone measures,
heals and writes the folder, which is the byte-identical folder of a single-process run: each
weight is decomposed by the same function with single-threaded torch operations
(:mod:`tnviz.model.parallel`), whichever rank runs it.  A data-aware run's calibration passes
through the model on every rank with torch's threads; their float32 GEMMs round differently at
different thread counts, so the folder is identical to a single-process run at the same intra-op
thread count (torchrun sets ``OMP_NUM_THREADS=1``; a weights-only run is identical at any count).

Weights go to ranks by their predicted cost (the SVD work ``m·n·min(m, n)`` of the weight's
matrix), largest first onto the least-loaded rank: one 1536x384 weight costs four 384x384 ones.
This is torch.distributed's process group, not a scheduler of our own: gloo on CPU, nccl on GPUs.

>>> assign([8.0, 1.0, 1.0, 4.0, 4.0], 2)
[0, 0, 1, 1, 1]
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence, TypeVar

from ..errors import TnvizError
from .parallel import map_ordered

T = TypeVar("T")
R = TypeVar("R")


def assign(costs: Sequence[float], world: int) -> list[int]:
    """The rank of each item: longest-processing-time first, onto the least-loaded rank (ties to
    the lower item index and the lower rank, so every rank computes the same assignment)."""
    loads = [0.0] * max(1, world)
    owners = [0] * len(costs)
    for k in sorted(range(len(costs)), key=lambda k: (-float(costs[k]), k)):
        r = min(range(len(loads)), key=lambda r: (loads[r], r))
        owners[k] = r
        loads[r] += float(costs[k])
    return owners


def svd_cost(shape: Sequence[int]) -> float:
    """Predicted work of decomposing a weight of ``shape`` (out, in, ...): ``m·n·min(m, n)``."""
    m = int(shape[0]) if shape else 1
    n = 1
    for d in shape[1:]:
        n *= int(d)
    return float(m) * n * min(m, n)


def group_active() -> bool:
    """Whether a torch.distributed process group with more than one rank is initialized."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def resolve(distributed: bool | None) -> bool:
    """``None``: spread when a process group of several ranks is initialized; ``True``: require
    one; ``False``: never."""
    if distributed is None:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world > 1 and not group_active():
            # every process would compress everything and write the same folder at once
            raise TnvizError(f"running under torchrun (WORLD_SIZE={world}) needs the process group: call "
                             "torch.distributed.init_process_group() before tnviz.compress, or pass distributed=False "
                             "to compress everything on each process alone")
        return group_active()
    if distributed and not group_active():
        import torch.distributed as dist

        size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 0
        raise TnvizError("distributed=True needs an initialized torch.distributed process group of more than one "
                         f"rank (torch.distributed.init_process_group, or run under torchrun); got world size {size}")
    return bool(distributed)


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1 in the environment): gloo on
    CPU, nccl for CUDA.  Returns whether this call initialized it (the caller then destroys it)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    backend = "nccl" if str(device).startswith("cuda") else "gloo"
    if backend == "nccl":
        import torch

        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def map_spread(fn: Callable[[T], R], items: Sequence[T], costs: Sequence[float], *, distributed: bool = False,
               workers: int | None = None, done: Callable[[int, T], None] | None = None) -> list[R]:
    """``[fn(item) for item in items]``: with ``distributed``, each rank computes the items
    :func:`assign` gives it (on :func:`tnviz.model.parallel.map_ordered`'s workers) and every rank
    gets all results in item order; otherwise :func:`~tnviz.model.parallel.map_ordered` itself.
    ``done(k, item)`` counts this rank's items."""
    items = list(items)
    if not distributed:
        return map_ordered(fn, items, workers=workers, done=done)
    import torch.distributed as dist

    owners = assign(list(costs), dist.get_world_size())
    me = dist.get_rank()
    mine = [k for k, r in enumerate(owners) if r == me]
    try:
        local: Any = list(zip(mine, map_ordered(fn, [items[k] for k in mine], workers=workers, done=done)))
    except Exception as exc:  # every rank must reach the gather, or the others wait forever
        local = exc
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    for part in gathered:  # the first rank's error, raised on every rank
        if isinstance(part, BaseException):
            raise part
    out: list[Any] = [None] * len(items)
    for part in gathered:
        for k, result in part:
            out[k] = result
    return out


__all__ = ["assign", "svd_cost", "group_active", "rank", "resolve", "init_from_env", "map_spread"]

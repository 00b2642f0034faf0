"""The per-weight map spread over the ranks of a ``torch.distributed`` process group.

``torchrun --nproc-per-node=N $(which tnviz) compress MODEL -o OUT ...`` starts N processes; each
reads the model and its calibration data, decomposes its share of the weights, and every rank
receives every rank's results (``all_gather_object`` of each rank's part as bytes, so that another
rank's CUDA tensors land on this rank's GPU), in plan order.  Rank 0 alone measures,
heals and writes the folder, which is the byte-identical folder of a single-process run: each
weight is decomposed by the same function with single-threaded torch operations
(:mod:`tnviz.model.parallel`), whichever rank runs it.  A data-aware run's calibration passes
through the model on every rank with torch's threads; their float32 GEMMs round differently at
different thread counts, so the folder is identical to a single-process run at the same intra-op
thread count (torchrun sets ``OMP_NUM_THREADS=1``; a weights-only run is identical at any count).

Weights go to ranks by their predicted cost (the SVD work ``m·n·min(m, n)`` of the weight's
matrix), largest first onto the least-loaded rank: one 1536x384 weight costs four 384x384 ones.
This is torch.distributed's process group, not a scheduler of our own: gloo on CPU, nccl on GPUs
(each rank on the GPU of its ``LOCAL_RANK``).  Under torchrun the CLI joins the group whatever its
size: one rank runs the same code path (nccl on one GPU is how that path is checked on a machine
with one GPU).

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


def _dist():
    import torch.distributed as dist

    return dist


def group_initialized() -> bool:
    """Whether a torch.distributed process group of any size (one rank included) is initialized."""
    dist = _dist()
    return dist.is_available() and dist.is_initialized()


def group_active() -> bool:
    """Whether a torch.distributed process group with more than one rank is initialized."""
    return group_initialized() and _dist().get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return _dist().get_rank() if group_initialized() else 0


def resolve(distributed: bool | None) -> bool:
    """``None``: spread when a process group of several ranks is initialized; ``True``: require
    an initialized group (one rank is a group too: the same code path, e.g. nccl on one GPU);
    ``False``: never."""
    if distributed is None:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world > 1 and not group_active():
            # every process would compress everything and write the same folder at once
            raise TnvizError(f"running under torchrun (WORLD_SIZE={world}) needs the process group: call "
                             "torch.distributed.init_process_group() before tnviz.compress, or pass distributed=False "
                             "to compress everything on each process alone")
        return group_active()
    if distributed and not group_initialized():
        raise TnvizError("distributed=True needs an initialized torch.distributed process group "
                         "(torch.distributed.init_process_group, or run under torchrun); none is initialized")
    return bool(distributed)


#: What torchrun sets for every worker beyond the ``env://`` rendezvous (RANK, WORLD_SIZE,
#: MASTER_ADDR): a shell or container that only left those behind is not a torchrun launch.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def launched_by_torchrun() -> bool:
    """Whether this process is one of torchrun's workers: every variable of :data:`TORCHRUN_ENV` set."""
    return all(os.environ.get(k) for k in TORCHRUN_ENV)


def init_from_env(device: Any = "cpu") -> bool:
    """Join the process group torchrun describes (every size, one rank included): gloo on CPU,
    nccl for CUDA, each rank on the GPU of its ``LOCAL_RANK``.  Also a group of several ranks
    described by the ``env://`` variables alone (``WORLD_SIZE`` > 1), as before torchrun's own
    variables were asked for.  Returns whether this call initialized it (the caller then destroys
    it); a rendezvous that cannot start is a :class:`TnvizError` naming the variables."""
    dist = _dist()
    several = int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
    if not (launched_by_torchrun() or several) or not dist.is_available() or dist.is_initialized():
        return False
    backend = "nccl" if str(device).startswith("cuda") else "gloo"
    if backend == "nccl":
        import torch

        local, count = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        if local >= count:
            raise TnvizError(f"rank {os.environ.get('RANK', '?')} is local rank {local} of its machine, which has "
                             f"{count} GPU{'s' * (count != 1)}: nccl runs one rank per GPU; start at most {count} "
                             f"per machine (--nproc-per-node={count}) or compress on the CPU (--device cpu)")
        torch.cuda.set_device(local)
    try:
        dist.init_process_group(backend=backend)
    except (ValueError, RuntimeError) as exc:
        shown = ", ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in TORCHRUN_ENV)
        raise TnvizError(f"could not join the torch.distributed group the environment describes ({shown}): "
                         f"{type(exc).__name__}: {exc}; run under torchrun, or unset these variables") from None
    return True


def _pack(obj: Any) -> bytes:
    """``obj`` as bytes (``torch.save``: its CUDA tensors copied to the host on the way)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _unpack(data: bytes, device: Any = None) -> Any:
    """What :func:`_pack` packed on another rank, its CUDA tensors on ``device`` (this rank's GPU:
    another rank's ``cuda:1`` is this rank's ``cuda:0``; a CUDA device without an index is the
    current one) and its CPU tensors on the CPU.  The bytes come from this job's own ranks, never
    from a file or a user."""
    import io

    import torch

    here = None
    if device is not None and torch.device(device).type == "cuda":
        dev = torch.device(device)
        target = f"cuda:{dev.index if dev.index is not None else torch.cuda.current_device()}"
        here = {f"cuda:{k}": target for k in range(torch.cuda.device_count())}
    return torch.load(io.BytesIO(data), map_location=here, weights_only=False)


def _packed(local: Any, me: int) -> tuple[bytes, Any]:
    """:func:`_pack` of this rank's part, and the part itself; a part that cannot be packed (an
    error holding a lambda) becomes a :class:`TnvizError` saying what it was, here and on every
    other rank, so that every rank reaches the gather and then raises it."""
    try:
        return _pack(local), local
    except Exception as exc:
        what = local if isinstance(local, BaseException) else exc
        error = TnvizError(f"rank {me}: {type(what).__name__}: {what}")
        return _pack(error), error


def map_spread(fn: Callable[[T], R], items: Sequence[T], costs: Sequence[float], *, distributed: bool = False,
               workers: int | None = None, done: Callable[[int, T], None] | None = None,
               device: Any = None) -> list[R]:
    """``[fn(item) for item in items]``: with ``distributed``, each rank computes the items
    :func:`assign` gives it (on :func:`tnviz.model.parallel.map_ordered`'s workers) and every rank
    gets all results in item order, the other ranks' CUDA tensors on ``device`` (the run's);
    otherwise :func:`~tnviz.model.parallel.map_ordered` itself.  ``done(k, item)`` counts this
    rank's items."""
    items = list(items)
    if not distributed:
        return map_ordered(fn, items, workers=workers, done=done)
    dist = _dist()
    owners = assign(list(costs), dist.get_world_size())
    me = dist.get_rank()
    mine = [k for k, r in enumerate(owners) if r == me]
    try:
        local: Any = list(zip(mine, map_ordered(fn, [items[k] for k in mine], workers=workers, done=done)))
    except Exception as exc:  # every rank must reach the gather, or the others wait forever
        local = exc
    # each rank's part travels as bytes and lands on this rank's device (all_gather_object would
    # unpickle another rank's CUDA tensors onto that rank's GPU); this rank keeps its own objects
    gathered: list[Any] = [None] * dist.get_world_size()
    data, local = _packed(local, me)
    dist.all_gather_object(gathered, data)
    parts: list[Any] = []
    for r, part in enumerate(gathered):
        try:
            parts.append(local if r == me else _unpack(part, device))
        except Exception as exc:  # e.g. an error class that cannot be rebuilt from its arguments
            parts.append(TnvizError(f"rank {r}'s results could not be read on rank {me}: {type(exc).__name__}: {exc}"))
    gathered = parts
    for part in gathered:  # the first rank's error, raised on every rank
        if isinstance(part, BaseException):
            raise part
    out: list[Any] = [None] * len(items)
    for part in gathered:
        for k, result in part:
            out[k] = result
    return out


__all__ = ["TORCHRUN_ENV", "assign", "svd_cost", "group_active", "group_initialized", "rank", "resolve",
           "launched_by_torchrun", "init_from_env", "map_spread"]

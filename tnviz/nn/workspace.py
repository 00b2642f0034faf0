"""Reused CPU buffers for the large intermediates of a sweep, and the sweep step that uses them.

Why: on CPU, torch asks the C allocator for every tensor, and glibc hands large blocks (tens of
MB) back to the kernel on free.  The next step then page-faults its way through fresh memory: on
the benchmark machine 0.4 ms per MB, 100 ms for one 256 MB state, which is as long as the GEMMs
that fill it (benchmarks/README.md, "Training at batch 1024").  A sweep (``chain``, ``ring``,
``modes``) at large batch makes such states at every step, forward and backward, so a training
step spent more time faulting than multiplying.  (CUDA has a caching allocator; this is CPU only.)

:class:`Workspace` keeps those buffers and hands one out again only when nothing else holds it
(its storage's use count: a state saved by autograd for a backward not yet run, or a result the
caller still holds, is never reused).  The layer's output comes from it too: a caller who keeps
it keeps it, and one who drops it (the usual training or inference loop) gives it back.  One
workspace serves every layer of the process (:func:`shared`), so inference through many layers
holds one layer's intermediates, not the sum; after training it holds the pooled part of the
step's peak activations until :func:`release` (called when a layer leaves training mode or
clears its cache), and never more than :data:`MAX_PER_SIZE` buffers of one size.
:func:`pooled_sweep` is one sweep step that writes its result, and in backward its
temporaries, into such buffers; it is the same arithmetic as the plain step in
:mod:`tnviz.nn.strategies`, which small or non-CPU states take.
"""
from __future__ import annotations

import threading
from typing import Any

import torch

#: Buffers below this many elements come from the allocator as usual (glibc reuses small blocks
#: without faults; pooling them would only cost bookkeeping).
POOL_MIN_ELEMENTS = 1 << 18

#: A size not asked for in this many requests is dropped once its buffers are free (training
#: asks for the same sizes every step; a batch size that stops recurring is let go).
STALE_AFTER = 1024


#: At most this many buffers of one size are kept: a caller who keeps every result (a list of
#: outputs) gets plain tensors past that, and the workspace never holds more than this many of
#: them once they are dropped.
MAX_PER_SIZE = 8


#: torch's count of the holders of a storage (private; without it nothing is pooled).
_use_count = getattr(torch._C, "_storage_Use_Count", None)


def _alias(buf: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A new tensor on ``buf``'s storage: it counts in the storage's use while it lives, and it is
    not a view, so the caller may modify it in place even under autograd (a custom Function's
    view outputs may not be)."""
    return torch.empty(0, dtype=buf.dtype, device=buf.device).set_(buf.untyped_storage(), 0, shape)


def _free(buf: torch.Tensor) -> bool:
    """Nothing but the workspace holds ``buf``'s storage (the temporary storage object counts one)."""
    return _use_count(buf.untyped_storage()._cdata) <= 2


class Workspace:
    """Buffers by (size, dtype, device), each handed out again once nothing else holds it."""

    def __init__(self) -> None:
        self._buffers: dict[tuple, list[torch.Tensor]] = {}
        self._last_use: dict[tuple, int] = {}
        self._tick = 0
        self._lock = threading.Lock()  # threads sharing the workspace never get the same buffer

    def take(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` (dtype and device of ``like``), reused when possible
        (buffers are kept by size, so states of different shapes and equal size share them)."""
        numel = 1
        for d in shape:
            numel *= d
        if numel < POOL_MIN_ELEMENTS or like.device.type != "cpu" or _use_count is None:
            return torch.empty(shape, dtype=like.dtype, device=like.device)
        key = (numel, like.dtype, like.device)
        with self._lock:
            self._tick += 1
            self._last_use[key] = self._tick
            bufs = self._buffers.setdefault(key, [])
            for buf in bufs:
                if _free(buf) and buf.untyped_storage().nbytes() == numel * buf.element_size():
                    return _alias(buf, shape)
            self._drop_stale()
            buf = torch.empty(numel, dtype=like.dtype, device=like.device)
            bufs = self._buffers.setdefault(key, [])
            if len(bufs) < MAX_PER_SIZE:  # beyond that, callers keeping results get plain tensors
                bufs.append(buf)
            return _alias(buf, shape)

    def _drop_stale(self) -> None:
        for key in [k for k, t in self._last_use.items() if self._tick - t > STALE_AFTER]:
            kept = [b for b in self._buffers[key] if not _free(b)]
            if kept:
                self._buffers[key] = kept
            else:
                del self._buffers[key], self._last_use[key]

    @property
    def nbytes(self) -> int:
        """Bytes held (free or in use)."""
        return sum(b.numel() * b.element_size() for bufs in self._buffers.values() for b in bufs)

    def clear(self) -> int:
        """Let every buffer go (those still in use live on with their users); the bytes let go."""
        with self._lock:
            held = self.nbytes
            self._buffers.clear()
            self._last_use.clear()
        return held


_SHARED = Workspace()


def shared() -> Workspace:
    """The workspace every ``TNLinear`` of this process draws from."""
    return _SHARED


def release() -> int:
    """Free the reused buffers (:func:`shared`); returns the bytes let go."""
    return _SHARED.clear()


def worth_pooling(state: torch.Tensor, out_elements: int) -> bool:
    """The pooled step pays off and applies: a CPU state or result large enough to fault on
    allocation, outside autocast (whose per-op casts the pooled step would bypass)."""
    if state.device.type != "cpu" or _use_count is None or max(state.numel(), out_elements) < POOL_MIN_ELEMENTS:
        return False
    return not torch.is_autocast_enabled("cpu")


class _Step(torch.autograd.Function):
    """``state (M, k, r) -> (M, n, r)`` through ``w``; see :func:`pooled_sweep`."""

    @staticmethod
    def forward(ctx, state, w, bias, geometry, ws):  # noqa: D401
        M, k, n, r, mode = geometry
        ctx.geometry, ctx.ws, ctx.in_shape = geometry, ws, state.shape
        ctx.bias_size = None if bias is None else bias.numel()
        ctx.save_for_backward(state, w)
        s = _contiguous(state, (M, k, r), ws)
        out = ws.take((M, n, r), state)  # also the layer's output: reused once the caller drops it
        if mode == "gemm":
            torch.mm(s.view(M, k), w, out=out.view(M, n))
        elif mode == "left":
            torch.mm(w, s.view(k, r), out=out.view(n, r))
        elif mode == "batched":
            torch.bmm(w.expand(M, n, k), s, out=out)
        else:  # transposed: one GEMM on the state with its trailing inputs moved before k
            st = ws.take((M, r, k), state)
            st.copy_(s.transpose(1, 2))
            tmp = ws.take((M, r, n), state)
            torch.mm(st.view(M * r, k), w, out=tmp.view(M * r, n))
            out.copy_(tmp.transpose(1, 2))
        if bias is not None:  # the layer's bias, added in place
            out.view(-1, bias.numel()).add_(bias)
        return out

    @staticmethod
    def backward(ctx, g):
        state, w = ctx.saved_tensors
        M, k, n, r, mode = ctx.geometry
        need_state, need_w, need_bias = ctx.needs_input_grad[:3]
        gb = g.reshape(-1, ctx.bias_size).sum(0) if need_bias else None
        mat = w if mode in ("gemm", "transposed") else w.t()  # (k, n) in every mode
        if torch.is_grad_enabled():  # create_graph: plain differentiable ops (double backward)
            s, g3 = state.reshape(M, k, r), g.reshape(M, n, r)
            gs = torch.matmul(mat, g3).reshape(ctx.in_shape) if need_state else None
            gm = torch.einsum("mkr,mnr->kn", s, g3) if need_w else None
            return gs, (gm if gm is None or mat is w else gm.t()), gb, None, None, None
        ws = ctx.ws
        s = _contiguous(state, (M, k, r), ws)
        g = g.reshape(M, n, r) if g.is_contiguous() else _contiguous(g, (M, n, r), ws)
        gs = gw = None
        if need_state:
            gs = ws.take((M, k, r), g)
        if mode == "gemm":  # w (k, n)
            if need_w:
                gw = s.view(M, k).t() @ g.view(M, n)
            if need_state:
                torch.mm(g.view(M, n), w.t(), out=gs.view(M, k))
        elif mode == "left":  # w (n, k)
            if need_w:
                gw = g.view(n, r) @ s.view(k, r).t()
            if need_state:
                torch.mm(w.t(), g.view(n, r), out=gs.view(k, r))
        elif mode == "batched":  # w (n, k)
            if need_w:  # the sum over m of G[m] S[m]^T: one batched GEMM and one reduction
                per = ws.take((M, n, k), g)
                torch.bmm(g, s.transpose(1, 2), out=per)
                gw = per.sum(0)
            if need_state:
                torch.bmm(w.t().contiguous().expand(M, k, n), g, out=gs)
        else:  # transposed, w (k, n)
            gt = ws.take((M, r, n), g)
            gt.copy_(g.transpose(1, 2))
            if need_w:
                st = ws.take((M, r, k), s)
                st.copy_(s.transpose(1, 2))
                gw = st.view(M * r, k).t() @ gt.view(M * r, n)
            if need_state:
                tmp = ws.take((M, r, k), g)
                torch.mm(gt.view(M * r, n), w.t(), out=tmp.view(M * r, k))
                gs.copy_(tmp.transpose(1, 2))
        return (gs.view(ctx.in_shape) if gs is not None else None), gw, gb, None, None, None


def _contiguous(t: torch.Tensor, shape: tuple[int, ...], ws: Workspace) -> torch.Tensor:
    """``t`` as a contiguous tensor of ``shape``: a view when possible, else a pooled copy."""
    if t.is_contiguous():
        return t.view(shape)
    buf = ws.take(shape, t)
    buf.view(t.shape).copy_(t)
    return buf


def pooled_sweep(state: torch.Tensor, w: torch.Tensor, M: int, k: int, n: int, r: int, mode: str,
                 ws: Workspace, bias: torch.Tensor | None = None) -> Any:
    """One sweep step ``(M, k, r) -> (M, n, r)`` with its large tensors from ``ws``: ``w`` is the
    ``(k, n)`` matrix for modes ``gemm`` and ``transposed``, its contiguous transpose ``(n, k)``
    for ``left`` and ``batched`` (a GEMM reads it 2x faster than a transposed view).  ``bias``
    (the last step's: the layer's) is added to the result in place, where autograd would
    otherwise make a second output-sized tensor (``y + b``) or copy the gradient (``y.add_(b)``
    on a view)."""
    return _Step.apply(state, w, bias, (M, k, n, r, mode), ws)

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
clears its cache), never more than :data:`MAX_PER_SIZE` buffers of one size and never more than
:data:`MAX_BYTES` in all.
:func:`pooled_sweep` is one sweep step that writes its result, and in backward its
temporaries, into such buffers; it is the same arithmetic as the plain step of
:func:`tnviz.nn.plan.sweep`, which small or non-CPU states take.
"""
from __future__ import annotations

import sys
import threading
from typing import Any

import torch
from torch.autograd import forward_ad

#: Buffers below this many elements (4 MB in float32) come from the allocator as usual: glibc
#: reuses such blocks without faults, and the pooled step's bookkeeping (about 0.1 ms a step)
#: made batch-64 Tucker inference 20-35% slower at 1 MB (benchmarks/README.md).
POOL_MIN_ELEMENTS = 1 << 20

#: At most this many buffers of one size are kept: a caller who keeps every result (a list of
#: outputs) gets plain tensors past that, and the workspace never holds more than this many of
#: them once they are dropped.
MAX_PER_SIZE = 8

#: The workspace holds at most this many bytes: a new buffer first evicts free buffers, least
#: recently used first, and is not kept if that is not enough (it is then a plain tensor).  A
#: 4096x4096 MPO at bond 16 trains at batch 1024 with 528 MB.
MAX_BYTES = 1 << 30


#: torch's count of the holders of a storage (private; without it nothing is pooled).
_use_count = getattr(torch._C, "_storage_Use_Count", None)


class _Buffer:
    """One pooled buffer: its tensor, its storage object (torch keeps one Python object per
    storage, so a caller holding ``y.untyped_storage()`` holds this very object) and what holds
    it when nothing but the workspace does."""

    __slots__ = ("tensor", "storage", "idle", "last_use")

    def __init__(self, numel: int, like: torch.Tensor, tick: int) -> None:
        self.tensor = torch.empty(numel, dtype=like.dtype, device=like.device)
        self.storage = self.tensor.untyped_storage()
        self.idle = self._holders()
        self.last_use = tick

    def _holders(self) -> tuple[int, int]:
        return _use_count(self.storage._cdata), sys.getrefcount(self.storage)

    @property
    def nbytes(self) -> int:
        return self.storage.nbytes()

    def free(self) -> bool:
        """Nothing else holds it: no tensor on its storage, no reference to its storage object."""
        return self._holders() == self.idle

    def spoiled(self) -> bool:
        """Moved to shared memory (``torch.multiprocessing`` sent it to another process, which
        may still read it) or resized by a caller: never to be handed out again."""
        return self.storage.is_shared() or self.nbytes != self.tensor.numel() * self.tensor.element_size()

    def alias(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A new tensor on the storage: it counts as a holder while it lives, and it is not a view,
        so the caller may modify it in place even under autograd (a custom Function's view outputs
        may not be)."""
        t = self.tensor
        return torch.empty(0, dtype=t.dtype, device=t.device).set_(self.storage, 0, shape)


class Workspace:
    """Buffers by (size, dtype, device), each handed out again once nothing else holds it."""

    def __init__(self) -> None:
        self._buffers: dict[tuple, list[_Buffer]] = {}
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
            bufs = self._buffers.setdefault(key, [])
            for buf in list(bufs):
                if buf.spoiled():
                    bufs.remove(buf)  # its holders keep it; the workspace lets it go
                elif buf.free():
                    buf.last_use = self._tick
                    return buf.alias(shape)
            need = numel * like.element_size()
            if len(bufs) >= MAX_PER_SIZE or not self._make_room(need):
                return torch.empty(shape, dtype=like.dtype, device=like.device)
            buf = _Buffer(numel, like, self._tick)
            bufs.append(buf)
            return buf.alias(shape)

    def _make_room(self, need: int) -> bool:
        """Evict free buffers, least recently used first, until ``need`` more bytes fit."""
        held = self._held()
        if held + need <= MAX_BYTES:
            return True
        idle = sorted(((b.last_use, key, b) for key, bufs in self._buffers.items() for b in bufs if b.free()),
                      key=lambda t: t[0])
        for _, key, buf in idle:
            self._buffers[key].remove(buf)
            held -= buf.nbytes
            if held + need <= MAX_BYTES:
                break
        self._buffers = {k: v for k, v in self._buffers.items() if v}
        return held + need <= MAX_BYTES

    def _held(self) -> int:
        return sum(b.nbytes for bufs in self._buffers.values() for b in bufs)

    @property
    def nbytes(self) -> int:
        """Bytes held (free or in use)."""
        with self._lock:
            return self._held()

    def clear(self) -> int:
        """Let every buffer go (those still in use live on with their users); the bytes let go."""
        with self._lock:
            held = self._held()
            self._buffers.clear()
        return held

    # what a plan's sweep step asks of the workspace it is handed (tnviz.nn.plan.SweepWorkspace)
    def worth(self, state: torch.Tensor, out_elements: int) -> bool:
        """:func:`worth_pooling`: the pooled step pays off and applies to ``state``."""
        return worth_pooling(state, out_elements)

    def sweep(self, state: torch.Tensor, w: torch.Tensor, M: int, k: int, n: int, r: int, mode: str,
              bias: torch.Tensor | None = None) -> Any:
        """:func:`pooled_sweep` with this workspace's buffers."""
        return pooled_sweep(state, w, M, k, n, r, mode, self, bias=bias)


_SHARED = Workspace()


def shared() -> Workspace:
    """The workspace every ``TNLinear`` of this process draws from."""
    return _SHARED


def release() -> int:
    """Free the reused buffers (:func:`shared`); returns the bytes let go."""
    return _SHARED.clear()


def worth_pooling(state: torch.Tensor, out_elements: int) -> bool:
    """The pooled step pays off and applies: a real CPU state or result large enough to fault on
    allocation, outside what a custom ``autograd.Function`` without ``jvp``/``vmap`` rules would
    break or change (``torch.func`` transforms, forward-mode AD, ``torch.jit.trace``, autocast)."""
    if state.device.type != "cpu" or _use_count is None:
        return False
    if max(state.numel(), out_elements) < POOL_MIN_ELEMENTS:
        return False
    if state.is_complex() or torch.is_autocast_enabled("cpu"):
        return False
    return custom_functions_ok()


def custom_functions_ok() -> bool:
    """A custom ``autograd.Function`` without ``jvp``/``vmap`` rules may run: no ``torch.func``
    transform, forward-mode AD, ``torch.jit.trace`` or ``torch.compile`` is active (compiled,
    the in-place bias and the halves product lost the bias's gradient; the compiler plans
    memory itself)."""
    return not (torch.jit.is_tracing() or _compiling() or _functorch_active() or _forward_ad_level() >= 0)


def _compiling() -> bool:
    check = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(check()) if check is not None else False


def _legacy_batched(t: torch.Tensor) -> bool:
    """``t`` is batched by the legacy vmap that ``autograd.grad(..., is_grads_batched=True)`` and
    ``jacobian(..., vectorize=True)`` run backward under; ``out=`` and in-place ops have no rules there."""
    check = getattr(torch._C._functorch, "is_legacy_batchedtensor", None)
    return bool(check(t)) if check is not None else False


def _functorch_active() -> bool:
    check = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(check()) if check is not None else False


def _forward_ad_level() -> int:
    return getattr(forward_ad, "_current_level", -1)


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
        if torch.is_grad_enabled() or _legacy_batched(g):
            # create_graph (double backward) or a vmapped backward (is_grads_batched, jacobian with
            # vectorize=True): plain differentiable ops with batching rules (no out=, no einsum)
            s, g3 = state.reshape(M, k, r), g.reshape(M, n, r)
            gs = torch.matmul(mat, g3).reshape(ctx.in_shape) if need_state else None
            gm = s.transpose(0, 1).reshape(k, M * r) @ g3.transpose(1, 2).reshape(M * r, n) if need_w else None
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


#: The halves product loops over the left half's outputs in Python; above this many the loop's
#: overhead (about 20 us an iteration) outgrows the permuted copy it saves.
HALVES_MAX_LOOP = 256


def halves_product_ok(left: torch.Tensor, O: int) -> bool:
    """:func:`halves_product` applies: a real CPU tensor, few enough left outputs, and no
    transform that a custom ``autograd.Function`` would break."""
    return (left.device.type == "cpu" and left.is_floating_point() and O <= HALVES_MAX_LOOP
            and custom_functions_ok() and not torch.is_autocast_enabled("cpu"))


class _HalvesProduct(torch.autograd.Function):
    """``W[o, p, i, j] = sum_k L[o, i, k] R[k, p, j]`` written straight in ``W``'s layout,
    ``(O P, I J)``: one batched GEMM per ``o`` (the batch over ``p``).  The one large GEMM
    ``(O I, K) @ (K, P J)`` leaves ``(O, I, P, J)``, whose permuted copy, and the gradient's
    permuted copy back, took half of the rebuild's time (two 64 MB copies at 4096x4096, about
    100 ms each here).  Backward reads the gradient once, in the same layout, per ``o``."""

    @staticmethod
    def forward(ctx, left, right, dims, ws):  # noqa: D401
        O, I, K, P, J = dims
        ctx.dims = dims
        ctx.save_for_backward(left, right)
        L = left.reshape(O, I, K)
        Rp = right.reshape(K, P, J).transpose(0, 1).contiguous()  # (P, K, J)
        if ws is not None:
            out = ws.take((O * P, I * J), left)
        else:
            out = torch.empty((O * P, I * J), dtype=left.dtype, device=left.device)
        W = out.view(O, P, I, J)
        for o in range(O):
            torch.matmul(L[o].expand(P, I, K), Rp, out=W[o])
        return out

    @staticmethod
    def backward(ctx, g):
        left, right = ctx.saved_tensors
        O, I, K, P, J = ctx.dims
        need_left, need_right = ctx.needs_input_grad[:2]
        g4 = g.reshape(O, P, I, J)
        if torch.is_grad_enabled() or _legacy_batched(g):
            # create_graph (double backward) or a vmapped backward (is_grads_batched, jacobian with
            # vectorize=True): plain differentiable ops with batching rules (no out=, no einsum)
            gm = g4.permute(0, 2, 1, 3).reshape(O * I, P * J)
            gl = (gm @ right.reshape(K, P * J).t()).reshape(left.shape) if need_left else None
            gr = (left.reshape(O * I, K).t() @ gm).reshape(right.shape) if need_right else None
            return gl, gr, None, None
        g4 = g4.contiguous()
        L = left.reshape(O, I, K)
        Rp_t = right.reshape(K, P, J).permute(1, 2, 0).contiguous()  # (P, J, K)
        gl = torch.empty((O, I, K), dtype=g.dtype, device=g.device) if need_left else None
        grp = torch.zeros((P, K, J), dtype=g.dtype, device=g.device) if need_right else None
        per = torch.empty((P, I, K), dtype=g.dtype, device=g.device) if need_left else None
        for o in range(O):
            if need_left:  # dL[o] = sum_p dW[o, p] R[:, p, :]^T
                torch.bmm(g4[o], Rp_t, out=per)
                torch.sum(per, 0, out=gl[o])
            if need_right:  # dR[:, p, :] += L[o]^T dW[o, p]
                grp.baddbmm_(L[o].t().expand(P, K, I), g4[o])
        gl = gl.reshape(left.shape) if need_left else None
        gr = grp.transpose(0, 1).reshape(right.shape) if need_right else None
        return gl, gr, None, None


def halves_product(left: torch.Tensor, right: torch.Tensor, O: int, I: int, K: int, P: int, J: int,
                   ws: Workspace | None = None) -> torch.Tensor:
    """``W (O P, I J)`` from the halves ``left (O, I, K)`` and ``right (K, P, J)`` of a chain or
    ring (:class:`tnviz.nn.rebuild.Halves`); see :class:`_HalvesProduct`.  Under autograd
    (W rebuilt every step) ``W`` comes from the workspace ``ws`` (default: :func:`shared`); a
    weight built without gradients (the eval cache, kept for long) is not the pool's."""
    pooled = torch.is_grad_enabled() and (left.requires_grad or right.requires_grad)
    return _HalvesProduct.apply(left, right, (O, I, K, P, J), (ws or _SHARED) if pooled else None)

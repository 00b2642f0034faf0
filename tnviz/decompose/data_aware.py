"""Data-aware decompositions: minimise the error on the layer's inputs, ``||(W - W~) X||``.

With the input covariance ``C = E[x x^T] = L L^T`` (regularised by ``eps·mean(diag C)·I`` so
that it is positive definite), ``||(W - W~) X||_F^2 ∝ tr((W - W~) C (W - W~)^T) = ||(W - W~) L||_F^2``:
decompose ``W·L`` and multiply the result back by ``L^-1``.

Where ``L^-1`` goes:

* **Kronecker factors** (one covariance per input leg, ``C = C_1 ⊗ ... ⊗ C_n`` with ``i1`` most
  significant): ``L = L_1 ⊗ ... ⊗ L_n`` and ``L_k^-1`` is absorbed into the tensor carrying input
  leg ``k`` — exact, no extra tensor, every method.
* **A full covariance, inputs on one tensor** (``svd``; an MPO whose input legs share a core; a
  single input leg): ``L^-1`` is absorbed into that tensor — exact.
* **A full covariance, inputs on several tensors**: ``L^-1`` mixes the legs and cannot be
  absorbed.  We whiten with the nearest Kronecker structure (``C_k`` = partial trace of ``C``
  over the other legs, exact when ``C`` is a Kronecker product), decompose, and absorb the
  ``L_k^-1`` exactly; the data error is then *measured on the full* ``C``.  Optionally
  (``refit_sweeps > 0``) each tensor carrying input legs is then refit by least squares on the
  full covariance: conjugate gradients on the quadratic ``tr(E (C + ridge·mean(diag C)·I) E^T)``,
  ``refit_sweeps`` sweeps of at most ``refit_iters`` steps, each step lowering that objective
  (``extra['refit']`` records it per sweep).  The ridge term (``refit_ridge``, default 1e-3)
  keeps the refit from moving the weight freely along input directions the calibration data
  never excites.  A refit step costs ``O(out·in²)``, so it is off by default: on MiniLM-sized
  layers it takes seconds per layer and buys a few percent of data error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import opt_einsum as oe

from ..errors import DecompositionError
from .legs import Legs

DEFAULT_EPS = 1e-6


@dataclass
class Covariance:
    """The input covariance, full ``(in, in)`` or Kronecker factors (one per input leg)."""

    kind: str                      # "full" or "kron"
    mats: list[Any]                # [C] or [C_1, ..., C_n]
    chol: list[Any]                # L (lower) of the regularised matrices
    eps: float = DEFAULT_EPS       # the regularisation the factors were computed with
    _inv: list[Any] | None = field(default=None, repr=False)

    @property
    def inv(self) -> list[Any]:
        """``L^-1`` of each factor, computed on first use: whitening needs only ``L``, and a full
        covariance whose inputs lie on several tensors is absorbed through its Kronecker factors,
        so its own inverse (a third of a Cholesky's cost again, 1536² on MiniLM) is often never read."""
        if self._inv is None:
            self._inv = [_triangular_inverse(L) for L in self.chol]
        return self._inv

    def fits(self, legs: Legs, like, eps: float) -> bool:
        """Whether these factors are the ones :func:`parse_covariance` would compute for a weight
        like ``like`` with ``legs`` and ``eps`` (so a factored covariance can be passed on)."""
        sizes = [int(m.shape[0]) for m in self.mats]
        shape_ok = sizes == [legs.in_features] if self.kind == "full" else sizes == list(legs.in_dims)
        first = self.chol[0]
        return shape_ok and self.eps == eps and first.dtype == like.dtype and first.device == like.device


def _as_matrix(C, size: int, what: str, like):
    import torch

    if not isinstance(C, torch.Tensor):
        try:
            C = torch.as_tensor(C)
        except Exception:
            raise DecompositionError(f"{what} must be a square matrix (tensor or array); got {type(C).__name__}") from None
    if C.ndim != 2 or C.shape[0] != C.shape[1] or C.shape[0] != size:
        raise DecompositionError(f"{what} must be a {size}x{size} matrix; got shape {list(C.shape)}")
    C = C.to(device=like.device, dtype=like.dtype)
    if not bool(torch.isfinite(C).all()):
        raise DecompositionError(f"{what} must hold finite numbers; it has NaN or inf")
    C = C + C.mT  # (C + C^T) / 2 with one temporary of its size, not two
    return C.div_(2)


def _cholesky(C, eps: float, what: str):
    import torch

    scale = float(torch.diagonal(C).mean())
    if not scale > 0:
        raise DecompositionError(f"{what} must be a covariance with a positive diagonal; mean(diag) is {scale:g}")
    reg = C.clone()  # C + eps·scale·I, without a second identity-sized temporary (the same numbers)
    reg.diagonal().add_(eps * scale)
    L, info = torch.linalg.cholesky_ex(reg)
    del reg
    if int(info) != 0:
        raise DecompositionError(
            f"{what} must be symmetric positive semi-definite; its Cholesky factor fails at row {int(info)} "
            f"even after adding eps·mean(diag) = {eps * scale:g}"
        )
    return L


def _triangular_inverse(L):
    import torch

    eye = torch.eye(L.shape[0], device=L.device, dtype=L.dtype)
    return torch.linalg.solve_triangular(L, eye, upper=False)


def parse_covariance(input_cov, legs: Legs, like, eps: float = DEFAULT_EPS) -> Covariance:
    """Check ``input_cov`` against the weight's input legs and factor it.

    A :class:`Covariance` this function returned earlier is passed through when it
    :meth:`~Covariance.fits` (the same sizes, ``eps``, dtype and device): callers that decompose
    one weight several times (the bond split, the decomposition and its refit; every point of a
    trade-off) factor its covariance once, and get bit for bit the factors a fresh call computes.
    """
    if isinstance(input_cov, Covariance):
        if not input_cov.fits(legs, like, eps):
            raise DecompositionError(
                f"a factored input_cov must match the weight: {input_cov.kind} factors of sizes "
                f"{[int(m.shape[0]) for m in input_cov.mats]} (eps {input_cov.eps:g}, {input_cov.chol[0].dtype}) "
                f"for input legs {list(legs.in_dims)} (eps {eps:g}, {like.dtype})")
        return input_cov
    if isinstance(input_cov, (list, tuple)):
        if len(input_cov) != len(legs.in_dims):
            raise DecompositionError(
                f"Kronecker input_cov needs one factor per input leg {list(legs.in_dims)}; got {len(input_cov)} factors"
            )
        mats = [_as_matrix(C, d, f"input_cov factor {k + 1} (leg {legs.in_names[k]!r})", like)
                for k, (C, d) in enumerate(zip(input_cov, legs.in_dims))]
        kind = "kron"
    else:
        mats = [_as_matrix(input_cov, legs.in_features, "input_cov", like)]
        kind = "full"
    return Covariance(kind, mats, [_cholesky(C, eps, "input_cov") for C in mats], eps)


def kron_approximation(cov: Covariance, legs: Legs, eps: float = DEFAULT_EPS) -> Covariance:
    """Per-leg factors of a full covariance: ``C_k = Tr_{other legs}(C) / tr(C)^((n-1)/n)``
    (exact when ``C`` is a Kronecker product)."""
    C = cov.mats[0]
    n = len(legs.in_dims)
    Ct = C.reshape(*legs.in_dims, *legs.in_dims)
    total = float(C.trace())
    mats = []
    for k in range(n):
        others = [j for j in range(n) if j != k]
        P = Ct.permute(k, n + k, *others, *[n + j for j in others])
        rest = math.prod(legs.in_dims[j] for j in others)
        P = P.reshape(legs.in_dims[k], legs.in_dims[k], rest, rest)
        mats.append(P.diagonal(dim1=2, dim2=3).sum(-1) / total ** ((n - 1) / n))
    return Covariance("kron", mats, [_cholesky(M, eps, "input_cov (Kronecker approximation)") for M in mats], eps)


def apply_legs(M, mats: Sequence[Any], in_dims: Sequence[int]):
    """``M · (A_1 ⊗ ... ⊗ A_n)`` for ``M`` of shape ``(rows, prod(in_dims))``, leg by leg."""
    import torch

    rows = M.shape[0]
    X = M.reshape(rows, *in_dims)
    for k, A in enumerate(mats):
        X = torch.movedim(torch.tensordot(X, A, dims=([k + 1], [0])), -1, k + 1)
    return X.reshape(rows, -1)


def right_multiply(M, cov: Covariance, which: str, in_dims: Sequence[int]):
    """``M · X`` with ``X`` = ``L`` (``which='chol'``), ``L^-1`` (``'inv'``) or ``C`` (``'mats'``)."""
    mats = getattr(cov, which)
    if cov.kind == "full":
        if which == "chol":  # the bond split and the decomposition both whiten the weight: once
            from .randomized import shared

            return shared("times L", cov, M, lambda A: times_lower(A, mats[0]))
        return times_lower(M, mats[0]) if which != "mats" else M @ mats[0]
    return apply_legs(M, mats, in_dims)


#: Column blocks of :func:`times_lower` (on a 2-core CPU, float64: 1024x2752 times 2752² in
#: 105 ms with 4 blocks, 160 ms as one product).
LOWER_BLOCKS = 4
#: Below this size :func:`times_lower` is one product (blocks of tiny GEMMs save nothing).
LOWER_MIN = 256


def times_lower(M, L):
    """``M · L`` for a lower-triangular ``L``: column block ``j`` of the product is
    ``M[:, j:] · L[j:, j-block]`` (the rows above the block are zeros in ``L``), about 5/8 of a
    full product's FLOPs, in the same BLAS."""
    import torch

    n = L.shape[0]
    if n < LOWER_MIN or M.ndim != 2:
        return M @ L
    cuts = [round(i * n / LOWER_BLOCKS) for i in range(LOWER_BLOCKS + 1)]
    out = torch.empty(M.shape[0], n, dtype=torch.result_type(M, L), device=M.device)
    for a, b in zip(cuts, cuts[1:]):
        out[:, a:b] = M[:, a:] @ L[a:, a:b]  # (not mm(out=) into the strided column block: any device)
    return out


def quad(E, cov: Covariance, in_dims: Sequence[int]) -> float:
    """``tr(E C E^T)`` with the given (unregularised) covariance."""
    return float((E * right_multiply(E, cov, "mats", in_dims)).sum())


def data_error(W, W_approx, cov: Covariance, in_dims: Sequence[int], denom: float | None = None) -> float:
    """``||(W - W~) X|| / ||W X||`` under the covariance; ``denom``: ``quad(W, cov, in_dims)`` when
    the caller already has it (several approximations of one weight)."""
    if denom is None:
        denom = quad(W, cov, in_dims)
    num = max(quad(W - W_approx, cov, in_dims), 0.0)
    return math.sqrt(num / denom) if denom > 0 else math.sqrt(num)


def whitened_data_error(M, D, cov: Covariance, w_norm: float, diff: float) -> float:
    """:func:`data_error` of ``W~ = D·L^-1`` for ``M = W·L`` and a full covariance, from the
    whitened residual: ``L L^T = C + δI`` (``δ = eps·mean(diag C)``, :func:`_cholesky`), so
    ``tr(E C E^T) = ||M - D||² - δ||E||²`` and ``tr(W C W^T) = ||M||² - δ||W||²``, with
    ``||W|| = w_norm`` and ``||E|| = ||W - W~|| = diff``.  Equal to :func:`data_error` up to
    the Cholesky factor's rounding (far below δ), at the cost of one pass over ``M``."""
    import torch

    delta = cov.eps * float(torch.diagonal(cov.mats[0]).mean())
    num = float(torch.linalg.vector_norm((M - D.reshape(M.shape)).reshape(-1), dtype=torch.float64)) ** 2
    den = float(torch.linalg.vector_norm(M.reshape(-1), dtype=torch.float64)) ** 2
    num = max(num - delta * diff ** 2, 0.0)
    den = den - delta * w_norm ** 2
    return math.sqrt(num / den) if den > 0 else math.sqrt(num)


def input_tensors(net) -> list[str]:
    """Names of the tensors that carry input legs."""
    held = set(net.inputs)
    return [t.name for t in net.tensors if held & set(t.indices)]


def absorb_single(net, tensors: dict, cov: Covariance, in_dims: Sequence[int]) -> dict:
    """Multiply the one tensor carrying every input leg by ``L^-1`` (exact)."""
    (name,) = input_tensors(net)
    t = net.tensor(name)
    X = tensors[name]
    in_axes = [t.indices.index(i) for i in net.inputs]
    other = [a for a in range(X.ndim) if a not in in_axes]
    P = X.permute(*other, *in_axes)
    lead = P.shape[: len(other)]
    flat = P.reshape(math.prod(lead) if lead else 1, -1)
    if cov.kind == "full":  # flat · L^-1 as one triangular solve: a third of forming L^-1 and multiplying
        import torch

        flat = torch.linalg.solve_triangular(cov.chol[0], flat, upper=False, left=False)
    else:
        flat = apply_legs(flat, cov.inv, in_dims)
    P = flat.reshape(*lead, *P.shape[len(other):])
    inverse = [0] * X.ndim
    for pos, a in enumerate(other + in_axes):
        inverse[a] = pos
    return {**tensors, name: P.permute(*inverse).contiguous()}


def absorb_per_leg(net, tensors: dict, cov: Covariance) -> dict:
    """Multiply each tensor carrying input leg ``k`` by ``L_k^-1`` on that leg (exact)."""
    import torch

    out = dict(tensors)
    for k, leg in enumerate(net.inputs):
        (name,) = net.tensors_on(leg)
        axis = net.tensor(name).indices.index(leg)
        out[name] = torch.movedim(torch.tensordot(out[name], cov.inv[k], dims=([axis], [0])), -1, axis).contiguous()
    return out


def _environment(net, tensors: dict, name: str, Y):
    """``J^T(Y)``: contract ``Y[outputs..., inputs...]`` with every tensor but ``name``."""
    sym = net.symbols
    terms, ops = [], []
    for t in net.tensors:
        if t.name != name:
            terms.append("".join(sym[i] for i in t.indices))
            ops.append(tensors[t.name])
    terms.append("".join(sym[i] for i in (*net.outputs, *net.inputs)))
    ops.append(Y.reshape(*net.out_dims, *net.in_dims))
    target = "".join(sym[i] for i in net.tensor(name).indices)
    return oe.contract(",".join(terms) + "->" + target, *ops)


def refit_inputs(net, tensors: dict, W, cov: Covariance, *, sweeps: int = 1, iters: int = 10,
                 ridge: float = 1e-3) -> tuple[dict, list[float]]:
    """Least-squares refit of the tensors carrying input legs on the full covariance
    (conjugate gradients, one tensor at a time) with a ridge ``ridge·mean(diag C)·I``.
    Returns the tensors and the relative objective ``sqrt(tr(E C_r E^T) / tr(W C_r W^T))`` before
    and after each sweep (non-increasing)."""
    import torch

    from ..contract import to_dense

    in_dims = net.in_dims
    C = cov.mats[0]
    reg = C + ridge * float(torch.diagonal(C).mean()) * torch.eye(C.shape[0], device=C.device, dtype=C.dtype)
    ridged = Covariance("full", [reg], cov.chol, cov.eps, cov._inv)
    tensors = dict(tensors)
    history = [data_error(W, to_dense(net, tensors), ridged, in_dims)]
    for _ in range(int(sweeps)):
        for name in input_tensors(net):
            def apply_J(p):
                return to_dense(net, {**tensors, name: p})

            x = tensors[name]
            R = W - apply_J(x)
            r = _environment(net, tensors, name, R @ reg)
            p = r.clone()
            rr = float((r * r).sum())
            start = rr
            for _ in range(int(iters)):
                if rr <= 1e-28 * max(start, 1e-300):
                    break
                Ap = _environment(net, tensors, name, apply_J(p) @ reg)
                pAp = float((p * Ap).sum())
                if not pAp > 0:
                    break
                alpha = rr / pAp
                x = x + alpha * p
                r = r - alpha * Ap
                rr_new = float((r * r).sum())
                p = r + (rr_new / rr) * p
                rr = rr_new
            tensors[name] = x
        history.append(data_error(W, to_dense(net, tensors), ridged, in_dims))
    return tensors, history

"""The gauge freedom of a bond: inserting ``X X^-1`` between the two tensors that share it,
``a -> a X^-1`` and ``b -> X b``, changes both tensors and not the layer.

One module for every face that shows it: the stack views (:mod:`tnviz.stack`), the Teach page
(:mod:`tnviz.teach`) and the bond features (:mod:`tnviz.bonds`) all move a gauge with
:func:`apply_gauge` and draw their ``X`` with :func:`random_invertible` or
:func:`random_orthogonal`.

>>> import numpy as np, tnviz
>>> net = tnviz.mpo([2, 3], [3, 2], ranks=3)
>>> t = tnviz.random_tensors(net, seed=0)
>>> moved = apply_gauge(net, t, "b1", random_invertible(3, seed=1))
>>> bool(np.allclose(tnviz.to_dense(net, moved), tnviz.to_dense(net, t)))
True
>>> round(float(np.linalg.cond(random_invertible(3, seed=1))), 6)
4.0
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .errors import InvalidNetworkError
from .network import TensorNetwork

#: Singular values of :func:`random_invertible`: between these, both ends reached.
SMALLEST, LARGEST = 0.5, 2.0


def _check_size(size: Any) -> None:
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise InvalidNetworkError(f"a gauge matrix needs a positive size; got {size!r}")


def random_invertible(size: int, seed: int = 0) -> np.ndarray:
    """A seeded random invertible ``size x size`` matrix, far from orthogonal but well
    conditioned: ``U diag(s) V^T`` with random orthogonal ``U, V`` and ``s`` in ``[0.5, 2]``,
    the smallest and the largest value taken (condition number 4, so the move is visible);
    a ``1 x 1`` gauge is the scale 2."""
    _check_size(size)
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((size, size)))
    v, _ = np.linalg.qr(rng.standard_normal((size, size)))
    s = rng.uniform(SMALLEST, LARGEST, size)
    if size > 1:
        s[0], s[-1] = SMALLEST, LARGEST
    else:
        s[:] = LARGEST
    return (u * s) @ v.T


def random_orthogonal(size: int, seed: int = 0) -> np.ndarray:
    """A seeded random orthogonal matrix (``Q`` of a Gaussian's QR, signs fixed)."""
    _check_size(size)
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((size, size)))
    return q * np.sign(np.diag(r))[None, :]


def gauge_bonds(net: TensorNetwork) -> tuple[str, ...]:
    """The indices a gauge move can act on: bonds (shared by exactly two tensors)."""
    return net.bonds


def check_bond(net: TensorNetwork, bond: str) -> None:
    """Refuse anything but a bond shared by exactly two tensors, saying what it is instead."""
    if bond not in net.index_counts:
        raise InvalidNetworkError(
            f"a gauge move acts on a bond shared by exactly two tensors (one of {list(net.bonds)}); "
            f"{bond!r} is not an index of it"
        )
    count = net.index_counts[bond]
    if count != 2:
        what = "an open leg" if count == 1 else f"a hyperedge shared by {count} tensors"
        raise InvalidNetworkError(
            f"a gauge move acts on a bond shared by exactly two tensors; {bond!r} is {what} "
            f"(it is not one of the bonds {list(net.bonds)})"
        )


def apply_gauge(net: TensorNetwork, tensors: Mapping[str, Any], bond: str, X: Any) -> dict[str, np.ndarray]:
    """New tensors with ``X X^-1`` inserted on ``bond``: the first tensor on the bond (network
    order) becomes ``a X^-1``, the second ``X b``; the others are unchanged (the same arrays)."""
    check_bond(net, bond)
    size = net.sizes[bond]
    X = np.asarray(X, dtype=np.float64)
    if X.shape != (size, size):
        raise InvalidNetworkError(f"the gauge matrix must be {size}x{size} for bond {bond!r}; got {X.shape}")
    left, right = net.tensors_on(bond)
    x_inv = np.linalg.inv(X)
    out = {n: tensors[n] for n in net.tensor_names}
    p = net.tensor(left).indices.index(bond)
    q = net.tensor(right).indices.index(bond)
    # a'[..., beta, ...] = sum_alpha a[..., alpha, ...] Xinv[alpha, beta]
    out[left] = np.moveaxis(np.tensordot(np.asarray(tensors[left]), x_inv, axes=([p], [0])), -1, p)
    # b'[..., beta, ...] = sum_alpha X[beta, alpha] b[..., alpha, ...]
    out[right] = np.moveaxis(np.tensordot(X, np.asarray(tensors[right]), axes=([1], [q])), 0, q)
    return out

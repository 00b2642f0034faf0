"""Plain truncated SVD of the matrix, ``W ≈ U·V``: the baseline every trade-off is compared with.

A two-tensor network ``U[outputs, r] · V[r, inputs]`` (bond ``r``) with the singular values split
evenly, ``U = U_r·sqrt(S)``, ``V = sqrt(S)·Vh``.  A 2-D weight keeps single legs ``o1`` / ``i1``;
a conv kernel keeps ``cout`` / ``cin, kh, kw`` (so ``V`` is a bank of ``r`` small kernels).
"""
from __future__ import annotations

from typing import Any

from ..network import TensorNetwork
from .legs import Legs
from .randomized import POWER_ITERS, describe, truncated_svd
from .result import MethodOutput
from .truncation import Truncation


def svd_network(legs: Legs, rank: int) -> TensorNetwork:
    conv = legs.in_names == ("cin", "kh", "kw")
    in_names = list(legs.in_names) if conv else ["i1"]
    in_sizes = list(legs.in_dims) if conv else [legs.in_features]
    out_name = legs.out_names[0] if conv else "o1"
    sizes = {out_name: legs.out_features, "r": rank, **dict(zip(in_names, in_sizes))}
    return TensorNetwork.build(
        [("U", [out_name, "r"]), ("V", ["r", *in_names])], sizes, in_names, [out_name],
        f"SVD {legs.in_features}x{legs.out_features}", {"U": (0.0, 0.0), "V": (2.0, 0.0)},
    )


def truncated_svd_method(T, legs: Legs, trunc: Truncation, *, norm: float, randomized: Any = "auto",
                         seed: int = 0, oversample: int = 10, power_iters: int | None = POWER_ITERS) -> MethodOutput:
    """Truncated SVD of the matrix view of ``T``."""
    import torch

    W = T.reshape(legs.out_features, legs.in_features)
    caps = trunc.caps(["r"])
    if trunc.kind == "rtol":
        trunc = Truncation("rtol", trunc.value, trunc.value * norm)
    res = truncated_svd(W, trunc, bond="r", cap=caps["r"], randomized=randomized, seed=seed,
                        oversample=oversample, power_iters=power_iters)
    root = torch.sqrt(res.S)
    net = svd_network(legs, res.U.shape[1])
    V = (root[:, None] * res.Vh).reshape(net.shape("V"))
    tensors = {"U": (res.U * root).contiguous(), "V": V.contiguous()}
    return MethodOutput(net, tensors, {"r": res.spectrum}, {"r": res.discarded},
                        describe({"r": res}))

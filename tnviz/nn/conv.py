"""Convolutions with tensor-network kernels (paper Fig. 3 iv-v).

* :class:`TuckerConv2d`: Tucker-2 (ranks on ``cout`` and ``cin``, the spatial legs kept): a 1x1
  conv ``cin -> r_in``, the core conv ``r_in -> r_out`` (kh x kw), a 1x1 conv ``r_out -> cout``.
* :class:`CPConv2d`: CP of rank ``R``: a 1x1 conv ``cin -> R``, a depthwise ``kh x 1`` conv, a
  depthwise ``1 x kw`` conv, a 1x1 conv ``R -> cout``.
* :class:`TNConv2d`: any network whose inputs are the patch legs (``cin, kh, kw`` flattened
  row-major, or a finer factorization of them) and whose outputs give ``cout``: the image is
  unfolded into patches (skipped for 1x1 kernels) and a :class:`~tnviz.nn.TNLinear` maps each
  patch, so every execution strategy applies.

Kernel convention, as ``nn.Conv2d.weight`` and :func:`tnviz.conv_tucker`: ``K[cout, cin, kh, kw]``.

>>> import torch
>>> conv = torch.nn.Conv2d(4, 6, 3, padding=1)
>>> layer = from_conv(conv, "tucker2", ranks=(6, 4))     # full rank: the same convolution
>>> x = torch.randn(2, 4, 8, 8)
>>> torch.allclose(layer(x), conv(x), atol=1e-5)
True
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..builders import conv_cp
from ..decompose import decompose
from ..errors import InvalidNetworkError, RankError
from ..network import TensorNetwork, load_network
from .linear import TNLinear


def _pair(v: int | Sequence[int], what: str) -> tuple[int, int]:
    out = (v, v) if isinstance(v, int) else tuple(v)
    if len(out) != 2 or any(not isinstance(a, int) or a < 0 for a in out):
        raise InvalidNetworkError(f"{what} must be an int or a pair of non-negative ints; got {v!r}")
    return out  # type: ignore[return-value]


class _ConvGeometry(nn.Module):
    def _set_geometry(self, kernel_size, stride, padding, dilation) -> None:
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.dilation) < 1:
            raise InvalidNetworkError(
                f"kernel_size, stride and dilation must be >= 1; got {self.kernel_size}, {self.stride}, {self.dilation}"
            )

    def _geometry_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}"


def _check_plain_conv(conv: nn.Conv2d) -> None:
    if not isinstance(conv, nn.Conv2d):
        raise InvalidNetworkError(f"from_conv takes an nn.Conv2d; got {type(conv).__name__}")
    if conv.groups != 1:
        raise InvalidNetworkError(f"from_conv supports groups=1 convolutions; this one has groups={conv.groups}")
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise InvalidNetworkError(
            f"from_conv supports numeric zero padding; got padding={conv.padding!r}, mode {conv.padding_mode!r}"
        )


# ---------------------------------------------------------------------- Tucker-2
class TuckerConv2d(_ConvGeometry):
    """Tucker-2 convolution: ``K[o,c,h,w] = sum_{r,s} U_out[o,r] G[r,s,h,w] U_in[c,s]``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, ranks: tuple[int, int],
                 stride=1, padding=0, dilation=1, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self._set_geometry(kernel_size, stride, padding, dilation)
        r_out, r_in = ranks
        if min(r_out, r_in) < 1:
            raise RankError(f"Tucker-2 ranks (r_out, r_in) must be positive; got {ranks}")
        self.in_channels, self.out_channels, self.ranks = in_channels, out_channels, (r_out, r_in)
        f = {"device": device, "dtype": dtype}
        kh, kw = self.kernel_size
        self.u_in = nn.Parameter(torch.empty(in_channels, r_in, **f))
        self.core = nn.Parameter(torch.empty(r_out, r_in, kh, kw, **f))
        self.u_out = nn.Parameter(torch.empty(out_channels, r_out, **f))
        self.bias = nn.Parameter(torch.zeros(out_channels, **f)) if bias else None
        with torch.no_grad():
            nn.init.orthogonal_(self.u_in)
            nn.init.orthogonal_(self.u_out)
            nn.init.kaiming_uniform_(self.core, a=math.sqrt(5))

    @property
    def network(self) -> TensorNetwork:
        kh, kw = self.kernel_size
        r_out, r_in = self.ranks
        return TensorNetwork.build(
            [("U_out", ["cout", "r1"]), ("G", ["r1", "r2", "kh", "kw"]), ("U_in", ["cin", "r2"])],
            {"cout": self.out_channels, "r1": r_out, "r2": r_in, "kh": kh, "kw": kw, "cin": self.in_channels},
            ["cin", "kh", "kw"], ["cout"], name=f"Tucker-2 conv {self.out_channels}x{self.in_channels}x{kh}x{kw}",
        )

    def network_tensors(self) -> dict[str, torch.Tensor]:
        return {"U_out": self.u_out, "G": self.core, "U_in": self.u_in}

    def kernel(self) -> torch.Tensor:
        """The dense kernel ``(cout, cin, kh, kw)``."""
        return torch.einsum("or,rshw,cs->ochw", self.u_out, self.core, self.u_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.u_in.t()[:, :, None, None])
        y = F.conv2d(y, self.core, None, self.stride, self.padding, self.dilation)
        return F.conv2d(y, self.u_out[:, :, None, None], self.bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, ranks: tuple[int, int] | int) -> "TuckerConv2d":
        """HOSVD on the ``cout`` and ``cin`` modes of ``conv.weight`` (exact at full ranks)."""
        _check_plain_conv(conv)
        K = conv.weight.detach()
        cout, cin, kh, kw = K.shape
        r_out, r_in = (ranks, ranks) if isinstance(ranks, int) else ranks
        r_out, r_in = min(r_out, cout, cin * kh * kw), min(r_in, cin, cout * kh * kw)
        work = K if K.dtype in (torch.float32, torch.float64) else K.float()
        u_out = torch.linalg.svd(work.reshape(cout, -1), full_matrices=False)[0][:, :r_out]
        u_in = torch.linalg.svd(work.transpose(0, 1).reshape(cin, -1), full_matrices=False)[0][:, :r_in]
        core = torch.einsum("ochw,or,cs->rshw", work, u_out, u_in)
        layer = cls(cin, cout, (kh, kw), (r_out, r_in), conv.stride, conv.padding, conv.dilation,
                    conv.bias is not None, device=K.device, dtype=K.dtype)
        with torch.no_grad():
            layer.u_out.copy_(u_out)
            layer.u_in.copy_(u_in)
            layer.core.copy_(core)
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer

    def __repr__(self) -> str:
        params = sum(p.numel() for p in (self.u_in, self.core, self.u_out))
        dense = self.out_channels * self.in_channels * math.prod(self.kernel_size)
        return (f"TuckerConv2d({self.in_channels}->{self.out_channels}, ranks (r_out, r_in)={self.ranks}, "
                f"{self._geometry_repr()}, params={params:,} vs dense {dense:,})")


# ---------------------------------------------------------------------- CP
class CPConv2d(_ConvGeometry):
    """CP convolution: ``K[o,c,h,w] = sum_r U_out[o,r] U_in[c,r] U_h[h,r] U_w[w,r]``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, rank: int,
                 stride=1, padding=0, dilation=1, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self._set_geometry(kernel_size, stride, padding, dilation)
        if rank < 1:
            raise RankError(f"a CP rank must be positive; got {rank}")
        self.in_channels, self.out_channels, self.rank = in_channels, out_channels, rank
        f = {"device": device, "dtype": dtype}
        kh, kw = self.kernel_size
        self.u_out = nn.Parameter(torch.randn(out_channels, rank, **f) / math.sqrt(rank))
        self.u_in = nn.Parameter(torch.randn(in_channels, rank, **f) / math.sqrt(in_channels))
        self.u_h = nn.Parameter(torch.randn(kh, rank, **f) / math.sqrt(kh))
        self.u_w = nn.Parameter(torch.randn(kw, rank, **f) / math.sqrt(kw))
        self.bias = nn.Parameter(torch.zeros(out_channels, **f)) if bias else None

    @property
    def network(self) -> TensorNetwork:
        return conv_cp(self.out_channels, self.in_channels, self.kernel_size, self.rank)

    def network_tensors(self) -> dict[str, torch.Tensor]:
        return {"U1": self.u_out, "U2": self.u_in, "U3": self.u_h, "U4": self.u_w}

    def kernel(self) -> torch.Tensor:
        return torch.einsum("or,cr,hr,wr->ochw", self.u_out, self.u_in, self.u_h, self.u_w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        R = self.rank
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        y = F.conv2d(x, self.u_in.t()[:, :, None, None])
        y = F.conv2d(y, self.u_h.t()[:, None, :, None], None, (sh, 1), (ph, 0), (dh, 1), groups=R)
        y = F.conv2d(y, self.u_w.t()[:, None, None, :], None, (1, sw), (0, pw), (1, dw), groups=R)
        return F.conv2d(y, self.u_out[:, :, None, None], self.bias)

    @classmethod
    def from_factors(cls, conv: nn.Conv2d, factors: dict[str, Any]) -> "CPConv2d":
        """A layer from factors keyed by leg (``cout``, ``cin``, ``kh``, ``kw``), each ``(leg, R)``."""
        _check_plain_conv(conv)
        K = conv.weight
        rank = int(factors["cout"].shape[1])
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, rank, conv.stride, conv.padding,
                    conv.dilation, conv.bias is not None, device=K.device, dtype=K.dtype)
        with torch.no_grad():
            for leg, p in (("cout", layer.u_out), ("cin", layer.u_in), ("kh", layer.u_h), ("kw", layer.u_w)):
                p.copy_(torch.as_tensor(factors[leg]))
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, rank: int, **decompose_options: Any) -> "CPConv2d":
        """CP-ALS of ``conv.weight`` through :func:`tnviz.decompose.decompose` (method ``cp``)."""
        _check_plain_conv(conv)
        dec = decompose(conv.weight.detach(), "cp", max_rank=rank, **decompose_options)
        net = dec.network
        factors = {}
        for t in net.tensors:
            (leg,) = [i for i in t.indices if i in net.inputs or i in net.outputs]
            factors[leg] = dec.tensors[t.name] if t.indices[0] == leg else dec.tensors[t.name].t()
        layer = cls.from_factors(conv, factors)
        layer.decomposition_error = dec.rel_error
        return layer

    def __repr__(self) -> str:
        params = sum(p.numel() for p in (self.u_in, self.u_h, self.u_w, self.u_out))
        dense = self.out_channels * self.in_channels * math.prod(self.kernel_size)
        return (f"CPConv2d({self.in_channels}->{self.out_channels}, rank={self.rank}, {self._geometry_repr()}, "
                f"params={params:,} vs dense {dense:,})")


# ---------------------------------------------------------------------- any network over the patch
class TNConv2d(_ConvGeometry):
    """A convolution whose patch map (``cin*kh*kw -> cout``) is a :class:`TNLinear`."""

    def __init__(self, network, in_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, device=None, dtype=None, strategy: str = "auto") -> None:
        super().__init__()
        self._set_geometry(kernel_size, stride, padding, dilation)
        net = load_network(network)
        patch = in_channels * math.prod(self.kernel_size)
        if net.in_features != patch:
            raise InvalidNetworkError(
                f"the network's inputs must cover one patch, in_channels*kh*kw = {in_channels}*"
                f"{self.kernel_size[0]}*{self.kernel_size[1]} = {patch}; its input legs {list(net.in_dims)} "
                f"multiply to {net.in_features}"
            )
        self.in_channels, self.out_channels = in_channels, net.out_features
        self.linear = TNLinear(net, bias=bias, device=device, dtype=dtype, strategy=strategy)

    @property
    def network(self) -> TensorNetwork:
        return self.linear.network

    def kernel(self) -> torch.Tensor:
        return self.linear.to_dense().reshape(self.out_channels, self.in_channels, *self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        if (kh, kw) == (1, 1) and (ph, pw) == (0, 0):
            patches = x[:, :, ::sh, ::sw].movedim(1, -1)  # (n, ho, wo, cin): no unfold needed
            return self.linear(patches).movedim(-1, 1)
        cols = F.unfold(x, (kh, kw), (dh, dw), (ph, pw), (sh, sw))  # (n, cin*kh*kw, L), cin slowest
        y = self.linear(cols.transpose(1, 2))  # (n, L, cout)
        return y.transpose(1, 2).reshape(n, self.out_channels, ho, wo)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, method: str = "tucker", *, strategy: str = "auto",
                  **decompose_options: Any) -> "TNConv2d":
        """Decompose ``conv.weight`` (legs ``cin, kh, kw`` -> ``cout``) with any method."""
        _check_plain_conv(conv)
        K = conv.weight.detach()
        dec = decompose(K, method, **decompose_options)
        return cls.from_decomposition(dec, conv, strategy=strategy)

    @classmethod
    def from_decomposition(cls, dec: Any, conv: nn.Conv2d, *, strategy: str = "auto") -> "TNConv2d":
        K = conv.weight
        layer = cls(dec.network, conv.in_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.bias is not None, device=K.device, dtype=K.dtype, strategy=strategy)
        layer.linear.load_tensors(dec.tensors)
        if conv.bias is not None:
            with torch.no_grad():
                layer.linear.bias.copy_(conv.bias)
        layer.decomposition_error = getattr(dec, "rel_error", None)
        return layer

    def __repr__(self) -> str:
        return f"TNConv2d({self._geometry_repr()}, {self.linear!r})"


#: Conv methods of :func:`from_conv`: the two dedicated layers and every decomposition via TNConv2d.
CONV_METHODS = ("tucker2", "cp", "tucker", "mpo", "tr", "svd")


def from_conv(conv: nn.Conv2d, method: str = "tucker2", *, ranks: Any = None, **options: Any) -> nn.Module:
    """A TN convolution from ``conv``: ``tucker2`` (``ranks=(r_out, r_in)``), ``cp`` (``ranks=R``),
    or any decomposition method over the patch legs (``ranks`` = its ``max_rank``)."""
    if method not in CONV_METHODS:
        raise InvalidNetworkError(f"unknown conv method {method!r}; choose one of {list(CONV_METHODS)}")
    if method == "tucker2":
        if ranks is None:
            ranks = (conv.out_channels, conv.in_channels)
        return TuckerConv2d.from_conv(conv, ranks)
    if method == "cp":
        if ranks is None:
            raise RankError("a CP convolution needs its rank: give ranks=R")
        return CPConv2d.from_conv(conv, int(ranks), **options)
    if ranks is not None:
        options["max_rank"] = ranks
    return TNConv2d.from_conv(conv, method, **options)

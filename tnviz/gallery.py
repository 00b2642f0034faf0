"""The paper's figures as ready networks (Hamreras, Singh, Orús 2025, arXiv 2505.20132).

:data:`GALLERY` maps an entry name to a :class:`GalleryEntry`: the figure it reproduces, a
caption, and a builder.  Every builder returns validated :class:`~tnviz.network.TensorNetwork`
values made with :mod:`tnviz.builders` or :meth:`TensorNetwork.build`; the Fig. 1 MLP returns
its three layers (MPO, generic TN, tensor ring) as a list whose features chain.

Fig. 2 items are notation, not layers, but a network needs declared inputs and outputs, so
each gets a sensible choice (a matrix ``m_ij`` maps input ``j`` to output ``i``).

>>> entry = GALLERY["Fig. 1 (ii): B reshaped, 3 in / 5 out"]
>>> net = entry.network()
>>> len(net.inputs), len(net.outputs)
(3, 5)
>>> [len(layer.tensors) for layer in GALLERY["Fig. 1 (i, iii): MLP with three TN layers"].networks()]
[3, 6, 5]
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from .builders import conv_cp, conv_tucker, from_einsum, mpo, spread, tensor_ring
from .errors import InvalidNetworkError
from .network import Tensor, TensorNetwork


@dataclass(frozen=True)
class GalleryEntry:
    """One figure of the paper as networks: ``build()`` returns a network or a list of layers."""

    figure: str  # "Fig. 3 (iii)"
    title: str
    caption: str
    build: Callable[[], "TensorNetwork | list[TensorNetwork]"]

    def networks(self) -> list[TensorNetwork]:
        """The entry's networks as a list (one item except for the Fig. 1 MLP)."""
        built = self.build()
        return list(built) if isinstance(built, (list, tuple)) else [built]

    def network(self) -> TensorNetwork:
        """The single network of the entry (the first layer for a multi-layer entry)."""
        return self.networks()[0]

    @property
    def is_stack(self) -> bool:
        """True when the entry is several layers (the Fig. 1 MLP)."""
        return len(self.networks()) > 1


# ---------------------------------------------------------------------- builders
def generic_layer(
    in_dims: Sequence[int],
    out_dims: Sequence[int],
    rank: int,
    *,
    columns: int = 3,
    name: str | None = None,
) -> TensorNetwork:
    """A generic TN layer: a 2-row grid (a small PEPS).  The top row ``T1..`` carries the
    output legs, the bottom row ``D1..`` the input legs; horizontal bonds ``h*`` / ``g*`` join
    neighbours in a row and vertical bonds ``v*`` join each column.  Neither a chain nor a ring,
    so its contraction order is a real choice (paper Fig. 1 iii b, Fig. 4 iv).

    >>> net = generic_layer([8, 8, 8], [4, 4, 4, 4, 4], rank=4)
    >>> net.in_features, net.out_features, len(net.bonds)
    (512, 1024, 7)
    """
    if not isinstance(columns, int) or isinstance(columns, bool) or columns < 2:
        raise InvalidNetworkError(f"a generic grid layer needs at least 2 columns; got {columns!r}")
    if not in_dims or not out_dims:
        raise InvalidNetworkError(
            f"a generic grid layer needs input and output legs; got {len(in_dims)} inputs, {len(out_dims)} outputs"
        )
    top, bottom = [f"T{c + 1}" for c in range(columns)], [f"D{c + 1}" for c in range(columns)]
    in_at, out_at = spread(len(in_dims), columns), spread(len(out_dims), columns)
    sizes: dict[str, int] = {}
    sizes.update({f"i{k + 1}": d for k, d in enumerate(in_dims)})
    sizes.update({f"o{k + 1}": d for k, d in enumerate(out_dims)})
    tensors: list[Tensor] = []
    layout: dict[str, tuple[float, float]] = {}
    for row, names, legs, at, horiz in (
        (1.0, top, "o", out_at, "h"),
        (0.0, bottom, "i", in_at, "g"),
    ):
        for c, tname in enumerate(names):
            idx: list[str] = []
            if c > 0:
                idx.append(f"{horiz}{c}")
            idx += [f"{legs}{k + 1}" for k, core in enumerate(at) if core == c]
            if c < columns - 1:
                idx.append(f"{horiz}{c + 1}")
            idx.append(f"v{c + 1}")
            tensors.append(Tensor(tname, tuple(idx)))
            layout[tname] = (float(c), row)
    for c in range(columns):
        sizes[f"v{c + 1}"] = rank
        if c < columns - 1:
            sizes[f"h{c + 1}"] = rank
            sizes[f"g{c + 1}"] = rank
    if name is None:
        name = f"generic TN {math.prod(in_dims)}x{math.prod(out_dims)}"
    return TensorNetwork.build(
        tensors, sizes, [f"i{k + 1}" for k in range(len(in_dims))], [f"o{k + 1}" for k in range(len(out_dims))],
        name, layout,
    )


def fig1_mlp() -> list[TensorNetwork]:
    """The MLP of Fig. 1: layers A (MPO), B (generic TN, 3 input / 5 output legs: the m x n
    matrix B with m = m1 m2 m3, n = n1..n5) and C (tensor ring) whose features chain
    1024 -> 512 -> 1024 -> 10."""
    layer_a = mpo([4, 16, 16], [8, 8, 8], ranks=8, name="Fig. 1 layer A: MPO 1024->512")
    layer_b = generic_layer([8, 8, 8], [4, 4, 4, 4, 4], rank=4, name="Fig. 1 layer B: generic TN 512->1024")
    layer_c = tensor_ring([4, 4, 4, 4, 4], [2, 5], ranks=4, name="Fig. 1 layer C: tensor ring 1024->10")
    return [layer_a, layer_b, layer_c]


def fig1_reshaped_b() -> TensorNetwork:
    """Fig. 1 (ii): the m x n matrix B as one 8-index tensor, inputs m1 m2 m3, outputs n1..n5."""
    ins, outs = [8, 8, 8], [4, 4, 4, 4, 4]
    sizes = {**{f"m{k + 1}": d for k, d in enumerate(ins)}, **{f"n{k + 1}": d for k, d in enumerate(outs)}}
    legs = [*(f"n{k + 1}" for k in range(5)), *(f"m{k + 1}" for k in range(3))]
    return TensorNetwork.build(
        [("B", legs)], sizes, [f"m{k + 1}" for k in range(3)], [f"n{k + 1}" for k in range(5)],
        "Fig. 1 (ii): B as a 3-in / 5-out tensor",
    )


def _single(name: str, tensor: str, outputs: dict[str, int], inputs: dict[str, int]) -> TensorNetwork:
    return TensorNetwork.build([(tensor, [*outputs, *inputs])], {**outputs, **inputs}, list(inputs), list(outputs), name)


def fig2_matrix() -> TensorNetwork:
    """Fig. 2 (i): a matrix ``m_ij``, input ``j``, output ``i``."""
    return _single("Fig. 2 (i): matrix m_ij", "m", {"i": 4}, {"j": 3})


def fig2_identity() -> TensorNetwork:
    """Fig. 2 (ii): the identity, a 2-index tensor ``I_ij`` with ``i = j`` in size."""
    return _single("Fig. 2 (ii): identity I_ij", "I", {"i": 4}, {"j": 4})


def fig2_tensor_product() -> TensorNetwork:
    """Fig. 2 (iii): ``c = a ⊗ b``: two tensors side by side with no shared index."""
    return TensorNetwork.build(
        [("a", ["o1", "i1"]), ("b", ["o2", "i2"])], {"o1": 2, "i1": 3, "o2": 4, "i2": 2},
        ["i1", "i2"], ["o1", "o2"], "Fig. 2 (iii): tensor product a ⊗ b", {"a": (0.0, 0.0), "b": (1.0, 0.0)},
    )


def fig2_matrix_product() -> TensorNetwork:
    """Fig. 2 (iv): ``c = ab``: ``a`` stacked on ``b``, joined by the summed (red) index ``k``."""
    return TensorNetwork.build(
        [("a", ["i", "k"]), ("b", ["k", "j"])], {"i": 4, "k": 3, "j": 5},
        ["j"], ["i"], "Fig. 2 (iv): matrix product ab", {"a": (0.0, 1.0), "b": (0.0, 0.0)},
    )


def fig2_three_index() -> TensorNetwork:
    """Fig. 2 (v): a 3-index tensor ``n_ijk``, output ``i``, inputs ``j, k``."""
    return _single("Fig. 2 (v): 3-index tensor n_ijk", "n", {"i": 4}, {"j": 3, "k": 2})


def fig2_delta() -> TensorNetwork:
    """Fig. 2 (vi): the 3-index delta as a hyperedge: three wires ``Ui, Uj, Uk`` meeting at one
    dot (the shared index ``r``).  With each wire the identity, the network is ``δ_ijk``."""
    net = from_einsum(
        "ir,jr,kr->ijk", {"i": 3, "j": 3, "k": 3, "r": 3}, inputs="jk",
        names=["Ui", "Uj", "Uk"], name="Fig. 2 (vi): delta δ_ijk as a hyperedge",
    )
    # a triangle around the dot, so that each wire reaches the dot on its own
    return net.with_layout({"Ui": (0.0, 1.0), "Uj": (-0.866, -0.5), "Uk": (0.866, -0.5)})


def fig2_general_tensor(n: int = 6) -> TensorNetwork:
    """Fig. 2 (vii): a general ``n``-index tensor ``T`` (half outputs, half inputs)."""
    outs = {f"o{k + 1}": 2 for k in range(n // 2)}
    ins = {f"i{k + 1}": 2 for k in range(n - n // 2)}
    return _single(f"Fig. 2 (vii): {n}-index tensor T", "T", outs, ins)


def fig2_network_pqr() -> TensorNetwork:
    """Fig. 2 (viii): tensors ``P, Q, R`` contracted over the bonds ``a, b, c`` (red)."""
    net = from_einsum(
        "iac,ajb,bck->ijk", {"i": 4, "j": 4, "k": 4, "a": 2, "b": 3, "c": 2}, inputs="jk",
        names=["P", "Q", "R"], name="Fig. 2 (viii): network of P, Q, R",
    )
    # a triangle: the bond c between P and R must not run through Q
    return net.with_layout({"P": (0.0, 1.0), "Q": (-0.866, -0.5), "R": (0.866, -0.5)})


def fig3_mpo_svd() -> TensorNetwork:
    """Fig. 3 (i-ii): a 256x256 weight reshaped to legs (4, 4, 4, 4) x (4, 4, 4, 4) and split
    into an MPO by repeated SVDs, kept to bond 8 (exact would need 16, 256, 16)."""
    return mpo([4, 4, 4, 4], [4, 4, 4, 4], ranks=8, name="Fig. 3 (i-ii): MPO from SVDs (bond 8)")


def fig3_mpo_bond1() -> TensorNetwork:
    """Fig. 3 (iii): an MPO with every bond 1 (drawn dashed: no correlation)."""
    return mpo([4, 4, 4], [4, 4, 4], ranks=1, name="Fig. 3 (iii): MPO with all bonds 1")


def fig3_tucker_conv() -> TensorNetwork:
    """Fig. 3 (iv): Tucker decomposition of a 3x3 conv kernel, 64 -> 128 channels."""
    return conv_tucker(128, 64, 3, ranks=[32, 16, 3, 3], name="Fig. 3 (iv): Tucker conv kernel")


def fig3_cp_conv() -> TensorNetwork:
    """Fig. 3 (v): CP decomposition of the same kernel (the Tucker core is a delta)."""
    return conv_cp(128, 64, 3, rank=32, name="Fig. 3 (v): CP conv kernel")


def fig4_mpo4() -> TensorNetwork:
    """Fig. 4 (i): an MPO layer with 4 tensors A, B, C, D."""
    return mpo([4, 4, 4, 4], [4, 4, 4, 4], ranks=4, name="Fig. 4 (i): MPO with 4 tensors")


def fig4_generic() -> TensorNetwork:
    """Fig. 4 (iv): a more general TN layer (a 2x3 grid, 4 input and 4 output legs)."""
    return generic_layer([4, 4, 4, 4], [4, 4, 4, 4], rank=4, name="Fig. 4 (iv): generic TN layer")


# ---------------------------------------------------------------------- the registry
GALLERY: dict[str, GalleryEntry] = {
    "Fig. 1 (i, iii): MLP with three TN layers": GalleryEntry(
        "Fig. 1 (i, iii)", "An MLP whose layers are tensor networks",
        "A three-layer MLP (fully-connected layers A, B, C with non-linearities between them) after "
        "tensorization: A is a matrix product operator (tensor train), B a generic tensor network "
        "(a 2-row grid) and C a tensor ring. Each weight matrix was reshaped into a tensor with several "
        "input and output legs and replaced by a contraction of small tensors; the bonds (red) are the "
        "new degrees of freedom inside the network.",
        fig1_mlp,
    ),
    "Fig. 1 (ii): B reshaped, 3 in / 5 out": GalleryEntry(
        "Fig. 1 (ii)", "Reshaping the m x n matrix B",
        "The m x n weight matrix B reshaped into an 8-index tensor: 3 input legs m1, m2, m3 with "
        "m1·m2·m3 = m = 512 and 5 output legs n1..n5 with n1···n5 = n = 1024. Nothing is compressed yet: "
        "the tensor has as many entries as the matrix. Leg counts need not match.",
        fig1_reshaped_b,
    ),
    "Fig. 2 (i): matrix": GalleryEntry(
        "Fig. 2 (i)", "A matrix is a 2-index tensor",
        "A matrix m_ij drawn as a shape with two legs, one per index. Here j is the input leg and i "
        "the output leg, so the 'layer' is y_i = Σ_j m_ij x_j.",
        fig2_matrix,
    ),
    "Fig. 2 (ii): identity": GalleryEntry(
        "Fig. 2 (ii)", "The identity",
        "The identity matrix δ_ij. The paper draws it as a bare wire (an empty wire passing through a "
        "layer is an identity); here it is a 2-index tensor I so that it can be costed and edited.",
        fig2_identity,
    ),
    "Fig. 2 (iii): tensor product": GalleryEntry(
        "Fig. 2 (iii)", "Tensor product by horizontal stacking",
        "c = a ⊗ b: two tensors drawn side by side with no shared index. The layer acts on the pair "
        "of inputs (i1, i2) as the Kronecker product of a and b; its parameters are those of a plus b, "
        "its dense matrix has their product.",
        fig2_tensor_product,
    ),
    "Fig. 2 (iv): matrix product": GalleryEntry(
        "Fig. 2 (iv)", "Matrix product: a shared (red) index",
        "c = ab, drawn by vertical stacking: a sits on b and the index k they share is summed, "
        "c_ij = Σ_k a_ik b_kj. A summed index joining two tensors is a bond, drawn red.",
        fig2_matrix_product,
    ),
    "Fig. 2 (v): 3-index tensor": GalleryEntry(
        "Fig. 2 (v)", "A 3-index tensor",
        "A tensor n_ijk with three legs. As a layer: output i, inputs j and k (in_features = 3·2).",
        fig2_three_index,
    ),
    "Fig. 2 (vi): delta (hyperedge)": GalleryEntry(
        "Fig. 2 (vi)", "The 3-index delta as a hyperedge",
        "The Kronecker delta δ_ijk = δ_ij δ_jk is drawn as a dot where three wires meet. In tnviz a "
        "dot is a hyperedge: one index r shared by three or more tensors. Here three 2-index tensors "
        "Ui, Uj, Uk share r; when each is the identity the network equals δ_ijk. CP layers use this dot.",
        fig2_delta,
    ),
    "Fig. 2 (vii): n-index tensor": GalleryEntry(
        "Fig. 2 (vii)", "A general n-index tensor",
        "A tensor T with n = 6 legs (three outputs, three inputs, each of size 2): 64 entries. The "
        "number of entries grows exponentially with the number of legs, which is why large tensors are "
        "replaced by networks of small ones.",
        fig2_general_tensor,
    ),
    "Fig. 2 (viii): network of P, Q, R": GalleryEntry(
        "Fig. 2 (viii)", "A tensor network",
        "Tensors P, Q, R contracted together (one einsum 'iac,ajb,bck->ijk'): the summed indices a, b, c "
        "are bonds, drawn red; the open legs i, j, k remain.",
        fig2_network_pqr,
    ),
    "Fig. 3 (i-ii): MPO from SVDs": GalleryEntry(
        "Fig. 3 (i-ii)", "An MPO layer from a pretrained weight",
        "A pretrained 256x256 weight W reshaped into an 8-index tensor (legs 4x4x4x4 in, 4x4x4x4 out) and "
        "split into a matrix product operator by repeated singular value decompositions, each bond "
        "kept to 8 singular values (exactly reproducing W would need bonds 16, 256, 16).",
        fig3_mpo_svd,
    ),
    "Fig. 3 (iii): MPO with all bonds 1": GalleryEntry(
        "Fig. 3 (iii)", "An MPO with all bonds equal to 1",
        "Every bond has size 1 (drawn dashed: no red line carries information). The layer is a "
        "tensor product of small matrices: a hypercube of neurons uncorrelated across its dimensions.",
        fig3_mpo_bond1,
    ),
    "Fig. 3 (iv): Tucker conv kernel": GalleryEntry(
        "Fig. 3 (iv)", "Tucker decomposition of a conv kernel",
        "A 2D convolution kernel K (128 output channels; 64 input channels and a 3x3 patch as inputs) as "
        "a Tucker network: a core G with one factor per leg. The bonds r1..r4 are the Tucker ranks "
        "of the kernel.",
        fig3_tucker_conv,
    ),
    "Fig. 3 (v): CP conv kernel": GalleryEntry(
        "Fig. 3 (v)", "CP decomposition of a conv kernel",
        "The canonical polyadic (CP) decomposition of the same kernel: the special case of Tucker whose "
        "core is a delta tensor, so the four factors meet at one dot, the hyperedge r.",
        fig3_cp_conv,
    ),
    "Fig. 4 (i): MPO with 4 tensors": GalleryEntry(
        "Fig. 4 (i)", "An MPO layer with 4 tensors",
        "A 256x256 layer as an MPO of four tensors A, B, C, D, each with one input leg, one output leg "
        "and bonds of size 4 to its neighbours. Its stack view is four sparse fully-connected layers.",
        fig4_mpo4,
    ),
    "Fig. 4 (iv): generic TN layer": GalleryEntry(
        "Fig. 4 (iv)", "A more general tensor-network layer",
        "A fully-connected layer as a generic network (here a 2x3 grid: outputs on the top row, inputs "
        "on the bottom row, bonds of size 4). It has no single chain order; its stack view comes from "
        "the chosen contraction order.",
        fig4_generic,
    ),
}

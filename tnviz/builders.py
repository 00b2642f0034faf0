"""Builders for the usual layer networks, and the template registry.

Index naming convention used by every builder (so that costs, drawings and
decompositions can rely on it): inputs ``i1..in``, outputs ``o1..om``, bonds
``b1..``, Tucker/CP ranks ``r1..`` / ``r``.

Example::

    >>> net = mpo([7, 8, 14], [2, 2, 2, 2, 4], ranks=4)   # Fig. 1: 3 input legs, 5 output legs
    >>> [t.indices for t in net.tensors][:2]
    [('i1', 'o1', 'b1'), ('b1', 'o2', 'b2')]
"""
from __future__ import annotations

import math
import re
import string
from typing import Any, Callable, Iterable, Sequence

from .errors import InvalidNetworkError
from .network import TensorNetwork, Tensor


def _dims(dims: Iterable[int], what: str) -> tuple[int, ...]:
    try:
        out = tuple(dims)
    except TypeError:
        raise InvalidNetworkError(f"{what} must be a list of leg sizes; got {dims!r}") from None
    for d in out:
        if not isinstance(d, int) or isinstance(d, bool) or d <= 0:
            raise InvalidNetworkError(f"{what} must be positive integers; got {list(out)}")
    return out


def _ranks(ranks: int | Sequence[int], count: int, what: str = "ranks") -> tuple[int, ...]:
    if isinstance(ranks, int) and not isinstance(ranks, bool):
        out = (ranks,) * count
    else:
        out = tuple(ranks)
        if len(out) != count:
            raise InvalidNetworkError(f"{what} needs {count} values (one per bond); got {len(out)}: {list(out)}")
    for r in out:
        if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
            raise InvalidNetworkError(f"{what} must be positive integers; got {list(out)}")
    return out


def core_names(n: int) -> list[str]:
    """``A, B, C, ...`` as in the paper's figures; ``T1, T2, ...`` past 26 cores."""
    if n <= 26:
        return list(string.ascii_uppercase[:n])
    return [f"T{k + 1}" for k in range(n)]


def spread(count: int, slots: int) -> list[int]:
    """Positions of ``count`` legs spread evenly over ``slots`` cores (first and last used)."""
    if count == 0:
        return []
    if count == 1:
        return [0] if slots == 1 else [(slots - 1) // 2]
    return [round(k * (slots - 1) / (count - 1)) for k in range(count)]


def _chain_legs(n_in: int, n_out: int, in_cores: Sequence[int] | None, out_cores: Sequence[int] | None):
    n = max(n_in, n_out, 1)
    in_cores = list(in_cores) if in_cores is not None else spread(n_in, n)
    out_cores = list(out_cores) if out_cores is not None else spread(n_out, n)
    for what, cores, count in (("in_cores", in_cores, n_in), ("out_cores", out_cores, n_out)):
        if len(cores) != count:
            raise InvalidNetworkError(f"{what} gives one core per leg; need {count} entries, got {cores}")
        if any(not isinstance(c, int) or c < 0 or c >= n for c in cores):
            raise InvalidNetworkError(f"{what} entries must be core positions 0..{n - 1}; got {cores}")
        if list(cores) != sorted(cores):
            raise InvalidNetworkError(f"{what} must keep the legs in order along the chain; got {cores}")
    return n, in_cores, out_cores


def _chain(
    in_dims: Sequence[int],
    out_dims: Sequence[int],
    ranks: int | Sequence[int],
    ring: bool,
    name: str | None,
    in_cores: Sequence[int] | None,
    out_cores: Sequence[int] | None,
) -> TensorNetwork:
    ins, outs = _dims(in_dims, "in_dims"), _dims(out_dims, "out_dims")
    if not ins and not outs:
        raise InvalidNetworkError("a layer needs at least one input or output leg; got none")
    n, in_cores, out_cores = _chain_legs(len(ins), len(outs), in_cores, out_cores)
    n_bonds = n if ring else n - 1
    if ring and n < 2:
        raise InvalidNetworkError(f"a tensor ring needs at least 2 cores; the legs give {n}")
    rs = _ranks(ranks, n_bonds)
    names = core_names(n)
    sizes: dict[str, int] = {}
    for k, d in enumerate(ins):
        sizes[f"i{k + 1}"] = d
    for k, d in enumerate(outs):
        sizes[f"o{k + 1}"] = d
    for k, r in enumerate(rs):
        sizes[f"b{k + 1}"] = r
    tensors = []
    for c in range(n):
        idx: list[str] = []
        if c > 0:
            idx.append(f"b{c}")
        elif ring:
            idx.append(f"b{n}")
        idx += [f"i{k + 1}" for k, core in enumerate(in_cores) if core == c]
        idx += [f"o{k + 1}" for k, core in enumerate(out_cores) if core == c]
        if c < n - 1:
            idx.append(f"b{c + 1}")
        elif ring:
            idx.append(f"b{n}")
        tensors.append(Tensor(names[c], tuple(idx)))
    if name is None:
        kind = "TR" if ring else "MPO"
        name = f"{kind} {math.prod(ins)}x{math.prod(outs)}"
    layout = {names[c]: (float(c) * 2.0, 0.0) for c in range(n)}
    if ring:
        # Ring: cores on a circle so the closing bond is visible.
        layout = {
            names[c]: (round(2.0 * n / math.pi * math.cos(2 * math.pi * c / n), 3),
                       round(2.0 * n / math.pi * math.sin(2 * math.pi * c / n), 3))
            for c in range(n)
        }
    return TensorNetwork.build(
        tensors, sizes, [f"i{k + 1}" for k in range(len(ins))], [f"o{k + 1}" for k in range(len(outs))],
        name, layout,
    )


def mpo(
    in_dims: Sequence[int],
    out_dims: Sequence[int],
    ranks: int | Sequence[int],
    *,
    name: str | None = None,
    in_cores: Sequence[int] | None = None,
    out_cores: Sequence[int] | None = None,
) -> TensorNetwork:
    """A matrix product operator (tensor train) layer.

    One core per leg position: ``max(len(in_dims), len(out_dims))`` cores in a chain joined by
    bonds ``b1..``.  With unequal leg counts the shorter list is spread evenly over the cores,
    so some cores carry only input or only output legs (paper Fig. 1: 3 in, 5 out).
    ``in_cores`` / ``out_cores`` choose the core of each leg explicitly.

    >>> mpo([8, 8], [8, 8], ranks=4).params
    512
    """
    return _chain(in_dims, out_dims, ranks, False, name, in_cores, out_cores)


def tensor_ring(
    in_dims: Sequence[int],
    out_dims: Sequence[int],
    ranks: int | Sequence[int],
    *,
    name: str | None = None,
    in_cores: Sequence[int] | None = None,
    out_cores: Sequence[int] | None = None,
) -> TensorNetwork:
    """A tensor ring layer: an MPO whose last core is bonded back to the first (bond ``bN``)."""
    return _chain(in_dims, out_dims, ranks, True, name, in_cores, out_cores)


def tucker(
    in_dims: Sequence[int],
    out_dims: Sequence[int],
    ranks: int | Sequence[int],
    *,
    name: str | None = None,
    in_names: Sequence[str] | None = None,
    out_names: Sequence[str] | None = None,
) -> TensorNetwork:
    """A Tucker layer: a core ``G[r1..rn]`` with one factor ``Uk[leg_k, r_k]`` per leg.

    ``in_names``/``out_names`` rename the legs (e.g. a conv kernel's ``cin, kh, kw`` / ``cout``).
    """
    ins, outs = _dims(in_dims, "in_dims"), _dims(out_dims, "out_dims")
    legs_in = list(in_names) if in_names is not None else [f"i{k + 1}" for k in range(len(ins))]
    legs_out = list(out_names) if out_names is not None else [f"o{k + 1}" for k in range(len(outs))]
    if len(legs_in) != len(ins) or len(legs_out) != len(outs):
        raise InvalidNetworkError(
            f"leg names must match the leg sizes; got {len(legs_in)} names for {len(ins)} inputs, "
            f"{len(legs_out)} for {len(outs)} outputs"
        )
    legs = legs_out + legs_in
    dims = outs + ins
    if not legs:
        raise InvalidNetworkError("a layer needs at least one input or output leg; got none")
    rs = _ranks(ranks, len(legs), "ranks (one per leg)")
    sizes = {leg: d for leg, d in zip(legs, dims)}
    sizes.update({f"r{k + 1}": r for k, r in enumerate(rs)})
    tensors = [Tensor("G", tuple(f"r{k + 1}" for k in range(len(legs))))]
    tensors += [Tensor(f"U{k + 1}", (leg, f"r{k + 1}")) for k, leg in enumerate(legs)]
    n = len(legs)
    layout = {"G": (0.0, 0.0)}
    for k in range(n):
        angle = math.pi / 2 - 2 * math.pi * k / n
        layout[f"U{k + 1}"] = (round(2.5 * math.cos(angle), 3), round(2.5 * math.sin(angle), 3))
    if name is None:
        name = f"Tucker {math.prod(ins)}x{math.prod(outs)}"
    return TensorNetwork.build(tensors, sizes, legs_in, legs_out, name, layout)


def cp(
    in_dims: Sequence[int],
    out_dims: Sequence[int],
    rank: int,
    *,
    name: str | None = None,
    in_names: Sequence[str] | None = None,
    out_names: Sequence[str] | None = None,
) -> TensorNetwork:
    """A CP (canonical polyadic) layer: one factor ``Uk[leg_k, r]`` per leg, all sharing the
    hyperedge ``r`` (the delta tensor of paper Fig. 3 v)."""
    ins, outs = _dims(in_dims, "in_dims"), _dims(out_dims, "out_dims")
    (r,) = _ranks(rank, 1, "rank")
    legs_in = list(in_names) if in_names is not None else [f"i{k + 1}" for k in range(len(ins))]
    legs_out = list(out_names) if out_names is not None else [f"o{k + 1}" for k in range(len(outs))]
    if len(legs_in) != len(ins) or len(legs_out) != len(outs):
        raise InvalidNetworkError("leg names must match the leg sizes")
    legs = legs_out + legs_in
    dims = outs + ins
    if len(legs) < 2:
        raise InvalidNetworkError(f"a CP layer needs at least 2 legs; got {len(legs)}")
    sizes = {leg: d for leg, d in zip(legs, dims)}
    sizes["r"] = r
    tensors = [Tensor(f"U{k + 1}", (leg, "r")) for k, leg in enumerate(legs)]
    n = len(legs)
    layout = {}
    for k in range(n):
        angle = math.pi / 2 - 2 * math.pi * k / n
        layout[f"U{k + 1}"] = (round(2.5 * math.cos(angle), 3), round(2.5 * math.sin(angle), 3))
    if name is None:
        name = f"CP {math.prod(ins)}x{math.prod(outs)}"
    return TensorNetwork.build(tensors, sizes, legs_in, legs_out, name, layout)


def conv_tucker(out_channels: int, in_channels: int, kernel_size: int | Sequence[int], ranks, *, name=None):
    """Tucker decomposition of a conv kernel ``K[cout, cin, kh, kw]`` (paper Fig. 3 iv): inputs are
    the patch legs ``cin, kh, kw``, the output ``cout``; ``ranks`` has one entry per leg in the
    order ``cout, cin, kh, kw``."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    return tucker(
        [in_channels, kh, kw], [out_channels], ranks,
        in_names=["cin", "kh", "kw"], out_names=["cout"],
        name=name or f"Tucker conv {out_channels}x{in_channels}x{kh}x{kw}",
    )


def conv_cp(out_channels: int, in_channels: int, kernel_size: int | Sequence[int], rank: int, *, name=None):
    """CP decomposition of a conv kernel (paper Fig. 3 v): four factors on one hyperedge."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    return cp(
        [in_channels, kh, kw], [out_channels], rank,
        in_names=["cin", "kh", "kw"], out_names=["cout"],
        name=name or f"CP conv {out_channels}x{in_channels}x{kh}x{kw}",
    )


_EINSUM_TERM = re.compile(r"[A-Za-z]*")


def _letters(value: Any, what: str) -> list[str]:
    """Einsum letters given as a string (``"ij"``) or a sequence of one-letter strings."""
    if isinstance(value, str):
        return list(value)
    if not isinstance(value, (list, tuple)):
        raise InvalidNetworkError(f"{what} are einsum letters, a string like 'ij' or a list of letters; got {value!r:.80}")
    for item in value:
        if not isinstance(item, str) or len(item) != 1:
            raise InvalidNetworkError(f"{what} are einsum letters, one character each; got {item!r:.80} in {what}")
    return list(value)


def from_einsum(
    equation: str,
    sizes: "dict[str, int] | int",
    inputs: Sequence[str] | str = (),
    outputs: Sequence[str] | str | None = None,
    *,
    names: Sequence[str] | None = None,
    name: str = "",
) -> TensorNetwork:
    """A network from an einsum equation such as ``"iab,bjc,ck->ijk"``.

    Each letter is an index; ``sizes`` maps letters to sizes (or one int for all).  The right-hand
    side lists the open indices; ``inputs`` names those that are layer inputs, and ``outputs``
    defaults to the rest in right-hand-side order.  A letter shared by three or more terms is a
    hyperedge.

    >>> from_einsum("ia,ajb,bk->ijk", {"i": 4, "j": 4, "k": 4, "a": 2, "b": 2}, inputs="i").outputs
    ('j', 'k')
    """
    if not isinstance(equation, str):
        raise InvalidNetworkError(f"an einsum equation must be a string; got {type(equation).__name__}")
    eq = equation.replace(" ", "")
    if eq.count("->") != 1:
        raise InvalidNetworkError(
            f"an einsum equation needs one '->' before the open indices, e.g. 'ia,ajb,bk->ijk'; got {equation!r}"
        )
    lhs, rhs = eq.split("->")
    terms = lhs.split(",")
    for term in [*terms, rhs]:
        if not _EINSUM_TERM.fullmatch(term):  # fullmatch: '$' would let a trailing newline through
            raise InvalidNetworkError(
                f"einsum terms may only hold letters a-z, A-Z (no '...'); got {term!r} in {equation!r}"
            )
    if any(t == "" for t in terms):
        raise InvalidNetworkError(f"every einsum term needs at least one index; {equation!r} has an empty term")
    if len(set(rhs)) != len(rhs):
        raise InvalidNetworkError(f"each open index appears once after '->'; got {rhs!r}")
    used = set("".join(terms))
    for ch in rhs:
        if ch not in used:
            raise InvalidNetworkError(f"every index after '->' must appear in a term; {ch!r} does not")
    ins = _letters(inputs, "inputs")
    outs = [c for c in rhs if c not in ins] if outputs is None else _letters(outputs, "outputs")
    for ch in [*ins, *outs]:
        if ch not in rhs:
            raise InvalidNetworkError(
                f"inputs and outputs must be open indices listed after '->' ({rhs!r}); {ch!r} is not"
            )
    if isinstance(sizes, int) and not isinstance(sizes, bool):
        size_map = {ch: sizes for ch in dict.fromkeys("".join(terms))}
    elif isinstance(sizes, dict):
        missing = [ch for ch in dict.fromkeys("".join(terms)) if ch not in sizes]
        if missing:
            raise InvalidNetworkError(f"every index needs a size; {missing[0]!r} has none")
        size_map = {ch: sizes[ch] for ch in dict.fromkeys("".join(terms))}
    else:
        raise InvalidNetworkError(f"sizes must be a dict of index -> size or one int; got {sizes!r:.80}")
    counts: dict[str, int] = {}
    for term in terms:
        for ch in set(term):
            counts[ch] = counts.get(ch, 0) + 1
    for ch in rhs:
        if counts[ch] > 1:
            raise InvalidNetworkError(
                f"an open index (after '->') must belong to one term; {ch!r} is in {counts[ch]} terms"
            )
    for ch, c in counts.items():
        if c == 1 and ch not in rhs:
            raise InvalidNetworkError(
                f"an index used by one term is open and must be listed after '->'; {ch!r} is not"
            )
    tnames = list(names) if names is not None else core_names(len(terms))
    if len(tnames) != len(terms):
        raise InvalidNetworkError(f"names gives one name per term; need {len(terms)}, got {len(tnames)}")
    tensors = [Tensor(n, tuple(term)) for n, term in zip(tnames, terms)]
    layout = {n: (2.0 * k, 0.0) for k, n in enumerate(tnames)}
    return TensorNetwork.build(tensors, size_map, ins, outs, name or equation, layout)


# ---------------------------------------------------------------------- templates
def _template_params(**params: Any) -> dict[str, Any]:
    return params


#: Templates for the Designer and the tests: name -> (builder taking keyword params, default params).
TEMPLATES: dict[str, tuple[Callable[..., TensorNetwork], dict[str, Any]]] = {
    "MPO / tensor train": (
        lambda in_dims, out_dims, ranks: mpo(in_dims, out_dims, ranks),
        _template_params(in_dims=[8, 8, 8, 8], out_dims=[8, 8, 8, 8], ranks=4),
    ),
    "Tensor ring": (
        lambda in_dims, out_dims, ranks: tensor_ring(in_dims, out_dims, ranks),
        _template_params(in_dims=[8, 8, 8], out_dims=[8, 8, 8], ranks=4),
    ),
    "Tucker": (
        lambda in_dims, out_dims, ranks: tucker(in_dims, out_dims, ranks),
        _template_params(in_dims=[16, 16], out_dims=[16, 16], ranks=4),
    ),
    "CP": (
        lambda in_dims, out_dims, ranks: cp(in_dims, out_dims, ranks),
        _template_params(in_dims=[16, 16], out_dims=[16, 16], ranks=8),
    ),
    "MPO 3 in / 5 out (Fig. 1)": (
        lambda in_dims, out_dims, ranks: mpo(in_dims, out_dims, ranks),
        _template_params(in_dims=[4, 4, 4], out_dims=[2, 2, 2, 2, 4], ranks=4),
    ),
    "Tucker conv kernel (Fig. 3 iv)": (
        lambda in_dims, out_dims, ranks: tucker(in_dims, out_dims, ranks, in_names=["cin", "kh", "kw"], out_names=["cout"], name="Tucker conv kernel"),
        _template_params(in_dims=[16, 3, 3], out_dims=[32], ranks=[8, 8, 3, 3]),
    ),
    "CP conv kernel (Fig. 3 v)": (
        lambda in_dims, out_dims, ranks: cp(in_dims, out_dims, ranks, in_names=["cin", "kh", "kw"], out_names=["cout"], name="CP conv kernel"),
        _template_params(in_dims=[16, 3, 3], out_dims=[32], ranks=8),
    ),
}


def build_template(template: str, **params: Any) -> TensorNetwork:
    """Build a template by name with its default parameters overridden by ``params``."""
    if template not in TEMPLATES:
        raise InvalidNetworkError(f"unknown template {template!r}; choose one of {list(TEMPLATES)}")
    builder, defaults = TEMPLATES[template]
    unknown = set(params) - set(defaults)
    if unknown:
        raise InvalidNetworkError(f"template {template!r} takes {sorted(defaults)}; got {sorted(unknown)}")
    return builder(**{**defaults, **params})

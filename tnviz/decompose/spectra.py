"""Bond spectra of a decomposed weight: the singular values on every bond before truncation, where
the current truncation cuts them, the discarded weight, the truncation error and the bond entropy;
and the model-wide table of layers at one common setting.

Everything here takes and returns plain values (tuples, floats, JSON strings), so results can be
cached and pickled (the app caches them keyed by file hash + layer + method + legs + setting).
torch is imported where a weight is decomposed; the spectrum arithmetic needs only numpy.

>>> import math
>>> s = [4.0, 2.0, 1.0, 1.0]
>>> discarded_weight(s, 2), round(cut_error(s, 2), 4)
(1.4142135623730951, 0.3015)
>>> rank_for_error(s, 0.31), math.isclose(bond_entropy([1.0, 1.0, 1.0, 1.0]), math.log(4))
(2, True)
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol, Sequence

import numpy as np

from ..bonds.analysis import bond_entropy  # noqa: F401  (the one implementation; re-exported here)
from ..errors import DecompositionError, RankError, TnvizError
from ..network import TensorNetwork, load_network

if TYPE_CHECKING:
    import torch

    from . import Decomposition, TradeoffPoint

#: How the truncation is set: one rank for every bond, or one relative Frobenius error for the whole weight.
SETTINGS: dict[str, str] = {
    "rank": "max rank (the same cap on every bond)",
    "rtol": "relative error (of the whole weight)",
}
#: CP-ALS sweeps used for interactive work (the library default of 500 is for batch jobs).
INTERACTIVE_CP_ITERS = 60


# ---------------------------------------------------------------------- spectrum arithmetic
def _values(singular_values: Iterable[float]) -> np.ndarray:
    s = np.asarray(list(singular_values) if not hasattr(singular_values, "shape") else singular_values,
                   dtype=np.float64).reshape(-1)
    if s.size and (not np.all(np.isfinite(s)) or np.any(s < 0)):
        raise RankError(f"singular values must be finite and non-negative; got {s[:6].tolist()}...")
    return s


def discarded_weight(singular_values: Iterable[float], rank: int) -> float:
    """``sqrt(sum s[rank:]^2)``: the Frobenius norm thrown away when keeping the leading ``rank`` values."""
    s = _values(singular_values)
    if rank < 0:
        raise RankError(f"a kept rank must be >= 0; got {rank}")
    tail = s[rank:]
    return float(math.sqrt(float(np.sum(tail[::-1] ** 2))))  # small end first: accurate tails


def cut_error(singular_values: Iterable[float], rank: int, norm: float | None = None) -> float:
    """Relative error of keeping ``rank`` values of one SVD: ``discarded / norm`` (``norm``
    defaults to ``sqrt(sum s^2)``, the Frobenius norm of the matrix whose spectrum this is)."""
    s = _values(singular_values)
    total = float(np.sqrt(np.sum(s ** 2))) if norm is None else float(norm)
    return discarded_weight(s, rank) / total if total > 0 else 0.0


def rank_for_error(singular_values: Iterable[float], rel_error: float, norm: float | None = None) -> int:
    """The smallest rank (at least 1) whose :func:`cut_error` is at most ``rel_error``."""
    s = _values(singular_values)
    if not 0.0 <= rel_error < 1.0:
        raise RankError(f"a relative error must be in [0, 1); got {rel_error}")
    if s.size == 0:
        raise RankError("a spectrum needs at least one singular value; got none")
    total = float(np.sqrt(np.sum(s ** 2))) if norm is None else float(norm)
    limit = (rel_error * total) ** 2 * (1 + 1e-12)
    tails = np.concatenate([np.cumsum((s ** 2)[::-1])[::-1], [0.0]])  # tails[r] = sum s[r:]^2
    for r in range(1, s.size + 1):
        if tails[r] <= limit:
            return r
    return int(s.size)


# ---------------------------------------------------------------------- one layer
@dataclass(frozen=True)
class BondSpectrum:
    """One bond: its singular values before truncation (descending) and the cut at the current setting.

    ``discarded`` is relative to the norm of the decomposed matrix, as
    :class:`tnviz.decompose.Decomposition` reports it; ``None`` for CP, whose ``values`` are the
    component weights (no SVD, nothing discarded).  ``note`` explains special cases (the ring bond).
    """

    bond: str
    values: tuple[float, ...]
    kept: int
    discarded: float | None
    entropy: float
    note: str = ""

    @property
    def full(self) -> int:
        """How many values the bond had before truncation."""
        return len(self.values)

    @property
    def kept_energy(self) -> float:
        """Fraction of ``sum s^2`` on the kept values."""
        s = np.asarray(self.values)
        total = float(np.sum(s ** 2))
        return float(np.sum(s[: self.kept] ** 2)) / total if total > 0 else 1.0


@dataclass(frozen=True)
class LayerSpectra:
    """A weight decomposed at one setting: per-bond spectra with the cut, errors and parameters.

    ``rel_error`` is measured on the dense reconstruction; ``bound`` is
    ``sqrt(sum discarded^2)`` (a guarantee for TT, TR, Tucker and SVD; ``None`` for CP).
    """

    method: str
    weight_shape: tuple[int, ...]
    in_dims: tuple[int, ...]
    out_dims: tuple[int, ...]
    setting: str
    value: float
    bonds: tuple[BondSpectrum, ...]
    ranks: Mapping[str, int]
    params: int
    dense_params: int
    rel_error: float
    bound: float | None
    seconds: float
    network_json: str
    notes: tuple[str, ...] = ()
    data_error: float | None = None  # ||(W - W~) X|| / ||W X|| on the calibration inputs (data-aware only)

    @property
    def network(self) -> TensorNetwork:
        return load_network(self.network_json)

    @property
    def compression(self) -> float:
        return self.dense_params / self.params if self.params else math.inf

    def table(self) -> list[dict[str, Any]]:
        """One row per bond: size before/after, discarded weight, its share of the error, entropy."""
        rows = []
        for b in self.bonds:
            rows.append({
                "bond": b.bond, "values": b.full, "kept": b.kept,
                "discarded weight": b.discarded,
                "kept energy": b.kept_energy,
                "entropy (nats)": b.entropy,
                "max entropy log(n)": math.log(b.full) if b.full else 0.0,
                "note": b.note,
            })
        return rows


def default_legs(shape: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The automatic leg factorization ``(in_dims, out_dims)`` used when none is given
    (a conv kernel keeps ``cin, kh, kw`` / ``cout``)."""
    from .legs import make_legs

    legs = make_legs(shape)
    return legs.in_dims, legs.out_dims


def useful_rank(shape: Sequence[int], method: str, in_dims: Sequence[int] | None = None,
                out_dims: Sequence[int] | None = None) -> int:
    """The largest uniform rank that changes anything for ``method`` on a weight of ``shape``
    (the slider's end): above it every bond is already exact.  For CP, ``min(out, in)``."""
    from . import DECOMPOSITIONS
    from .legs import make_legs
    from .tr import split_rank
    from .tt import chain_network

    if method not in DECOMPOSITIONS:
        raise RankError(f"unknown decomposition method {method!r}; choose one of {list(DECOMPOSITIONS)}")
    try:
        legs = make_legs(shape, in_dims, out_dims)
        net = chain_network(legs, ring=(method == "tr")) if method in ("mpo", "tr") else None
    except TnvizError as exc:
        raise DecompositionError(str(exc)) from None
    if method in ("svd", "cp"):
        return max(1, min(legs.in_features, legs.out_features))
    if method == "tucker":
        return max(legs.dims)
    per_core = [math.prod(net.shape(t)) for t in net.tensors]  # rank-1 cores: the leg products
    n = len(per_core)
    if n == 1:
        return 1
    if method == "mpo":
        return max(min(math.prod(per_core[: k + 1]), math.prod(per_core[k + 1:])) for k in range(n - 1))
    R = min(per_core[0], math.prod(per_core[1:]))
    r0, r1 = split_rank(R, None, None)
    inner = [min(r1 * math.prod(per_core[1: k + 1]), math.prod(per_core[k + 1:]) * r0) for k in range(1, n - 1)]
    return max([r0, r1, *inner])


def not_applicable(shape: Sequence[int], in_dims: Sequence[int] | None = None,
                   out_dims: Sequence[int] | None = None) -> dict[str, str]:
    """The methods that cannot decompose a weight of ``shape`` on these legs, with the reason
    (e.g. a tensor ring needs at least two cores)."""
    from . import DECOMPOSITIONS

    out = {}
    for m in DECOMPOSITIONS:
        try:
            useful_rank(shape, m, in_dims, out_dims)
        except DecompositionError as exc:
            out[m] = str(exc)
    return out


def _truncation(setting: str, value: float) -> dict[str, Any]:
    if setting == "rank":
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise RankError(f"a rank setting must be a positive integer; got {value!r}")
        return {"max_rank": int(value)}
    if setting == "rtol":
        return {"rtol": float(value)}
    raise RankError(f"a setting is one of {list(SETTINGS)}; got {setting!r}")


def from_decomposition(dec: "Decomposition", setting: str = "rank", value: float = 0) -> LayerSpectra:
    """The spectra view of a :class:`~tnviz.decompose.Decomposition` (any method)."""
    ranks = dec.ranks
    bonds = []
    ring = dec.extra.get("ring_split")
    for bond, sv in dec.spectra.items():
        values = tuple(float(v) for v in _values(np.asarray(sv.detach().double().cpu()) if hasattr(sv, "detach") else sv))
        note = ""
        if dec.method == "cp":
            note = "CP component weights (no SVD: nothing is discarded, every component is kept)"
        elif ring is not None and bond == list(dec.spectra)[-1]:
            note = f"ring bond: shares the first SVD with b1 (rank {ring[0]}×{ring[1]} split)"
        elif bond in dec.extra.get("randomized", []):
            note = "randomized SVD: leading values only"
        bonds.append(BondSpectrum(
            bond=bond, values=values, kept=int(ranks.get(bond, len(values))),
            discarded=dec.discarded.get(bond) if dec.method != "cp" else None,
            entropy=bond_entropy(values), note=note,
        ))
    notes = []
    if dec.method == "cp":
        hist = dec.extra.get("history", [])
        notes.append(f"CP-ALS: {dec.extra.get('iterations', len(hist))} sweeps, "
                     f"{'converged' if dec.extra.get('converged') else 'stopped at the sweep limit'}")
    if dec.data_error is not None:
        notes.append("data-aware: the singular values are those of W·L (L L^T = the input second moment), the "
                     "discarded weight and the bound are relative to ||W·L||, i.e. to the error on the "
                     "calibration inputs; the relative error is still measured on the weights")
    if "upcast_from" in dec.extra:
        notes.append(f"weight upcast from {dec.extra['upcast_from']}")
    net = dec.network
    return LayerSpectra(
        method=dec.method, weight_shape=tuple(dec.weight_shape), in_dims=net.in_dims, out_dims=net.out_dims,
        setting=setting, value=value, bonds=tuple(bonds), ranks=dict(ranks), params=dec.params,
        dense_params=dec.dense_params, rel_error=float(dec.rel_error),
        bound=None if dec.method == "cp" else dec.bound(), seconds=dec.seconds,
        network_json=net.to_json(indent=None), notes=tuple(notes),
        data_error=None if dec.data_error is None else float(dec.data_error),
    )


def layer_spectra(
    weight: "torch.Tensor",
    method: str,
    *,
    setting: str = "rank",
    value: float = 8,
    in_dims: Sequence[int] | None = None,
    out_dims: Sequence[int] | None = None,
    name: str = "",
    **options: Any,
) -> LayerSpectra:
    """Decompose ``weight`` by ``method`` truncated at ``setting`` (``'rank'`` or ``'rtol'``) =
    ``value`` and report every bond's full spectrum with the cut.

    Exact SVDs are used (``randomized=False``) so that every bond shows its whole spectrum; the
    weight's device and dtype are kept (pass float64 for exact numbers).  CP takes only a rank;
    its ALS runs at most :data:`INTERACTIVE_CP_ITERS` sweeps unless ``n_iter_max`` is given.

    >>> import torch
    >>> W = torch.randn(16, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> res = layer_spectra(W, "svd", value=3)
    >>> res.bonds[0].full, res.bonds[0].kept, res.params == 3 * (16 + 12)
    (12, 3, True)
    """
    from . import decompose

    if method == "cp" and setting != "rank":
        raise RankError(f"CP has no singular values to cut by error: set a rank; got setting {setting!r}")
    opts = dict(options)
    if method == "cp":
        opts.setdefault("n_iter_max", INTERACTIVE_CP_ITERS)
    opts.setdefault("randomized", False)
    dec = decompose(weight, method, in_dims=in_dims, out_dims=out_dims, **_truncation(setting, value), **opts)
    if name:
        dec = _renamed(dec, f"{method.upper()} of {name}")
    return from_decomposition(dec, setting, value)


#: Methods whose every truncation is a slice of the exact decomposition (the spectra do not depend on the cut).
SLICEABLE = ("svd", "tucker")


def exact_decomposition(weight: "torch.Tensor", method: str, *, in_dims: Sequence[int] | None = None,
                        out_dims: Sequence[int] | None = None, name: str = "") -> "Decomposition":
    """The untruncated decomposition by exact SVDs, computed once, that :func:`cut` slices
    (``method`` in :data:`SLICEABLE`)."""
    from . import decompose

    if method not in SLICEABLE:
        raise RankError(f"only {list(SLICEABLE)} are cut by slicing one exact decomposition; got {method!r}")
    dec = decompose(weight, method, in_dims=in_dims, out_dims=out_dims, randomized=False)
    return _renamed(dec, f"{method.upper()} of {name}") if name else dec


def cut(exact: "Decomposition", weight: "torch.Tensor", setting: str = "rank", value: float = 8) -> LayerSpectra:
    """The truncation of an :func:`exact_decomposition` at ``setting`` = ``value`` without a new SVD,
    equal to a fresh ``layer_spectra(weight, method, setting, value)``.

    SVD: the leading ``r`` triplets of the exact SVD are exactly a fresh truncated SVD.  Tucker:
    the ranks come from the exact HOSVD's mode spectra and the factors start from its leading
    columns, then HOOI runs as in a fresh decomposition
    (:func:`tnviz.decompose.tucker.truncate_exact`); only the mode SVDs are saved.  The error is
    measured on the reconstruction of ``weight`` (the weight that was decomposed).
    """
    from dataclasses import replace

    from ..contract import to_dense

    if exact.method not in SLICEABLE:
        raise RankError(f"only {list(SLICEABLE)} are cut by slicing one exact decomposition; got {exact.method!r}")
    start = time.perf_counter()
    trunc = _truncation(setting, value)
    bonds = list(exact.spectra)
    spectra = {b: _values(np.asarray(exact.spectra[b].detach().double().cpu())) for b in bonds}
    norm = float(np.sqrt(np.sum(spectra[bonds[0]] ** 2)))  # every unfolding of W has the norm ||W||
    if "max_rank" in trunc:
        ranks = {b: max(1, min(trunc["max_rank"], len(spectra[b]))) for b in bonds}
    else:
        per_bond = trunc["rtol"] / math.sqrt(len(bonds))
        ranks = {b: rank_for_error(spectra[b], per_bond, norm) for b in bonds}
    extra = exact.extra
    if exact.method == "svd":
        net = exact.network.with_sizes(**ranks)
        r = ranks["r"]
        tensors = {"U": exact.tensors["U"][:, :r], "V": exact.tensors["V"][:r]}
        discarded = {b: discarded_weight(spectra[b], ranks[b]) / norm if norm > 0 else 0.0 for b in bonds}
    else:
        from .api import algorithm_of
        from .truncation import parse_truncation
        from .tucker import truncate_exact

        out = truncate_exact(exact, weight, parse_truncation(**trunc))
        net, tensors = out.network.with_name(exact.network.name), out.tensors
        discarded = {b: v / norm if norm > 0 else 0.0 for b, v in out.discarded.items()}
        extra = {**exact.extra, **out.extra}
    W = weight.detach().reshape(net.out_features, net.in_features).to(exact.tensors[next(iter(exact.tensors))].dtype)
    w_norm = float(W.double().norm())
    diff = float((W - to_dense(net, tensors)).double().norm())
    dec = replace(
        exact, network=net, tensors=tensors, discarded=discarded, extra=extra,
        algorithm=algorithm_of(exact.method, extra, bonds) if exact.method == "tucker" else exact.algorithm,
        rel_error=diff / w_norm if w_norm > 0 else diff, seconds=time.perf_counter() - start,
    )
    return from_decomposition(dec, setting, value)


def _renamed(dec: "Decomposition", name: str) -> "Decomposition":
    from dataclasses import replace

    return replace(dec, network=dec.network.with_name(name))


# ---------------------------------------------------------------------- trade-off
def sweep_ranks(useful: int, *, limit: int | None = None) -> list[int]:
    """Ranks for a trade-off curve: powers of two up to ``useful`` (and ``useful`` itself), capped at ``limit``."""
    top = max(1, min(useful, limit) if limit else useful)
    ranks = [1 << k for k in range(top.bit_length()) if (1 << k) <= top]
    if ranks[-1] != top:
        ranks.append(top)
    return ranks


def layer_tradeoff(
    weight: "torch.Tensor",
    *,
    methods: Iterable[str] = ("mpo", "tr", "tucker", "cp", "svd"),
    in_dims: Sequence[int] | None = None,
    out_dims: Sequence[int] | None = None,
    rank_limit: int | None = 256,
    cp_rank_limit: int = 32,
    **options: Any,
) -> tuple[list["TradeoffPoint"], list["TradeoffPoint"]]:
    """Error vs parameters for every method (:func:`tnviz.decompose.tradeoff`, ranks from
    :func:`sweep_ranks` per method) and the Pareto front over all of them.  Methods that cannot
    apply to these legs (see :func:`not_applicable`) are left out.  ``input_cov`` (in ``options``)
    makes every point data-aware and ranks the front by the error on those inputs."""
    from . import pareto_front, tradeoff

    shape = tuple(weight.shape)
    skipped = not_applicable(shape, in_dims, out_dims)
    methods = [m for m in methods if m not in skipped]
    if not methods:
        raise DecompositionError(f"no chosen method applies to these legs: {skipped}")
    ranks = {}
    for m in methods:
        limit = cp_rank_limit if m == "cp" else rank_limit
        ranks[m] = sweep_ranks(useful_rank(shape, m, in_dims, out_dims), limit=limit)
    options.setdefault("n_iter_max", INTERACTIVE_CP_ITERS)
    points = tradeoff(weight, methods=methods, ranks=ranks, in_dims=in_dims, out_dims=out_dims, **options)
    # data-aware (an ``input_cov`` option): the front is ranked by the error on the calibration inputs
    return points, pareto_front(points, by="data_error" if options.get("input_cov") is not None else "rel_error")


# ---------------------------------------------------------------------- model-wide
class Weight(Protocol):
    """What a row needs of a model's weight (e.g. a :class:`tnviz.model.io.Candidate`)."""

    name: str
    kind: str
    shape: Sequence[int]
    params: int


@dataclass(frozen=True)
class LayerRow:
    """One weight of a model at the common setting (``error`` holds a message when it failed)."""

    name: str
    kind: str
    shape: tuple[int, ...]
    params_before: int
    params_after: int | None
    rel_error: float | None
    bound: float | None
    ranks: Mapping[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""

    @classmethod
    def of(cls, candidate: Weight, spectra: LayerSpectra, seconds: float | None = None) -> "LayerRow":
        """The row of a weight from its :class:`LayerSpectra`."""
        return cls(candidate.name, candidate.kind, tuple(candidate.shape), candidate.params, spectra.params,
                   spectra.rel_error, spectra.bound, dict(spectra.ranks),
                   spectra.seconds if seconds is None else seconds)

    @classmethod
    def failed(cls, candidate: Weight, message: str, seconds: float = 0.0) -> "LayerRow":
        """The row of a weight that could not be decomposed, with the reason."""
        return cls(candidate.name, candidate.kind, tuple(candidate.shape), candidate.params, None, None, None,
                   seconds=seconds, error=message)

    @property
    def saves(self) -> bool:
        """Whether the network holds fewer parameters than the weight (else a compression keeps it dense)."""
        return self.params_after is not None and self.params_after < self.params_before

    @property
    def compression(self) -> float | None:
        """Dense parameters / network parameters, where the network saves any (``None`` otherwise)."""
        return self.params_before / self.params_after if self.saves else None

    @property
    def kept_params(self) -> int:
        """The parameters this weight keeps in a compression: the network's where it saves, else the weight's."""
        return self.params_after if self.saves else self.params_before

    def as_dict(self) -> dict[str, Any]:
        message = self.error
        if not self.error and not self.saves:
            message = (f"no saving: the network would hold {self.params_after:,} parameters, not fewer than the "
                       f"weight's {self.params_before:,}; a compression keeps this weight dense")
        return {
            "layer": self.name, "kind": self.kind, "shape": " × ".join(map(str, self.shape)),
            "params": self.params_before, "params after": self.params_after,
            "compression": self.compression, "relative error": self.rel_error, "bound": self.bound,
            "ranks": ", ".join(f"{k}={v}" for k, v in self.ranks.items()), "seconds": self.seconds,
            "message": message,
        }

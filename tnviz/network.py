"""The network model: a tensor-network layer as tensors with named indices.

A :class:`TensorNetwork` stores only *sizes* and *index names*, never arrays, so it
hashes cheaply and can live in caches and app state.  Bonds, open indices and
hyperedges are derived from how often an index name is used:

* used by one tensor   -> open (must be listed in ``inputs`` or ``outputs``)
* used by two tensors  -> bond
* used by three or more -> hyperedge (a shared index, e.g. the CP delta)

Example::

    >>> from tnviz.builders import mpo
    >>> net = mpo([4, 4], [4, 4], ranks=3)
    >>> net.in_features, net.out_features, net.bonds
    (16, 16, ('b1',))
    >>> load_network(net.to_json()) == net
    True
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping

from opt_einsum import get_symbol

from .errors import InvalidNetworkError

FORMAT = "tnviz.network"
VERSION = 1

#: Index name of the batch dimension in layer equations; reserved.
BATCH_INDEX = "batch"


@dataclass(frozen=True)
class Tensor:
    """One tensor of a network: a name and its ordered index names."""

    name: str
    indices: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "indices", tuple(self.indices))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class TensorNetwork:
    """A validated tensor-network layer (SPEC 2.1).  A live object is a valid object.

    ``size_items`` keeps the sizes as ordered ``(index, size)`` pairs so the value is
    hashable; use :attr:`sizes` for a dict.  ``layout_items`` likewise holds canvas
    positions as ``(tensor, (x, y))`` pairs.
    """

    tensors: tuple[Tensor, ...]
    size_items: tuple[tuple[str, int], ...]
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    name: str = ""
    layout_items: tuple[tuple[str, tuple[float, float]], ...] = field(default=(), compare=True)

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        tensors: Iterable[tuple[str, Iterable[str]] | Tensor],
        sizes: Mapping[str, int],
        inputs: Iterable[str] = (),
        outputs: Iterable[str] = (),
        name: str = "",
        layout: Mapping[str, Iterable[float]] | None = None,
    ) -> "TensorNetwork":
        """Build from plain Python values: ``[(name, [indices...]), ...]`` and a sizes dict."""
        ts = tuple(t if isinstance(t, Tensor) else Tensor(t[0], tuple(t[1])) for t in tensors)
        if not isinstance(sizes, Mapping):
            raise InvalidNetworkError(f"sizes must map index names to sizes; got {type(sizes).__name__}")
        lay = ()
        if layout:
            if not isinstance(layout, Mapping):
                raise InvalidNetworkError(
                    f"layout must map tensor names to [x, y]; got {type(layout).__name__}"
                )
            lay = tuple((k, _xy(k, v)) for k, v in layout.items())
        return cls(ts, tuple(sizes.items()), tuple(inputs), tuple(outputs), name, lay)

    def __post_init__(self) -> None:
        # Normalise containers first so that lists given by callers still hash.
        object.__setattr__(self, "tensors", tuple(self.tensors))
        object.__setattr__(self, "size_items", tuple((k, v) for k, v in self.size_items))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "layout_items", tuple((k, tuple(v)) for k, v in self.layout_items))
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.name, str):
            raise InvalidNetworkError(f"a network name must be a string; got {self.name!r}")
        if not self.tensors:
            raise InvalidNetworkError("a network needs at least one tensor; got an empty network")
        sizes: dict[str, int] = {}
        for index, size in self.size_items:
            if not isinstance(index, str) or not index:
                raise InvalidNetworkError(f"index names must be non-empty strings; got {index!r}")
            if index in sizes:
                raise InvalidNetworkError(f"each index has one size; index {index!r} is sized twice")
            if not _is_int(size) or size <= 0:
                raise InvalidNetworkError(
                    f"index sizes must be positive integers; index {index!r} has size {size!r}"
                )
            sizes[index] = size
        seen_names: set[str] = set()
        for t in self.tensors:
            if not isinstance(t, Tensor):
                raise InvalidNetworkError(f"tensors must be Tensor values; got {t!r}")
            if not isinstance(t.name, str) or not t.name:
                raise InvalidNetworkError(f"tensor names must be non-empty strings; got {t.name!r}")
            if t.name in seen_names:
                raise InvalidNetworkError(f"tensor names must be unique; {t.name!r} is used twice")
            seen_names.add(t.name)
            local: set[str] = set()
            for index in t.indices:
                if not isinstance(index, str) or not index:
                    raise InvalidNetworkError(
                        f"index names must be non-empty strings; tensor {t.name!r} has {index!r}"
                    )
                if index in local:
                    raise InvalidNetworkError(
                        f"an index may appear once per tensor; {index!r} is listed twice on {t.name!r}"
                    )
                local.add(index)
                if index not in sizes:
                    raise InvalidNetworkError(
                        f"every index needs a size; index {index!r} of tensor {t.name!r} has none"
                    )
        counts = self.index_counts
        for index in sizes:
            if index not in counts:
                raise InvalidNetworkError(f"every sized index must be used by a tensor; {index!r} is not")
        if BATCH_INDEX in sizes:
            raise InvalidNetworkError(f"the index name {BATCH_INDEX!r} is reserved for the batch dimension")
        for role, declared in (("input", self.inputs), ("output", self.outputs)):
            for index in declared:
                if not isinstance(index, str) or not index:
                    raise InvalidNetworkError(f"each {role} must be an index name (a non-empty string); got {index!r:.80}")
            dup = [k for k, c in Counter(declared).items() if c > 1]
            if dup:
                raise InvalidNetworkError(f"each {role} is listed once; {dup[0]!r} is listed twice")
            for index in declared:
                if index not in counts:
                    raise InvalidNetworkError(
                        f"a declared {role} must be an index of the network; {index!r} is not used by any tensor"
                    )
                if counts[index] != 1:
                    raise InvalidNetworkError(
                        f"a declared {role} must be an open index (used by one tensor); "
                        f"{index!r} is used by {counts[index]} tensors"
                    )
        both = set(self.inputs) & set(self.outputs)
        if both:
            raise InvalidNetworkError(
                f"an open index is an input or an output, not both; {sorted(both)[0]!r} is both"
            )
        declared = set(self.inputs) | set(self.outputs)
        for index, c in counts.items():
            if c == 1 and index not in declared:
                owner = next(t.name for t in self.tensors if index in t.indices)
                raise InvalidNetworkError(
                    f"every open index must be declared as an input or an output; "
                    f"{index!r} on tensor {owner!r} is neither"
                )
        names = {t.name for t in self.tensors}
        for tname, _ in self.layout_items:
            if tname not in names:
                raise InvalidNetworkError(f"layout positions must name tensors of the network; {tname!r} is not one")

    # ------------------------------------------------------------------ derived views
    @property
    def sizes(self) -> dict[str, int]:
        """A fresh ``{index: size}`` dict."""
        return dict(self.size_items)

    @property
    def layout(self) -> dict[str, tuple[float, float]]:
        return dict(self.layout_items)

    @cached_property
    def index_counts(self) -> dict[str, int]:
        """How many tensors use each index (order of first appearance)."""
        counts: dict[str, int] = {}
        for t in self.tensors:
            for index in t.indices:
                counts[index] = counts.get(index, 0) + 1
        return counts

    @property
    def open_indices(self) -> tuple[str, ...]:
        return tuple(k for k, c in self.index_counts.items() if c == 1)

    @property
    def bonds(self) -> tuple[str, ...]:
        """Indices shared by exactly two tensors."""
        return tuple(k for k, c in self.index_counts.items() if c == 2)

    @property
    def hyperedges(self) -> tuple[str, ...]:
        """Indices shared by three or more tensors."""
        return tuple(k for k, c in self.index_counts.items() if c >= 3)

    @property
    def internal_indices(self) -> tuple[str, ...]:
        """Bonds and hyperedges: every index that is summed when the network is contracted."""
        return tuple(k for k, c in self.index_counts.items() if c >= 2)

    @property
    def in_features(self) -> int:
        return math.prod(self.sizes[i] for i in self.inputs)

    @property
    def out_features(self) -> int:
        return math.prod(self.sizes[o] for o in self.outputs)

    @property
    def in_dims(self) -> tuple[int, ...]:
        s = self.sizes
        return tuple(s[i] for i in self.inputs)

    @property
    def out_dims(self) -> tuple[int, ...]:
        s = self.sizes
        return tuple(s[o] for o in self.outputs)

    @property
    def tensor_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors)

    def tensor(self, name: str) -> Tensor:
        t = self._by_name.get(name) if isinstance(name, str) else None
        if t is not None:
            return t
        raise InvalidNetworkError(f"no tensor named {name!r}; tensors are {list(self.tensor_names)}")

    def shape(self, tensor: str | Tensor) -> tuple[int, ...]:
        t = self.tensor(tensor) if isinstance(tensor, str) else tensor
        s = self.sizes
        return tuple(s[i] for i in t.indices)

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        s = self.sizes
        return tuple(tuple(s[i] for i in t.indices) for t in self.tensors)

    @property
    def params(self) -> int:
        """Number of parameters: the total size of all tensors."""
        return sum(math.prod(sh) for sh in self.shapes)

    @property
    def dense_params(self) -> int:
        return self.in_features * self.out_features

    @property
    def compression(self) -> float:
        """Dense parameters divided by network parameters (>1 means smaller)."""
        return self.dense_params / self.params

    @cached_property
    def _owners(self) -> dict[str, tuple[str, ...]]:
        owners: dict[str, list[str]] = {}
        for t in self.tensors:
            for index in t.indices:
                owners.setdefault(index, []).append(t.name)
        return {index: tuple(names) for index, names in owners.items()}

    @cached_property
    def _by_name(self) -> dict[str, Tensor]:
        return {t.name: t for t in self.tensors}

    def tensors_on(self, index: str) -> tuple[str, ...]:
        """Names of the tensors that carry ``index``."""
        return self._owners.get(index, ())

    def reachable(self, start: str, *, without: str | None = None) -> set[str]:
        """Names of the tensors connected to ``start``, not crossing the index ``without``."""
        seen, todo = {start}, [start]
        while todo:
            for index in self.tensor(todo.pop()).indices:
                if index == without:
                    continue
                for other in self.tensors_on(index):
                    if other not in seen:
                        seen.add(other)
                        todo.append(other)
        return seen

    def check_features(self, in_features: int | None = None, out_features: int | None = None) -> None:
        """Raise unless the layer maps ``in_features`` to ``out_features``."""
        if in_features is not None and self.in_features != in_features:
            raise InvalidNetworkError(
                f"the input legs must multiply to in_features={in_features}; "
                f"{list(self.in_dims)} multiply to {self.in_features}"
            )
        if out_features is not None and self.out_features != out_features:
            raise InvalidNetworkError(
                f"the output legs must multiply to out_features={out_features}; "
                f"{list(self.out_dims)} multiply to {self.out_features}"
            )

    # ------------------------------------------------------------------ einsum view
    @cached_property
    def symbols(self) -> dict[str, str]:
        """One einsum letter per index name, the batch index first (``a``)."""
        names = [BATCH_INDEX, *self.index_counts]
        return {n: get_symbol(k) for k, n in enumerate(names)}

    def equation(self) -> str:
        """The einsum equation that builds the layer tensor ``W[outputs..., inputs...]``."""
        sym = self.symbols
        terms = ",".join("".join(sym[i] for i in t.indices) for t in self.tensors)
        out = "".join(sym[i] for i in (*self.outputs, *self.inputs))
        return f"{terms}->{out}"

    def layer_equation(self) -> str:
        """The einsum equation of a forward pass: ``x[batch, inputs...]`` first, then the tensors,
        giving ``y[batch, outputs...]``."""
        sym = self.symbols
        x = sym[BATCH_INDEX] + "".join(sym[i] for i in self.inputs)
        terms = ",".join("".join(sym[i] for i in t.indices) for t in self.tensors)
        out = sym[BATCH_INDEX] + "".join(sym[o] for o in self.outputs)
        return f"{x},{terms}->{out}"

    def named_equation(self) -> str:
        """The equation with index names instead of letters, for people: ``A1[i1,o1,b1], ...``."""
        terms = ", ".join(f"{t.name}[{','.join(t.indices)}]" for t in self.tensors)
        return f"W[{','.join(self.outputs)} | {','.join(self.inputs)}] = {terms}"

    # ------------------------------------------------------------------ edits (return new values)
    def with_sizes(self, **changes: int) -> "TensorNetwork":
        sizes = self.sizes
        for k, v in changes.items():
            if k not in sizes:
                raise InvalidNetworkError(f"can only resize existing indices; {k!r} is not one")
            sizes[k] = v
        return TensorNetwork(self.tensors, tuple(sizes.items()), self.inputs, self.outputs, self.name, self.layout_items)

    def with_layout(self, layout: Mapping[str, Iterable[float]] | None) -> "TensorNetwork":
        lay = tuple((k, _xy(k, v)) for k, v in (layout or {}).items())
        return TensorNetwork(self.tensors, self.size_items, self.inputs, self.outputs, self.name, lay)

    def with_name(self, name: str) -> "TensorNetwork":
        return TensorNetwork(self.tensors, self.size_items, self.inputs, self.outputs, name, self.layout_items)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "sizes": dict(self.size_items),
            "tensors": [{"name": t.name, "indices": list(t.indices)} for t in self.tensors],
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
        }
        if self.layout_items:
            d["layout"] = {k: [v[0], v[1]] for k, v in self.layout_items}
        return d

    def to_json(self, indent: int | None = 2) -> str:
        """The SPEC 2.1 JSON text; ``load_network(net.to_json()) == net``."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> "TensorNetwork":
        if not isinstance(data, Mapping):
            raise InvalidNetworkError(f"a network JSON must be an object; got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise InvalidNetworkError(f"the 'format' field must be {FORMAT!r}; got {data.get('format')!r}")
        if data.get("version") != VERSION or isinstance(data.get("version"), bool):
            raise InvalidNetworkError(f"the 'version' field must be {VERSION}; got {data.get('version')!r}")
        known = {"format", "version", "name", "sizes", "tensors", "inputs", "outputs", "layout"}
        extra = sorted(set(data) - known)
        if extra:
            raise InvalidNetworkError(f"unknown field in network JSON (allowed: {sorted(known)}); got {extra[0]!r}")
        for key in ("sizes", "tensors"):
            if key not in data:
                raise InvalidNetworkError(f"a network JSON needs the field {key!r}; it is missing")
        sizes = data["sizes"]
        if not isinstance(sizes, Mapping):
            raise InvalidNetworkError(f"'sizes' must be an object of index -> size; got {type(sizes).__name__}")
        tensors_raw = data["tensors"]
        if not isinstance(tensors_raw, list):
            raise InvalidNetworkError(f"'tensors' must be a list; got {type(tensors_raw).__name__}")
        tensors = []
        for k, t in enumerate(tensors_raw):
            if not isinstance(t, Mapping) or "name" not in t or "indices" not in t:
                raise InvalidNetworkError(
                    f"each tensor must be an object with 'name' and 'indices'; tensor #{k} is {t!r:.80}"
                )
            if not isinstance(t["indices"], list):
                raise InvalidNetworkError(
                    f"a tensor's 'indices' must be a list; tensor {t['name']!r} has {t['indices']!r:.80}"
                )
            tensors.append(Tensor(t["name"], tuple(t["indices"])))
        ios = {}
        for key in ("inputs", "outputs"):
            value = data.get(key, [])
            if not isinstance(value, list):
                raise InvalidNetworkError(f"{key!r} must be a list of index names; got {value!r:.80}")
            ios[key] = tuple(value)
        name = data.get("name", "")
        layout = data.get("layout") or {}
        if not isinstance(layout, Mapping):
            raise InvalidNetworkError(f"'layout' must map tensor names to [x, y]; got {layout!r:.80}")
        return cls(
            tuple(tensors),
            tuple(sizes.items()),
            ios["inputs"],
            ios["outputs"],
            name,
            tuple((k, _xy(k, v)) for k, v in layout.items()),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> "TensorNetwork":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidNetworkError(f"a network file must be valid JSON; {exc}") from None
        except RecursionError:
            raise InvalidNetworkError("a network file must be valid JSON; it is nested too deeply") from None
        return cls.from_dict(data)

    def __repr__(self) -> str:
        def count(n: int, noun: str) -> str:
            return f"{n} {noun}" + ("" if n == 1 else "s")

        kind = f"{count(len(self.tensors), 'tensor')}, {count(len(self.bonds), 'bond')}"
        if self.hyperedges:
            kind += f", {count(len(self.hyperedges), 'hyperedge')}"
        return (
            f"TensorNetwork({self.name!r}: {kind}, {self.in_features}->{self.out_features}, "
            f"{self.params} params)"
        )


def _xy(name: str, value: Any) -> tuple[float, float]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise InvalidNetworkError(f"a layout position must be [x, y] with finite numbers; {name!r} has {value!r:.80}")
    return (value[0], value[1])


def load_network(
    source: "str | os.PathLike[str] | bytes | Mapping[str, Any] | TensorNetwork",
    *,
    in_features: int | None = None,
    out_features: int | None = None,
) -> TensorNetwork:
    """Load a network from a JSON file path, JSON text, a parsed dict, or pass one through.

    ``in_features`` / ``out_features``, when given, are checked against the legs.
    """
    if isinstance(source, TensorNetwork):
        net = source
    elif isinstance(source, Mapping):
        net = TensorNetwork.from_dict(source)
    elif isinstance(source, bytes):
        net = TensorNetwork.from_json(source)
    elif isinstance(source, str) and source.lstrip().startswith("{"):
        net = TensorNetwork.from_json(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InvalidNetworkError(f"a network file must exist; {str(path)!r} does not")
        net = TensorNetwork.from_json(path.read_bytes())
    else:
        raise InvalidNetworkError(f"load_network takes a path, JSON text or dict; got {type(source).__name__}")
    net.check_features(in_features, out_features)
    return net


def save_network(net: TensorNetwork, path: "str | os.PathLike[str]") -> Path:
    path = Path(path)
    path.write_text(net.to_json() + "\n")
    return path

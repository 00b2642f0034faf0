"""Input statistics of chosen layers, collected in one pass of calibration data through a model.

For each chosen ``nn.Linear`` (inputs ``x`` of size ``in_features``) and ``nn.Conv2d`` (inputs =
the unfolded patches, size ``in_channels/groups * kh * kw``, ordered like
``weight.reshape(out, -1)``) we accumulate, in float64 and streaming over batches,

    second_moment = E[x x^T] = (1/n) sum_rows x x^T      (so ``||(W - W~) X||^2 / n`` =
                                                          ``tr((W - W~) C (W - W~)^T)``)

and the mean ``E[x]``. Forward hooks are removed afterwards (also on error) and the model's
outputs are not touched (hooks only read their inputs).

Kronecker factors per input leg (``leg_dims``, row-major like ``tnviz.contract.to_dense``: the
first leg is the most significant): :func:`kron_factors` uses the *partial-trace* estimator,
``C_k = tr_{other legs}(C) / tr(C)^{(m-1)/m}`` for ``m`` legs, so that ``kron(C_1, ..., C_m)``
equals ``C`` exactly whenever ``C`` is itself a Kronecker product, and otherwise keeps its
trace-weighted marginals. It is cheap and each factor is positive semi-definite, but it is not the
best Kronecker approximation in Frobenius norm (that is Van Loan-Pitsianis' rank-1 problem):
:attr:`InputStats.kron_error` reports ``||C - kron(C_k)||_F / ||C||_F`` so its quality is visible.

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 3))
>>> stats = collect_input_stats(model, [torch.randn(8, 4)], leg_dims={"0": (2, 2)})
>>> stats["0"].second_moment.shape, [tuple(f.shape) for f in stats["0"].kron_factors]
(torch.Size([4, 4]), [(2, 2), (2, 2)])
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TnvizError
from .device import resolve_device

#: Rows multiplied at once into the float64 accumulator (bounds the temporary copy's memory).
CHUNK_ROWS = 8192


@dataclass
class InputStats:
    """Statistics of one layer's inputs: ``second_moment`` = E[x x^T] (float64), ``mean`` = E[x], ``count`` rows."""

    name: str
    kind: str  # 'Linear' | 'Conv'
    second_moment: torch.Tensor
    mean: torch.Tensor
    count: int
    leg_dims: tuple[int, ...] | None = None
    kron_factors: list[torch.Tensor] | None = None
    kron_error: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.second_moment.shape[0])


def chosen_layers(model: nn.Module, layers: str | Sequence[str] | None = None) -> dict[str, nn.Module]:
    """``nn.Linear`` and ``nn.Conv2d`` modules by name: all, those whose name matches a regex, or a list."""
    from .surgery import is_conv1d

    supported = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d)) or is_conv1d(m)}
    if layers is None:
        return supported
    if isinstance(layers, str):
        try:
            regex = re.compile(layers)
        except re.error as error:
            raise TnvizError(f"a layer pattern must be a valid regular expression, got {layers!r} ({error})") from error
        chosen = {name: m for name, m in supported.items() if regex.search(name)}
        if not chosen:
            raise TnvizError(f"a layer pattern must match at least one Linear/Conv2d module, {layers!r} matched none "
                             f"(modules: {', '.join(list(supported)[:8])}, ...)")
        return chosen
    missing = [name for name in layers if name not in supported]
    if missing:
        raise TnvizError(f"layer names must name Linear/Conv2d modules, got {missing[:5]}")
    return {name: supported[name] for name in layers}


def conv_patches(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Rows of unfolded input patches ``(N * L, C/groups * kh * kw)`` for a (groups=1) Conv2d."""
    if module.groups != 1:
        raise TnvizError(f"calibration of a Conv2d needs groups == 1, got groups={module.groups}")
    if isinstance(module.padding, str):
        raise TnvizError(f"calibration of a Conv2d needs numeric padding, got padding={module.padding!r}")
    padding = module.padding
    if module.padding_mode != "zeros":
        pad = (padding[1], padding[1], padding[0], padding[0])
        x = F.pad(x, pad, mode=module.padding_mode)
        padding = (0, 0)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    patches = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=padding, stride=module.stride)
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


class _Reached(Exception):
    """Raised by the last wanted hook of a forward pass: nothing after it is needed."""


class _Accumulator:
    def __init__(self, name: str, module: nn.Module, device: torch.device, shared: dict | None = None):
        self.name = name
        self.module = module
        self.kind = "Conv" if isinstance(module, nn.Conv2d) else "Linear"
        if self.kind == "Conv":
            dim = module.weight[0].numel()
        else:  # nn.Linear, or a Conv1D (GPT-2), whose weight is (in, out)
            dim = module.in_features if isinstance(module, nn.Linear) else module.weight.shape[0]
        self.xtx = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.total = torch.zeros(dim, dtype=torch.float64, device=device)
        self.count = 0
        self.device = device
        self.row_mask: torch.Tensor | None = None
        self.calls = 0  # in the current forward pass
        self.after: Any = None  # called after each accumulation (the early stop)
        self.shared = shared if shared is not None else {}  # the last input's moments, for layers fed the same tensor

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self.calls += 1
        self._add(args, kwargs, module)
        if self.after is not None:
            self.after(self)

    def _add(self, args: tuple, kwargs: dict, module: nn.Module) -> None:
        given = args[0] if args else kwargs["input"]
        if self.kind == "Linear":
            # q/k/v (gate/up) projections are called with the same tensor object: its moments are
            # computed once.  The cache holds that object, so its memory cannot be reused by
            # another tensor while it is compared by identity (and by version: no in-place change).
            hit = self.shared.get("input")
            if hit is not None and hit[0] is given and hit[1] == given._version and hit[2] is self.row_mask:
                xtx, total, count = self.shared["moments"]
                self._accumulate(xtx, total, count)
                return
        x = given.detach()
        if self.kind == "Conv":
            rows = conv_patches(module, x)
        else:
            if self.row_mask is not None and tuple(x.shape[:-1]) == tuple(self.row_mask.shape):
                x = x[self.row_mask.to(x.device)]
            rows = x.reshape(-1, x.shape[-1])
        xtx, total, count = moments(rows, self.device, symmetric=False)  # mirrored once, in the stats
        if self.kind == "Linear":
            self.shared["input"] = (given, given._version, self.row_mask)
            self.shared["moments"] = (xtx, total, count)
        self._accumulate(xtx, total, count)

    def _accumulate(self, xtx: torch.Tensor, total: torch.Tensor, count: int) -> None:
        self.xtx += xtx
        self.total += total
        self.count += count


def moments(rows: torch.Tensor, device: torch.device, symmetric: bool = True) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(x^T x, sum of x, rows)`` of ``rows`` (n, d) on ``device``, in float64 (chunks of at most
    :data:`CHUNK_ROWS` rows converted at a time).

    ``x^T x`` is symmetric, so only its upper triangle is computed, in column blocks
    (:func:`gram_upper`), and mirrored (:func:`mirror`; ``symmetric=False`` leaves that to the
    caller, who sums several batches first): about 60% of a full product's FLOPs, in the same BLAS.

    Float32 products would be 2.7x faster on MiniLM's feed-forward inputs, but their rounding
    (~1e-7 of the largest eigenvalue) makes a rank-deficient covariance (1536 GELU outputs seen
    on 810 tokens) indefinite beyond the ``eps = 1e-6 * mean(diag)`` it is regularized with: the
    Cholesky factor of all six ``output.dense`` inputs failed (measured 2026-12-03)."""
    dim = rows.shape[-1]
    xtx = torch.zeros(dim, dim, dtype=torch.float64, device=device)
    total = torch.zeros(dim, dtype=torch.float64, device=device)
    for start in range(0, rows.shape[0], CHUNK_ROWS):
        chunk = rows[start:start + CHUNK_ROWS].to(device=device, dtype=torch.float64)
        gram_upper(xtx, chunk)
        total += chunk.sum(dim=0)
    if symmetric:
        mirror(xtx)
    return xtx, total, int(rows.shape[0])


#: Columns per block of :func:`gram_upper`: narrower blocks skip more of the lower triangle but
#: make smaller products (on a 2-core CPU, 1536 columns: 8 blocks 65 ms, 2 blocks 81 ms, one full
#: product 109 ms for 2,048 rows).
GRAM_BLOCK = 192


def _gram_cuts(dim: int) -> list[int]:
    blocks = max(1, min(8, dim // GRAM_BLOCK))
    return [round(i * dim / blocks) for i in range(blocks + 1)]


def gram_upper(acc: torch.Tensor, x: torch.Tensor) -> None:
    """Add ``x^T x`` to ``acc`` on and above the diagonal blocks of :func:`_gram_cuts` (below
    them ``acc`` is left as is): block row ``i`` gets ``x_i^T x[:, i:]``."""
    cuts = _gram_cuts(x.shape[1])
    for a, b in zip(cuts, cuts[1:]):
        acc[a:b, a:].addmm_(x[:, a:b].T, x[:, a:])


def mirror(acc: torch.Tensor) -> None:
    """Make ``acc`` exactly symmetric from what :func:`gram_upper` wrote, in place, block by block
    (no full-size temporary: the 2752² moment of a LLaMA ``down_proj`` is 58 MiB)."""
    cuts = _gram_cuts(acc.shape[0])
    spans = list(zip(cuts, cuts[1:]))
    for i, (a, b) in enumerate(spans):
        diag = acc[a:b, a:b]
        diag.copy_(torch.triu(diag) + torch.triu(diag, 1).T)
        for c, d in spans[i + 1:]:
            acc[c:d, a:b] = acc[a:b, c:d].T


def call_model(model: nn.Module, batch: Any) -> Any:
    """Run one batch as the model takes it: keywords for a mapping (token batches), positional
    arguments for a tuple/list, else the tensor itself."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


@torch.no_grad()
def collect_input_stats(model: nn.Module, batches: Iterable[Any], layers: str | Sequence[str] | None = None,
                        device: Any = None, leg_dims: Mapping[str, Sequence[int]] | None = None,
                        mask_key: str | None = "attention_mask") -> dict[str, InputStats]:
    """Run ``batches`` through ``model`` once and return each chosen layer's :class:`InputStats`.

    ``batches``: tensors (``model(b)``), tuples (``model(*b)``) or dicts (``model(**b)``).
    ``layers``: ``None`` (every Linear/Conv2d), a regex on module names, or a list of names.
    ``device``: where the float64 accumulators live (``None``: CUDA when present).
    ``leg_dims``: per layer name, the input leg sizes for Kronecker factors (see module doc).
    ``mask_key``: for dict batches holding this key (e.g. a tokenizer's ``attention_mask`` of shape
    ``(B, T)``), Linear inputs of shape ``(B, T, d)`` count only the rows where the mask is 1, so
    that padding tokens do not enter the statistics. The model's mode (train/eval) is not changed.
    """
    chosen = chosen_layers(model, layers)
    device = resolve_device(device)
    shared: dict = {}
    accumulators = {name: _Accumulator(name, module, device, shared) for name, module in chosen.items()}
    handles = [module.register_forward_hook(accumulators[name], with_kwargs=True) for name, module in chosen.items()]
    # The first batch runs the whole model.  If it calls every chosen layer exactly once, the later
    # batches stop as soon as each has been called (what comes after cannot change what they saw):
    # asking for early layers does not pay for the rest of the model.
    pending: set[str] = set()

    def reached(acc: _Accumulator) -> None:
        pending.discard(acc.name)
        if not pending:
            raise _Reached

    try:
        for k, batch in enumerate(batches):
            mask = None
            if mask_key and isinstance(batch, Mapping) and mask_key in batch:
                mask = batch[mask_key].bool()
            for accumulator in accumulators.values():
                accumulator.row_mask = mask
                accumulator.calls = 0
            pending.update(accumulators)
            try:
                call_model(model, batch)
            except _Reached:
                pass
            finally:
                shared.clear()  # nothing of this batch is kept alive
            if k == 0:
                once = all(acc.calls == 1 for acc in accumulators.values())
                for acc in accumulators.values():
                    acc.after = reached if once else None
    finally:
        for handle in handles:
            handle.remove()
    stats = {}
    for name, acc in accumulators.items():
        if acc.count == 0:
            raise TnvizError(f"every chosen layer must see calibration inputs; {name!r} saw none (is it used in forward?)")
        mirror(acc.xtx)
        stat = InputStats(name, acc.kind, acc.xtx / acc.count, acc.total / acc.count, acc.count)
        if leg_dims and name in leg_dims:
            stat.leg_dims = tuple(int(d) for d in leg_dims[name])
            stat.kron_factors = kron_factors(stat.second_moment, stat.leg_dims)
            approx = kron_product(stat.kron_factors)
            stat.kron_error = float(torch.linalg.norm(stat.second_moment - approx) / torch.linalg.norm(stat.second_moment).clamp_min(1e-300))
        stats[name] = stat
    return stats


def kron_factors(second_moment: torch.Tensor, leg_dims: Sequence[int]) -> list[torch.Tensor]:
    """Partial-trace Kronecker factors of a ``(d, d)`` second moment for input legs ``leg_dims`` (prod = d).

    Exact when ``second_moment`` is a Kronecker product of PSD factors; see the module docstring.
    """
    dims = tuple(int(d) for d in leg_dims)
    total = 1
    for d in dims:
        total *= d
    if total != second_moment.shape[0] or second_moment.shape[0] != second_moment.shape[1]:
        raise TnvizError(f"leg sizes must multiply to the input size {tuple(second_moment.shape)}, got {dims} (product {total})")
    m = len(dims)
    tensor = second_moment.reshape(dims + dims)
    trace = torch.diagonal(second_moment).sum()
    scale = trace.clamp_min(1e-300) ** ((m - 1) / m)
    factors = []
    for k in range(m):
        others = [j for j in range(m) if j != k]
        # contract leg j with leg j + m for every other leg: the partial trace over them.
        letters = "abcdefghijklmnopqrstuvwxyz"
        rows = [letters[j] for j in range(m)]
        cols = [letters[j] if j in others else letters[m + j].upper() for j in range(m)]
        equation = "".join(rows) + "".join(cols) + "->" + letters[k] + letters[m + k].upper()
        factors.append(torch.einsum(equation, tensor) / scale)
    return factors


def kron_product(factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``kron(F_1, ..., F_m)`` with the first factor most significant (row-major legs)."""
    result = factors[0]
    for factor in factors[1:]:
        result = torch.kron(result, factor)
    return result

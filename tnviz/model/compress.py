"""Weights-only compression of a file: a map over independent weights, streamed.

Each selected weight is read alone (memory-mapped), decomposed on the chosen device, and its factor
tensors kept (they are small); untouched tensors are streamed from the source into the output
file one at a time, bit for bit.  The output folder holds

* ``model.safetensors``: the factors, named ``<weight name>::<tensor name>``, and every untouched
  tensor under its own name;
* ``tnviz.json``: per weight the original name, shape and dtype, the network spec (SPEC 2.1), the
  method, ranks, errors, parameters and time.

``load_compressed(folder)`` gives back the factors per weight, the dense state_dict, or TN layers.

Because every weight is independent, the loop in :func:`compress_file` is the unit that a
``torch.distributed`` launcher could shard by weight name across GPUs.
"""
from __future__ import annotations

import json
import math
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from ..errors import ModelFileError, RankError
from ..network import TensorNetwork

if TYPE_CHECKING:
    import torch

FORMAT = "tnviz.compressed"
VERSION = 1
SEPARATOR = "::"

_TORCH_TO_ST = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "uint16": "U16", "uint32": "U32", "uint64": "U64",
}


# ---------------------------------------------------------------------- streaming writer
def write_safetensors_streamed(
    path: str | os.PathLike,
    items: Iterable[tuple[str, str, tuple[int, ...], Callable[[], "torch.Tensor"]]],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a safetensors file whose tensors are produced one at a time by ``getter()``.

    ``items`` are ``(name, torch dtype name, shape, getter)``; the header is written first from the
    shapes, then each tensor's bytes, so at most one source tensor is in memory.
    """
    import torch

    items = list(items)
    header: dict[str, Any] = {}
    offset = 0
    for name, dtype, shape, _ in items:
        nbytes = math.prod(shape) * torch.empty((), dtype=getattr(torch, dtype)).element_size()
        header[name] = {"dtype": _TORCH_TO_ST[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = dict(metadata)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format aligns the data section to 8 bytes
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(struct.pack("<Q", len(blob)))
            fh.write(blob)
            for name, dtype, shape, getter in items:
                t = getter().detach().to("cpu").contiguous()
                if tuple(t.shape) != tuple(shape) or str(t.dtype).removeprefix("torch.") != dtype:
                    raise ModelFileError(f"tensor {name!r} changed between planning and writing: {tuple(t.shape)} {t.dtype}")
                fh.write(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ---------------------------------------------------------------------- compress
def _truncation_for(params: int, max_rank: int | None, rtol: float | None, ratio: float | None) -> dict[str, Any]:
    if ratio is not None:
        return {"target_params": max(1, int(params / ratio))}
    if rtol is not None:
        return {"rtol": rtol}
    if max_rank is not None:
        return {"max_rank": max_rank}
    raise RankError("a compression needs a truncation: one of max_rank, rtol or ratio; got none")


def compress_file(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    method: str = "mpo",
    layers: str | None = None,
    device: Any = "auto",
    max_rank: int | None = None,
    rtol: float | None = None,
    ratio: float | None = None,
    input_covs: Mapping[str, Any] | None = None,
    progress: bool | Callable[[int, int, str], None] = False,
    **decompose_options: Any,
) -> dict[str, Any]:
    """Compress every selected weight of ``model`` and write ``output/`` (see module doc).

    ``layers`` is a regex over weight names (default: every Linear/Conv/Embedding weight);
    ``ratio`` asks each selected weight for ``1/ratio`` of its parameters, which gives the same
    ratio overall; ``input_covs`` maps weight names to calibration covariances (data-aware).
    ``progress`` is ``True`` for a terminal bar on stderr or a callback ``(done, total, name)``.
    Returns the report of ``tnviz compress --json``.
    """
    import torch

    from ..decompose import DECOMPOSITIONS, decompose
    from .device import resolve_device
    from .io import candidates, open_weights

    if method not in DECOMPOSITIONS:
        raise RankError(f"unknown method {method!r}; choose one of {list(DECOMPOSITIONS)}")
    given = [k for k, v in (("max_rank", max_rank), ("rtol", rtol), ("ratio", ratio)) if v is not None]
    if len(given) != 1:
        raise RankError(f"a compression needs exactly one truncation: one of max_rank, rtol or ratio; got {given or 'none'}")
    dev = resolve_device(device)
    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise ModelFileError(f"the output must be a folder; {str(out_dir)!r} is a file")
    started = time.perf_counter()
    report_layers: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    factors: dict[str, torch.Tensor] = {}
    with open_weights(model) as weights:
        chosen = candidates(weights, layers)
        if not chosen:
            raise ModelFileError(
                f"the layer pattern must select at least one 2-D or 4-D weight; {layers!r} selects none "
                f"(weights: {', '.join(c.name for c in candidates(weights)[:5])}, ...)"
            )
        bar = _Bar(len(chosen)) if progress is True else None
        for k, cand in enumerate(chosen):
            if callable(progress):
                progress(k, len(chosen), cand.name)
            if bar:
                bar.update(k, cand.name)
            weight = weights.get(cand.name, device=dev, dtype=torch.float32)
            cov = None
            if input_covs and cand.name in input_covs:
                cov = input_covs[cand.name]
            try:
                dec = decompose(weight, method, input_cov=cov,
                                **_truncation_for(cand.params, max_rank, rtol, ratio), **decompose_options)
            except RankError as exc:  # e.g. a ratio this small weight cannot reach even at rank 1
                skipped.append({"name": cand.name, "reason": f"{exc}; kept dense"})
                continue
            if dec.network.params >= cand.params:
                # A network at least as large as the weight saves nothing: keep the weight as is.
                skipped.append({"name": cand.name, "reason": f"the {method} network would hold {dec.network.params:,} "
                                f"parameters, not fewer than the weight's {cand.params:,}; kept dense"})
                continue
            for tname, t in dec.tensors.items():
                factors[f"{cand.name}{SEPARATOR}{tname}"] = t.detach().to("cpu", getattr(torch, cand.dtype)).contiguous()
            report_layers.append({
                "name": cand.name,
                "shape": list(cand.shape),
                "dtype": cand.dtype,
                "kind": cand.kind,
                "method": method,
                "params_before": cand.params,
                "params_after": dec.network.params,
                "rel_error": float(dec.rel_error),
                "data_error": None if dec.data_error is None else float(dec.data_error),
                "ranks": {k_: int(v) for k_, v in dec.ranks.items()},
                "seconds": float(dec.seconds),
                "network": dec.network.to_dict(),
            })
            del weight
        if bar:
            bar.update(len(chosen), "done")
            bar.close()
        if callable(progress):
            progress(len(chosen), len(chosen), "done")
        chosen_names = {layer["name"] for layer in report_layers}
        untouched = [n for n in weights.names() if n not in chosen_names]
        items = [(n, str(t.dtype).removeprefix("torch."), tuple(t.shape), (lambda t=t: t)) for n, t in factors.items()]
        items += [(n, weights.dtype(n), tuple(weights.shape(n)), (lambda n=n: weights.get(n))) for n in untouched]
        out_dir.mkdir(parents=True, exist_ok=True)
        write_safetensors_streamed(out_dir / "model.safetensors", items, metadata={"format": FORMAT})
    seconds = time.perf_counter() - started
    totals = {
        "params_before": sum(layer["params_before"] for layer in report_layers),
        "params_after": sum(layer["params_after"] for layer in report_layers),
    }
    totals["ratio"] = totals["params_before"] / max(totals["params_after"], 1)
    report = {
        "format": FORMAT,
        "version": VERSION,
        "source": Path(model).name,
        "method": method,
        "truncation": {k: v for k, v in (("max_rank", max_rank), ("rtol", rtol), ("ratio", ratio)) if v is not None},
        "layers": report_layers,
        "untouched": untouched,
        "skipped": skipped,
        "totals": totals,
        "seconds": seconds,
        "device": str(dev),
    }
    (out_dir / "tnviz.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


class _Bar:
    """A one-line progress bar on stderr (the CLI's; the app uses st.progress)."""

    def __init__(self, total: int):
        import sys

        self.total, self.stream, self.t0 = total, sys.stderr, time.perf_counter()

    def update(self, done: int, label: str) -> None:
        width = 30
        filled = int(width * done / max(self.total, 1))
        elapsed = time.perf_counter() - self.t0
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} {elapsed:5.1f}s {label[:40]:<40}")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


# ---------------------------------------------------------------------- load back
@dataclass
class CompressedLayer:
    name: str
    shape: tuple[int, ...]
    dtype: str
    network: TensorNetwork
    tensors: dict[str, "torch.Tensor"]
    info: dict[str, Any] = field(repr=False, default_factory=dict)

    def to_weight(self) -> "torch.Tensor":
        """The dense weight in its original shape (and dtype)."""
        import torch

        from ..contract import to_dense

        dense = to_dense(self.network, {k: v.to(torch.float64) for k, v in self.tensors.items()}, budget=None)
        return dense.reshape(self.shape).to(getattr(torch, self.dtype))


@dataclass
class CompressedModel:
    """What ``tnviz compress`` wrote: TN layers by weight name plus the untouched tensors."""

    layers: dict[str, CompressedLayer]
    untouched: dict[str, "torch.Tensor"]
    report: dict[str, Any]

    def state_dict(self) -> dict[str, "torch.Tensor"]:
        """A dense state_dict with the original names, shapes and dtypes."""
        out = {name: layer.to_weight() for name, layer in self.layers.items()}
        out.update(self.untouched)
        return out

    def tn_layers(self, device: Any = None) -> dict[str, Any]:
        """``tnviz.nn`` modules for the 2-D weights (keyed by weight name; bias not included)."""
        from ..nn import TNLinear

        out = {}
        for name, layer in self.layers.items():
            if len(layer.shape) == 2:
                out[name] = TNLinear.from_tensors(layer.network, layer.tensors, bias=None, device=device)
        return out


def load_compressed(folder: str | os.PathLike, device: Any = None) -> CompressedModel:
    """Read a folder written by :func:`compress_file` (or the app's export)."""
    from safetensors import safe_open

    folder = Path(folder)
    meta_path, weights_path = folder / "tnviz.json", folder / "model.safetensors"
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise ModelFileError(f"a compressed model folder holds tnviz.json and model.safetensors; {str(p)!r} is missing")
    try:
        report = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"tnviz.json must be valid JSON; {exc}") from None
    if not isinstance(report, dict) or report.get("format") != FORMAT:
        raise ModelFileError(f"tnviz.json must have format {FORMAT!r}; got {report.get('format') if isinstance(report, dict) else report!r}")
    dev = "cpu" if device is None else str(device)
    layers: dict[str, CompressedLayer] = {}
    untouched: dict[str, Any] = {}
    try:
        with safe_open(str(weights_path), framework="pt", device=dev) as fh:
            keys = set(fh.keys())
            for info in report["layers"]:
                net = TensorNetwork.from_dict(info["network"])
                tensors = {}
                for t in net.tensor_names:
                    key = f"{info['name']}{SEPARATOR}{t}"
                    if key not in keys:
                        raise ModelFileError(f"model.safetensors must hold every factor; {key!r} is missing")
                    tensors[t] = fh.get_tensor(key)
                layers[info["name"]] = CompressedLayer(info["name"], tuple(info["shape"]), info["dtype"], net, tensors, info)
            for name in report.get("untouched", []):
                untouched[name] = fh.get_tensor(name)
    except ModelFileError:
        raise
    except Exception as exc:  # safetensors raises its own types for truncated/corrupt files
        raise ModelFileError(f"model.safetensors must be a complete safetensors file; reading it failed: {exc}") from None
    return CompressedModel(layers, untouched, report)


# ---------------------------------------------------------------------- spectra
def bond_entropy(singular_values: "torch.Tensor") -> float:
    """Von Neumann entropy of the normalised squared singular values (nats)."""
    import torch

    p = singular_values.to(torch.float64) ** 2
    p = p / p.sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def spectra_file(model: str | os.PathLike, *, layers: str | None = None, method: str = "mpo",
                 device: Any = "auto", **decompose_options: Any) -> dict[str, Any]:
    """Per selected weight and bond: singular values before truncation and the bond entropy."""
    import torch

    from ..decompose import decompose
    from .device import resolve_device
    from .io import candidates, open_weights

    dev = resolve_device(device)
    out = []
    with open_weights(model) as weights:
        chosen = candidates(weights, layers)
        if not chosen:
            raise ModelFileError(f"the layer pattern must select at least one 2-D or 4-D weight; {layers!r} selects none")
        for cand in chosen:
            dec = decompose(weights.get(cand.name, device=dev, dtype=torch.float32), method, **decompose_options)
            bonds = {}
            for bond, sv in dec.spectra.items():
                sv = sv.to(torch.float64).cpu()
                bonds[bond] = {"singular_values": [float(v) for v in sv], "entropy": bond_entropy(sv),
                               "size": int(dec.network.sizes[bond])}
            out.append({"name": cand.name, "shape": list(cand.shape), "method": method, "bonds": bonds})
    return {"layers": out, "device": str(dev)}

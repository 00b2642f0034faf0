"""The compressed folder: its one writer and its one reader.

A folder written by ``tnviz compress``, :func:`tnviz.compress` or the app's download holds

* ``model.safetensors``: the factors of every compressed weight, named ``<weight>::<tensor>``, and
  every other tensor of the input under its own name — copied bit for bit, or, where healing
  changed it, its new value in the input's dtype (listed in ``changed``);
* ``tnviz.json`` (the manifest, written last): per compressed weight its name, module, shape,
  dtype, method, parameters, errors and network spec (SPEC 2.1); the names of every other tensor;
  the weights kept dense and why; totals, the settings and the functional metrics; and the size and
  SHA-256 of ``model.safetensors``; with the order search, ``permutations``: per feed-forward pair
  the hidden-neuron order its compressed weights were decomposed in and the tensors it runs along
  (:mod:`tnviz.model.permute`).  Dense tensors are stored in the input's order (bit for bit);
  :func:`load_compressed` re-orders them so that they agree with the factors.

Nothing in it depends on the clock or the machine, so the same input and settings give the same
bytes from every face.  :func:`write_folder` writes into a temporary folder beside the target and
swaps it into place at the end, so a killed run leaves the earlier output or the new one, never a
mix; it refuses to overwrite anything but an earlier tnviz output (and then only when asked), and
never the input.  :func:`load_compressed` checks the manifest against the file (names, shapes,
dtypes, checksum, sizes) before it trusts either.

>>> import tempfile, torch
>>> folder = tempfile.mkdtemp() + "/out"
>>> items = [Item("fc.weight::A", "float32", (2, 3), lambda: torch.ones(2, 3))]
>>> manifest = {"source": "doc", "layers": [], "untouched": ["fc.weight::A"], "skipped": [], "totals": {}}
>>> _ = write_folder(folder, items, manifest)
>>> load_compressed(folder).untouched["fc.weight::A"].shape
torch.Size([2, 3])
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import json
import math
import os
import shutil
import struct
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, NamedTuple, Sequence

from ..errors import BudgetError, InvalidNetworkError, ModelFileError
from ..network import TensorNetwork
from .memory import trim

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "tnviz.compressed"
#: Version 2 adds the checksum and ``changed``; version 1 folders (no checksum) still load.
VERSION = 2
#: The manifest format of a dense export (a plain Hugging Face folder: see tnviz.model.dense).
DENSE_FORMAT = "tnviz.dense"
SEPARATOR = "::"
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "tnviz.json"

#: Largest dense weight :meth:`CompressedModel.state_dict` rebuilds by default (elements).
MAX_DENSE_ELEMENTS = 2**31

TORCH_TO_ST = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "uint16": "U16", "uint32": "U32", "uint64": "U64",
}
ST_TO_TORCH = {v: k for k, v in TORCH_TO_ST.items()}
_ITEM_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2,
               "int8": 1, "uint8": 1, "bool": 1, "float8_e4m3fn": 1, "float8_e5m2": 1, "uint16": 2, "uint32": 4,
               "uint64": 8}


class Item(NamedTuple):
    """One tensor to write: its name, torch dtype name, shape, and how to get it (called once, at its turn)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    get: Callable[[], "torch.Tensor"]


# ---------------------------------------------------------------------- writing
def write_safetensors_streamed(path: str | os.PathLike, items: Iterable[Item | tuple],
                               metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Write a safetensors file whose tensors are produced one at a time; returns its ``bytes``
    and ``sha256``.  The header is written first from the shapes, then each tensor's bytes, so at
    most one source tensor is in memory.  ``items`` are :class:`Item` s or ``(name, dtype, shape, get)``."""
    import torch

    items = [i if isinstance(i, Item) else Item(*i) for i in items]  # (a plain 4-tuple works too)
    header: dict[str, Any] = {}
    offset = 0
    for it in items:
        if it.dtype not in TORCH_TO_ST:
            raise ModelFileError(f"tensor {it.name!r} must have a dtype safetensors stores; got {it.dtype!r}")
        nbytes = math.prod(it.shape) * _ITEM_BYTES[it.dtype]
        header[it.name] = {"dtype": TORCH_TO_ST[it.dtype], "shape": list(it.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = dict(metadata)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format aligns the data section to 8 bytes
    digest = hashlib.sha256()
    path = Path(path)
    size = 0
    with open(path, "wb") as fh:
        for chunk in (struct.pack("<Q", len(blob)), blob):
            fh.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        for it in items:
            t = it.get().detach().to("cpu").contiguous()
            if tuple(t.shape) != tuple(it.shape) or str(t.dtype).removeprefix("torch.") != it.dtype:
                raise ModelFileError(f"tensor {it.name!r} changed between planning and writing: {tuple(t.shape)} {t.dtype}")
            data = t.reshape(-1).view(torch.uint8).numpy().tobytes()
            fh.write(data)
            digest.update(data)
            size += len(data)
            if len(data) >= 1 << 20:  # a large copied tensor's memory back to the system
                del t, data
                trim()
        fh.flush()
        os.fsync(fh.fileno())
    return {"bytes": size, "sha256": digest.hexdigest()}


def _is_output(folder: Path) -> bool:
    """Whether ``folder`` holds a tnviz output (its manifest says so), whatever its state."""
    try:
        doc = json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") in (FORMAT, DENSE_FORMAT)


def check_target(folder: str | os.PathLike, *, overwrite: bool = False,
                 protect: Sequence[str | os.PathLike] = ()) -> Path:
    """The output folder, refused where writing it would lose something: it is a file; it holds
    (or is, or lies inside) a protected path such as the input; it holds files and is not an earlier
    tnviz output; or it is one and ``overwrite`` was not asked for."""
    target = Path(folder).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise ModelFileError(f"the output must be a folder; {str(folder)!r} is a file")
    for p in protect:
        if not p:
            continue
        q = Path(p).expanduser().resolve()
        if q == target or target in q.parents or q in target.parents:
            raise ModelFileError(f"the output folder must not hold, be or lie inside the input; {str(folder)!r} "
                                 f"and the input {str(p)!r} overlap (choose another -o)")
    if target.is_dir() and any(target.iterdir()):
        if not _is_output(target):
            raise ModelFileError(f"the output folder must be new, empty or an earlier tnviz output; {str(folder)!r} "
                                 f"holds other files (choose an empty or new folder)")
        if not overwrite:
            raise ModelFileError(f"the output folder must be new or empty unless overwriting is asked for; "
                                 f"{str(folder)!r} holds an earlier tnviz output (pass --overwrite / overwrite=True "
                                 f"to replace it)")
    return target


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    if ctypes.get_errno() in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(b))


def _stale_temporaries(target: Path) -> Iterable[Path]:
    """Temporary folders of earlier runs for this target whose process is gone (killed runs)."""
    for p in target.parent.glob(f".{target.name}.tnviz-*"):
        try:
            pid = int(p.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            yield p
        except PermissionError:
            continue


def write_folder(folder: str | os.PathLike, items: Sequence[Item], manifest: Mapping[str, Any], *,
                 overwrite: bool = False, protect: Sequence[str | os.PathLike] = (), format: str = FORMAT,
                 extra_files: Mapping[str, bytes] | None = None) -> Path:
    """Write ``items`` to ``folder/model.safetensors`` and ``manifest`` (plus format, version and the
    file's checksum) to ``folder/tnviz.json``, atomically (see the module doc); returns the folder.
    ``format``: :data:`FORMAT`, or :data:`DENSE_FORMAT` for a dense export (its safetensors
    metadata then says ``pt``, as transformers requires); ``extra_files`` (name -> bytes: a
    config, a tokenizer) are written beside them."""
    target = check_target(folder, overwrite=overwrite, protect=protect)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in _stale_temporaries(target):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = target.parent / f".{target.name}.tnviz-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for name, data in (extra_files or {}).items():
            if Path(name).name != name or name in (WEIGHTS_FILE, MANIFEST_FILE):
                raise ModelFileError(f"an extra file must be a plain file name other than the folder's own; got {name!r}")
            (tmp / name).write_bytes(data)
        written = write_safetensors_streamed(tmp / WEIGHTS_FILE, items,
                                             metadata={"format": "pt" if format == DENSE_FORMAT else FORMAT})
        doc = {"format": format, "version": VERSION, **dict(manifest), "files": {WEIGHTS_FILE: written}}
        with open(tmp / MANIFEST_FILE, "w") as fh:  # the manifest last: a folder without it is not an output
            fh.write(json.dumps(doc, indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if target.exists():
            if not _exchange(tmp, target):
                old = target.parent / f".{target.name}.tnviz-{os.getpid()}-old"
                os.rename(target, old)
                os.rename(tmp, target)
                tmp = old
            shutil.rmtree(tmp, ignore_errors=True)  # now the earlier output
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


#: Files :func:`zip_folder` stores rather than deflates (float tensors barely deflate).
STORED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def zip_folder(folder: str | os.PathLike) -> bytes:
    """The files of ``folder`` (not recursive: an output folder is flat) as zip bytes; the same
    files give the same bytes (fixed timestamps), so downloads can be compared.  Weights files are
    stored, the rest deflated: float tensors deflate by 8% (MiniLM's 77 MB file, measured) for 3 s
    of zlib, which was 40% of the app's Run compression."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(Path(folder).iterdir()):
            if path.is_file():
                info = zipfile.ZipInfo(path.name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED if path.suffix in STORED_SUFFIXES else zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                with open(path, "rb") as fh:
                    archive.writestr(info, fh.read())
    return buffer.getvalue()


# ---------------------------------------------------------------------- reading
@dataclass
class CompressedLayer:
    name: str
    shape: tuple[int, ...]
    dtype: str
    network: TensorNetwork
    tensors: dict[str, "torch.Tensor"]
    info: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def module(self) -> str:
        return self.info.get("module") or self.name.removesuffix(".weight")

    def to_weight(self, budget: int | None = MAX_DENSE_ELEMENTS) -> "torch.Tensor":
        """The dense weight in its original shape (and dtype)."""
        import torch

        from ..contract import to_dense

        elements = math.prod(self.shape)
        if budget is not None and elements > budget:
            raise BudgetError(f"a dense weight is limited to {budget:,} elements; {self.name!r} {self.shape} has "
                              f"{elements:,} (pass budget=None to rebuild it anyway)")
        dense = to_dense(self.network, {k: v.to(torch.float64) for k, v in self.tensors.items()}, budget=None)
        dense = dense.reshape(self.shape).to(getattr(torch, self.dtype))
        return dense.t().contiguous() if self.transposed else dense

    @property
    def transposed(self) -> bool:
        """Whether the input stored this weight as ``(in, out)`` (GPT-2's Conv1D): ``to_weight``
        gives it back that way; ``shape`` is the ``(out, in)`` map the network applies."""
        return bool(self.info.get("transposed"))

    @property
    def tied(self) -> list[str]:
        """Weight names of the modules that share this weight (a tied ``lm_head``)."""
        return list(self.info.get("tied") or [])


@dataclass
class CompressedModel:
    """What a compressed folder holds: TN layers by weight name plus every other tensor."""

    layers: dict[str, CompressedLayer]
    untouched: dict[str, "torch.Tensor"]
    report: dict[str, Any]

    def state_dict(self, budget: int | None = MAX_DENSE_ELEMENTS) -> dict[str, "torch.Tensor"]:
        """A dense state_dict with the input's names, shapes and dtypes."""
        out = {name: layer.to_weight(budget) for name, layer in self.layers.items()}
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


def _manifest_error(message: str) -> ModelFileError:
    return ModelFileError(f"tnviz.json {message}")


def _check_layer(info: Any, k: int) -> tuple[str, tuple[int, ...], str, TensorNetwork]:
    if not isinstance(info, dict):
        raise _manifest_error(f"layer {k} must be an object; got {type(info).__name__}")
    name, shape, dtype = info.get("name"), info.get("shape"), info.get("dtype")
    if not isinstance(name, str) or not name:
        raise _manifest_error(f"layer {k} must have a name; got {name!r}")
    if not (isinstance(shape, list) and len(shape) in (2, 4)
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise _manifest_error(f"layer {name!r} must have a shape of 2 or 4 positive integers; got {shape!r}")
    if dtype not in ("float64", "float32", "float16", "bfloat16"):
        raise _manifest_error(f"layer {name!r} must have a float dtype; got {dtype!r}")
    try:
        net = TensorNetwork.from_dict(info.get("network"))
    except InvalidNetworkError as exc:
        raise _manifest_error(f"layer {name!r} must hold a valid network spec; {exc}") from None
    out_f, in_f = shape[0], math.prod(shape[1:])
    if (net.out_features, net.in_features) != (out_f, in_f):
        raise _manifest_error(f"layer {name!r}: its network maps {net.in_features} -> {net.out_features} features, "
                              f"but its shape {tuple(shape)} needs {in_f} -> {out_f}")
    return name, tuple(shape), dtype, net


def _header(path: Path) -> dict[str, Any]:
    """The safetensors header of ``path`` (names -> dtype, shape), refused when malformed."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelFileError(f"model.safetensors must be a complete safetensors file; it has {size} bytes")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 * 2**20):
            raise ModelFileError(f"model.safetensors must be a complete safetensors file; its header claims {n:,} bytes "
                                 f"of {size:,}")
        try:
            header = json.loads(fh.read(n))
        except ValueError as exc:
            raise ModelFileError(f"model.safetensors must be a complete safetensors file; its header is not JSON ({exc})") from None
    header.pop("__metadata__", None)
    return header


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def load_compressed(folder: str | os.PathLike, device: Any = None, *, verify: bool = True,
                    into: "nn.Module | None" = None, strategy: str = "auto") -> "CompressedModel | nn.Module":
    """Read a compressed folder after checking that its manifest and its tensors agree: every
    factor and tensor the manifest names is in ``model.safetensors`` with the right shape and dtype,
    nothing else is, and (``verify``) the file's size and SHA-256 are the manifest's.  A mismatch —
    a folder half-written, or mixed from two runs — is refused with what differs.

    With ``into`` (the original architecture, built: e.g. ``AutoModelForCausalLM.from_config``),
    the TN layers are swapped into it in place of the modules they compress (tied modules share one
    network), every other tensor is loaded into it, and the model is returned in eval mode; a module
    missing or of another shape is refused by name."""
    if into is not None:
        return _swap_in(into, load_compressed(folder, device, verify=verify), strategy)
    from safetensors import safe_open

    folder = Path(folder)
    meta_path, weights_path = folder / MANIFEST_FILE, folder / WEIGHTS_FILE
    for p in (meta_path, weights_path):
        if not p.is_file():
            from .resume import stopped_run

            stopped = stopped_run(folder)
            raise ModelFileError(f"a compressed model folder holds tnviz.json and model.safetensors; {str(p)!r} is "
                                 f"missing" + (f": the folder is not written yet; {stopped}" if stopped else ""))
    try:
        report = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"tnviz.json must be valid JSON; {exc}") from None
    if not isinstance(report, dict) or report.get("format") != FORMAT:
        raise ModelFileError(f"tnviz.json must have format {FORMAT!r}; got "
                             f"{report.get('format') if isinstance(report, dict) else type(report).__name__!r}")
    if report.get("version") not in (1, VERSION):
        raise _manifest_error(f"must be version 1 or {VERSION}; got {report.get('version')!r}")
    layers_info, untouched_names = report.get("layers"), report.get("untouched", [])
    if not isinstance(layers_info, list) or not isinstance(untouched_names, list) \
            or not all(isinstance(n, str) for n in untouched_names):
        raise _manifest_error("must list 'layers' (objects) and 'untouched' (tensor names)")
    checked = [_check_layer(info, k) for k, info in enumerate(layers_info)]
    header = _header(weights_path)
    expected: dict[str, tuple[str, tuple[int, ...]]] = {}
    for (name, shape, dtype, net) in checked:
        for t, t_shape in zip(net.tensor_names, net.shapes):
            expected[f"{name}{SEPARATOR}{t}"] = (dtype, tuple(t_shape))
    for key, (dtype, shape) in expected.items():
        entry = header.get(key)
        if entry is None:
            raise ModelFileError(f"model.safetensors must hold every factor tnviz.json names; {key!r} is missing "
                                 f"(the folder is incomplete or mixed from two runs)")
        got = (ST_TO_TORCH.get(entry.get("dtype"), entry.get("dtype")), tuple(entry.get("shape", ())))
        if got != (dtype, shape):
            raise ModelFileError(f"factor {key!r} must be {dtype} {shape} as tnviz.json says; model.safetensors has "
                                 f"{got[0]} {got[1]} (the folder is mixed from two runs)")
    missing = [n for n in untouched_names if n not in header]
    if missing:
        raise ModelFileError(f"model.safetensors must hold every tensor tnviz.json lists; missing {missing[:5]} "
                             f"({len(missing)} in all)")
    unlisted = sorted(set(header) - set(expected) - set(untouched_names))
    if unlisted:
        raise ModelFileError(f"model.safetensors must hold only the tensors tnviz.json lists; it also has {unlisted[:5]} "
                             f"(the folder is mixed from two runs)")
    permutations = report.get("permutations", [])
    if permutations:  # the order search's: each checked against the tensors it names, before any is read
        from .permute import check_record

        if not isinstance(permutations, list):
            raise _manifest_error(f"must list 'permutations' as objects; got {type(permutations).__name__}")
        shapes = {n: tuple(header[n].get("shape", ())) for n in untouched_names}
        shapes.update({name: shape[::-1] if info.get("transposed") else shape
                       for (name, shape, _, _), info in zip(checked, layers_info)})
        permutations = [check_record(rec, k, shapes) for k, rec in enumerate(permutations)]
    files = report.get("files", {}).get(WEIGHTS_FILE) if isinstance(report.get("files"), dict) else None
    if files is not None and verify:
        size = weights_path.stat().st_size
        if size != files.get("bytes"):
            raise ModelFileError(f"model.safetensors must have the {files.get('bytes')} bytes tnviz.json records; it has "
                                 f"{size} (the folder is mixed from two runs, or the file was changed)")
        if _sha256(weights_path) != files.get("sha256"):
            raise ModelFileError("model.safetensors must have the SHA-256 tnviz.json records; it differs (the folder "
                                 "is mixed from two runs, or the file was changed)")
    dev = "cpu" if device is None else str(device)
    layers: dict[str, CompressedLayer] = {}
    untouched: dict[str, Any] = {}
    try:
        with safe_open(str(weights_path), framework="pt", device=dev) as fh:
            for (name, shape, dtype, net), info in zip(checked, layers_info):
                tensors = {t: fh.get_tensor(f"{name}{SEPARATOR}{t}") for t in net.tensor_names}
                layers[name] = CompressedLayer(name, shape, dtype, net, tensors, info)
            for name in untouched_names:
                untouched[name] = fh.get_tensor(name)
    except Exception as exc:  # safetensors raises its own types for truncated/corrupt files
        raise ModelFileError(f"model.safetensors must be a complete safetensors file; reading it failed: {exc}") from None
    if permutations:  # dense tensors are stored in the input's order, the factors in the searched one:
        from .permute import permute_tensors  # re-order the dense ones so that the two agree

        for rec in permutations:
            untouched = permute_tensors(untouched, rec)
    return CompressedModel(layers, untouched, report)


def load_into(model: "nn.Module", folder: str | os.PathLike, strategy: str = "auto") -> "nn.Module":
    """Put the TN layers of a compressed folder into ``model`` (same architecture, in place) and load
    every other tensor; returns the model in eval mode.  Refuses a folder that does not fit."""
    return _swap_in(model, load_compressed(folder), strategy)


def _swap_in(model: "nn.Module", saved: CompressedModel, strategy: str = "auto") -> "nn.Module":
    import torch
    from torch import nn

    from ..nn import TNConv2d, TNEmbedding, TNLinear
    from .surgery import set_module, tie_layer

    if not isinstance(model, nn.Module):
        raise ModelFileError(f"into must be the original architecture as an nn.Module; got {type(model).__name__}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    modules = dict(model.named_modules())
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}  # a tied lm_head.weight -> the embedding's name: loaded with it
    for n, p in model.named_parameters(remove_duplicate=False):
        aliases.update({n: first[id(p)]} if id(p) in first else {})
        first.setdefault(id(p), n)
    keys = {v: k for k, v in (saved.report.get("key_map") or {}).items()}  # file name -> model name
    rest = {keys.get(k, k): v for k, v in saved.untouched.items()}
    own = model.state_dict()
    for name, layer in saved.layers.items():
        path = layer.module
        original = modules.get(path)
        stored = tuple(layer.shape)[::-1] if layer.transposed else tuple(layer.shape)
        if original is None or not hasattr(original, "weight") or tuple(original.weight.shape) != stored:
            got = "no such module" if original is None else (
                f"weight shape {tuple(original.weight.shape)}" if hasattr(original, "weight") else "no weight")
            raise ModelFileError(f"the model must have a module {path!r} with weight shape {stored} to take the "
                                 f"compressed layer {name!r}; it has {got}")
        tensors = {k: v.to(device) for k, v in layer.tensors.items()}
        bias = rest.pop(f"{path}.bias", None)
        if isinstance(original, nn.Conv2d):
            new = TNConv2d(layer.network, original.in_channels, original.kernel_size, original.stride, original.padding,
                           original.dilation, bias is not None, device=device, dtype=tensors[next(iter(tensors))].dtype,
                           strategy=strategy)
            new.linear.load_tensors(tensors)
            if bias is not None:
                with torch.no_grad():
                    new.linear.bias.copy_(bias)
        else:
            lin = TNLinear.from_tensors(layer.network, tensors, None if bias is None else bias.to(device),
                                        strategy=strategy)
            new = TNEmbedding(lin, original.padding_idx) if isinstance(original, nn.Embedding) else lin
        set_module(model, path, new)
        for alias in layer.tied:
            alias_path = alias.removesuffix(".weight")
            if alias_path not in modules:
                raise ModelFileError(f"the model must have a module {alias_path!r}, tied to {path!r} in the folder; "
                                     f"it has none")
            tie_layer(model, alias_path, new)
    tn_prefixes = tuple(f"{p}." for layer in saved.layers.values()
                        for p in (layer.module, *(t.removesuffix(".weight") for t in layer.tied)))
    state = {k: v.to(device) for k, v in rest.items() if k in own}  # a file may hold tensors the model has not
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(tn_prefixes) and not (k in aliases and aliases[k] in state)]
    if unexpected or missing:
        raise ModelFileError(f"the folder's tensors must match the model's; missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    return model.eval()

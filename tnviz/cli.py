"""The ``tnviz`` command line: the same engine as the app, for scripts and batch jobs.

User mistakes print one line on stderr and exit with status 2; no tracebacks.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import TnvizError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake on one line (exit 2) instead of a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _fail(message: str) -> int:
    # (review) one plain line: drop terminal escapes and newlines that wrapped errors (e.g. torch's) carry
    message = " ".join(_ANSI.sub("", message).split())
    print(f"tnviz: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _human(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.4g}"


def _app_path() -> Path:
    return Path(__file__).resolve().parent.parent / "app" / "streamlit_app.py"


# ---------------------------------------------------------------------- commands
def cmd_app(args: argparse.Namespace) -> int:
    path = _app_path()
    if not path.is_file():
        return _fail(f"the app needs the repository checkout (pip install -e .); {str(path)!r} is missing")
    cmd = [sys.executable, "-m", "streamlit", "run", str(path), "--server.port", str(args.port),
           "--browser.gatherUsageStats", "false"]
    if args.headless:
        cmd += ["--server.headless", "true"]
    return subprocess.call(cmd)


def cmd_cost(args: argparse.Namespace) -> int:
    from .cost import batch_sweep, cost
    from .network import load_network

    net = load_network(args.spec)
    report = cost(net, batch=args.batch, optimize=args.optimize)
    sweep = batch_sweep(net, optimize=args.optimize)
    if args.json:
        d = report.to_dict()
        d["crossovers"] = [{"batch": b, "cheaper": w} for b, w in sweep.crossovers]
        print(json.dumps(d, indent=2))
        return 0
    print(f"{net.name or args.spec}: {net.in_features} -> {net.out_features}, {len(net.tensors)} tensors")
    print(f"  einsum            {net.layer_equation()}")
    print(f"  parameters        {report.params:,} (dense {report.dense_params:,}, {report.compression:.1f}x smaller)")
    print(f"  forward FLOPs     {_human(report.flops)} at batch {args.batch} (dense {_human(report.dense_flops)}, "
          f"{report.dense_flops / report.flops:.2f}x)")
    print(f"  backward FLOPs    {_human(report.backward_flops)} (dense {_human(report.dense_backward_flops)})")
    print(f"  rebuild + matmul  {_human(report.rebuild_flops)} (rebuild alone {_human(report.reconstruct_flops)})")
    print(f"  peak memory       {report.peak_elements:,} elements = {report.peak_bytes('float32') / 2**20:.2f} MiB float32")
    print(f"  cheaper strategy  {report.best_strategy} at this batch")
    for b, w in sweep.crossovers:
        print(f"  crossover         from batch {b} on, {w} is cheaper")
    print(f"  path ({args.optimize}):")
    for k, s in enumerate(report.steps, 1):
        print(f"    {k}. {' * '.join(s.operands)} -> {s.result}[{','.join(s.result_indices)}]  "
              f"{_human(s.flops)} FLOPs, {s.size:,} elements")
    for w in report.warnings:
        print(f"  warning: {w}")
    return 0


def cmd_stack(args: argparse.Namespace) -> int:
    from .network import load_network
    from .stack import stack_report

    net = load_network(args.spec)
    report = stack_report(net, seed=args.seed)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{net.name or args.spec}: {len(report['views'])} equivalent stack views")
    for view in report["views"]:
        print(f"  {view['name']}: max |product - dense| = {view['max_abs_diff']:.2e}")
        for k, layer in enumerate(view["layers"], 1):
            print(f"    {k}. {layer['in_size']} -> {layer['out_size']}  density {layer['density']:.3g}  "
                  f"{_human(layer['flops'])} FLOPs/sample")
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from .model.compress import compress_file

    truncation = {k: v for k, v in (("max_rank", args.max_rank), ("rtol", args.rtol), ("ratio", args.ratio))
                  if v is not None}
    if len(truncation) > 1:
        return _fail(f"choose one truncation of --max-rank, --rtol, --ratio; got {sorted(truncation)}")
    report = compress_file(
        args.model, args.output, method=args.method, layers=args.layers, device=args.device,
        progress=not args.json and sys.stderr.isatty(), **truncation,
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for layer in report["layers"]:
        print(f"  {layer['name']:<50} {str(tuple(layer['shape'])):<16} {layer['params_before']:>10,} -> "
              f"{layer['params_after']:>9,}  err {layer['rel_error']:.3g}")
    t = report["totals"]
    print(f"{len(report['layers'])} weights: {t['params_before']:,} -> {t['params_after']:,} parameters "
          f"({t['params_before'] / max(t['params_after'], 1):.2f}x) in {report['seconds']:.2f} s on {report['device']}")
    print(f"wrote {args.output}/model.safetensors and {args.output}/tnviz.json")
    return 0


def cmd_spectra(args: argparse.Namespace) -> int:
    from .model.compress import spectra_file

    report = spectra_file(args.model, layers=args.layers, method=args.method, device=args.device)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for layer in report["layers"]:
        print(f"{layer['name']} {tuple(layer['shape'])} ({layer['method']})")
        for bond, info in layer["bonds"].items():
            sv = info["singular_values"]
            print(f"  {bond}: {len(sv)} values, top {sv[0]:.3g}, min {sv[-1]:.3g}, entropy {info['entropy']:.3f}")
    return 0


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from .cost import OPTIMIZERS

    parser = _Parser(prog="tnviz", description="Design, cost, decompose and run tensorized neural-network layers.")
    parser.add_argument("--version", action="version", version=f"tnviz {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("app", help="start the Streamlit app")
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("cost", help="parameters, FLOPs, memory and contraction path of a network JSON")
    p.add_argument("spec", help="network JSON file (format tnviz.network, version 1)")
    p.add_argument("--batch", type=_positive_int, default=1, help="batch size (default 1)")
    p.add_argument("--optimize", choices=list(OPTIMIZERS), default="auto", help="path optimizer (default auto)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser("stack", help="the equivalent stack views (sparse FC layers) of a network JSON")
    p.add_argument("spec")
    p.add_argument("--seed", type=int, default=0, help="seed of the random tensors and gauge (default 0)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stack)

    methods = ["mpo", "tr", "tucker", "cp", "svd"]
    p = sub.add_parser("compress", help="tensorize the weights of a .safetensors / state_dict .pt file")
    p.add_argument("model", help="a .safetensors file, a state_dict .pt/.pth, or a zipped Hugging Face folder")
    p.add_argument("--method", choices=methods, default="mpo")
    p.add_argument("--max-rank", type=_positive_int, dest="max_rank", help="largest rank of every bond")
    p.add_argument("--rtol", type=_fraction, help="relative Frobenius error per weight (0 < E < 1)")
    p.add_argument("--ratio", type=_above_one, help="target compression ratio of the selected weights (> 1)")
    p.add_argument("--layers", default=None, help="regular expression selecting weight names")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("spectra", help="bond singular values of every selected weight")
    p.add_argument("model")
    p.add_argument("--layers", default=None, help="regular expression selecting weight names")
    # (review) CP has no bond singular values: refuse it at parsing, not with a rank error
    p.add_argument("--method", choices=[m for m in methods if m != "cp"], default="mpo",
                   help="decomposition whose bonds are shown (CP has no singular values)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_spectra)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1; got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive); got {value}")
    return value


def _above_one(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number above 1; got {text!r}") from None
    if not value > 1:
        raise argparse.ArgumentTypeError(f"must be above 1 (dense size / compressed size); got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except TnvizError as exc:
        return _fail(str(exc))
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        return _fail(f"cannot read {exc.filename!r}: {exc.strerror}")
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stdout = open(os.devnull, "w")
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

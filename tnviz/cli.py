"""The ``tnviz`` command line: the same engine as the app, for scripts and batch jobs.

User mistakes print one line on stderr and exit with status 2; no tracebacks.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

from ._runtime import import_torch
from .errors import TnvizError, plain_message

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake on one line (exit 2) instead of a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _fail(message: "str | BaseException") -> int:
    # one plain line: drop terminal escapes and newlines that wrapped errors (e.g. torch's) carry
    print(f"tnviz: error: {plain_message(message)}", file=sys.stderr)
    return EXIT_USAGE


def _human(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.4g}"


def _app_path() -> Path:
    """The app's entry script: the ``tnviz_app`` package installed beside ``tnviz``."""
    spec = importlib.util.find_spec("tnviz_app")
    if spec is None or not spec.submodule_search_locations:
        return Path(__file__).resolve().parent.parent / "tnviz_app" / "streamlit_app.py"
    return Path(next(iter(spec.submodule_search_locations))) / "streamlit_app.py"


# ---------------------------------------------------------------------- commands
def _max_upload_mb() -> int:
    from .model.io import MAX_UPLOAD_BYTES

    return MAX_UPLOAD_BYTES // 2**20


#: Largest upload the app accepts (MB), set deliberately rather than left to Streamlit's default.
APP_MAX_UPLOAD_MB = _max_upload_mb()


def app_command(args: argparse.Namespace) -> list[str]:
    """The ``streamlit run`` command of ``tnviz app``, started through :mod:`tnviz_app.serve` (which
    imports the pages' modules before the server starts, so the first visitor does not wait for
    them): served on this machine only unless ``--host`` says otherwise (the app has no
    authentication), uploads capped at :data:`APP_MAX_UPLOAD_MB`, error details (tracebacks)
    shown only to a local user, and no file watcher: Streamlit reruns a page when its source
    changes, a developer's tool that resolved the path of every loaded module (torch's thousands
    included) on the server's event loop, and a user's first move off the Designer waited
    0.17 s for it (2-core CPU, 2026-12-07)."""
    local = args.host in ("localhost", "127.0.0.1", "::1")
    server = "tnviz_app.serve" if importlib.util.find_spec("tnviz_app") is not None else "streamlit"
    cmd = [sys.executable, "-m", server, "run", str(_app_path()), "--server.port", str(args.port),
           "--server.address", args.host, "--server.maxUploadSize", str(APP_MAX_UPLOAD_MB),
           "--client.showErrorDetails", "true" if local else "false", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    if args.headless:
        cmd += ["--server.headless", "true"]
    return cmd


def cmd_app(args: argparse.Namespace) -> int:
    path = _app_path()
    if not path.is_file():
        return _fail(f"the app needs its pages next to the package; {str(path)!r} is missing")
    if args.host not in ("localhost", "127.0.0.1", "::1"):
        print(f"tnviz: serving on {args.host}:{args.port} to every machine that can reach this one; the app has "
              f"no authentication", file=sys.stderr)
    return subprocess.call(app_command(args))


def cmd_cost(args: argparse.Namespace) -> int:
    from .cost import batch_sweep, cost
    from .network import load_network
    from .nn.strategies import decisions

    net = load_network(args.spec)
    report = cost(net, batch=args.batch, optimize=args.optimize)
    # only the crossovers are printed: the optimizer's path at every batch is not needed
    sweep = batch_sweep(net, optimize=args.optimize, include_best=False)
    chosen = decisions(net, args.batch)
    if args.json:
        d = report.to_dict()
        d["strategy"] = {mode: (c.to_dict() if not isinstance(c, Exception) else {"strategy": None, "error": str(c)})
                         for mode, c in chosen.items()}
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
    for mode, c in chosen.items():
        if isinstance(c, Exception):
            print(f"  {mode + ' runs':<17} nothing: {c}")
            continue
        how = "timed at its first call; modelled" if c.measured else "modelled"
        how += " cost in FLOP-equivalents"
        print(f"  {mode + ' runs':<17} {c.strategy} ({how}: "
              + ", ".join(f"{name} {_human(e)}" for name, e in sorted(c.estimates.items(), key=lambda kv: kv[1]))
              + ")")
    for b, w in sweep.crossovers:
        print(f"  FLOPs crossover   from batch {b} on, {w} costs fewer FLOPs")
    if report.searched:
        print("  searched          " + ", ".join(f"{name} {_human(flops)}" for name, flops in report.searched)
              + "".join(f"; {name} skipped ({why})" for name, why in report.skipped))
    print(f"  path ({report.path_note}):")
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


class _Bar:
    """A one-line progress bar on stderr, sized by the first update (the library reports progress
    through a callback; the CLI draws it here, the app with ``st.progress``)."""

    def __init__(self) -> None:
        self.stream, self.t0, self.drawn = sys.stderr, time.perf_counter(), False

    def __call__(self, done: int, total: int, label: str) -> None:
        width = 30
        filled = int(width * done / max(total, 1))
        elapsed = time.perf_counter() - self.t0
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {elapsed:5.1f}s {label[:40]:<40}")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def cmd_compress(args: argparse.Namespace) -> int:
    from .model.compress import compress
    from .model.plan import truncation_from

    flags = {"--max-rank": args.max_rank, "--rtol": args.rtol, "--energy": args.energy, "--ratio": args.ratio,
             "--target-ratio": args.target_ratio, "--error-budget": args.error_budget}
    chosen = [flag for flag, value in flags.items() if value is not None]
    if len(chosen) != 1:
        return _fail(f"choose exactly one of {', '.join(flags)}; got {chosen or 'none'}")
    given = truncation_from(max_rank=args.max_rank, rtol=args.rtol, energy=args.energy, ratio=args.ratio,
                            target_ratio=args.target_ratio, error_budget=args.error_budget)
    from .model.device import resolve_device
    from .model.distributed import init_from_env, rank

    # under torchrun every process joins the group (nccl when the run is on CUDA, each rank on the
    # GPU of its LOCAL_RANK; gloo on the CPU) and takes its share of the weights; rank 0 alone
    # draws the bar, writes the folder and prints
    joined = init_from_env(resolve_device(args.device))
    lead = rank() == 0
    bar = _Bar() if lead and not args.json and sys.stderr.isatty() else None
    try:
        result = compress(args.model, args.output if lead else None, method=args.method, layers=args.layers,
                          truncation=given if "target" not in given else None, target=given.get("target"),
                          data_aware=False if args.no_data_aware else None, heal=args.heal, heal_steps=args.heal_steps,
                          device=args.device, progress=bar, overwrite=args.overwrite, dense=args.dense,
                          resume=args.resume, order_search=args.order_search, blockwise=args.blockwise,
                          distributed=True if joined else None)
    finally:
        if bar:
            bar.close()
        if joined:
            import torch.distributed as dist

            dist.destroy_process_group()
    if not lead:
        return 0
    report = result.report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    block = None
    for layer in report["layers"]:
        if layer.get("block") is not None and layer["block"] != block:  # the table grouped by block
            block = layer["block"]
            print(f"block {block}")
        on_data = "" if layer.get("data_error") is None else f", on calibration data {layer['data_error']:.3g}"
        print(f"  {layer['name']:<50} {str(tuple(layer['shape'])):<16} {layer['params_before']:>10,} -> "
              f"{layer['params_after']:>9,}  weight error {layer['rel_error']:.3g}{on_data}")
        if layer.get("search"):
            from .model.auto import describe_choice

            chosen, runner = describe_choice(layer["search"])
            print(f"    auto chose {chosen}; runner-up {runner} ({len(layer['search']['candidates'])} candidates, "
                  f"{layer['search']['seconds']:.2f} s)")
    for skipped in report.get("skipped", []):
        print(f"  {skipped['name']:<50} kept dense: {skipped['reason']}")
    for p in report.get("permutations", []):
        print(f"  neuron order of {p['pair']}: searched order adopted, error at ranks {p['ranks']} {p['error_before']:.4g} -> "
              f"{p['error_after']:.4g} ({p['start']} start, {p['seconds']:.2f} s)")
    for note in report.get("order_notes", []):
        print(f"  neuron order of {note['pair']}: {note['reason']}")
    t = report["totals"]
    print(f"{len(report['layers'])} weights: {t['params_before']:,} -> {t['params_after']:,} parameters "
          f"({t['ratio']:.2f}x) in {report['seconds']:.2f} s on {report['device']}"
          + (f", spread over {report['world_size']} ranks ({report['backend']})" if report.get("backend") else ""))
    for stage, values in (report.get("functional") or {}).items():
        print(f"  {stage:<11} " + ", ".join(f"{k} {v:.4f}" for k, v in values.items() if isinstance(v, (int, float))))
    for outcome in result.heals:
        print(f"  {outcome.report_line(result.subject.metric)}")
    if args.dense:
        print(f"wrote {args.output}/model.safetensors (dense, rebuilt from the networks) beside the input's config "
              f"and tokenizer: a plain Hugging Face folder")
    else:
        print(f"wrote {args.output}/model.safetensors and {args.output}/tnviz.json")
    return 0


def cmd_spectra(args: argparse.Namespace) -> int:
    from .model.spectra import spectra_file

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
    from .cost import DEFAULT_OPTIMIZER, OPTIMIZERS

    parser = _Parser(prog="tnviz", description="Design, cost, decompose and run tensorized neural-network layers.")
    parser.add_argument("--version", action="version", version=f"tnviz {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("app", help="start the Streamlit app (on this machine only, unless --host says otherwise)")
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    p.add_argument("--host", default="localhost",
                   help="address to listen on (default localhost: this machine only; 0.0.0.0 shares the app, which "
                        "has no authentication, with every machine that can reach this one)")
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("cost", help="parameters, FLOPs, memory and contraction path of a network JSON")
    p.add_argument("spec", help="network JSON file (format tnviz.network, version 1)")
    p.add_argument("--batch", type=_positive_int, default=1, help="batch size (default 1)")
    p.add_argument("--optimize", choices=list(OPTIMIZERS), default=DEFAULT_OPTIMIZER,
                   help=f"path optimizer (default {DEFAULT_OPTIMIZER}: the cheapest path of the searches that fit "
                        "the network's size)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser("stack", help="the equivalent stack views (sparse FC layers) of a network JSON")
    p.add_argument("spec")
    p.add_argument("--seed", type=int, default=0, help="seed of the random tensors and gauge (default 0)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stack)

    from .decompose import DECOMPOSITIONS

    methods = list(DECOMPOSITIONS)
    p = sub.add_parser("compress", help="tensorize a model: a weights file, a zipped Hugging Face folder or a demo")
    p.add_argument("model", help="a .safetensors file, a state_dict .pt/.pth, a zipped Hugging Face folder "
                                 "(config.json + model.safetensors), or a demo: digits-mlp, digits-cnn, minilm")
    p.add_argument("--method", choices=[*methods, "auto"], default="mpo",
                   help="decomposition of every selected weight; auto: per weight, the method, legs and leg "
                        "placement with the lowest (data) error at its parameter budget (needs --ratio, "
                        "--target-ratio or --error-budget)")
    p.add_argument("--max-rank", type=_positive_int, dest="max_rank", help="largest rank of every bond")
    p.add_argument("--rtol", type=_fraction, help="relative Frobenius error per weight (0 < E < 1)")
    p.add_argument("--energy", type=_fraction, help="kept spectral energy per bond (0 < E < 1)")
    p.add_argument("--ratio", type=_above_one, help="compression ratio asked of every selected weight (> 1)")
    p.add_argument("--target-ratio", type=_above_one, dest="target_ratio",
                   help="one ratio for all selected weights, spread over them by sensitivity (> 1)")
    p.add_argument("--error-budget", type=_fraction, dest="error_budget",
                   help="one error budget (RMS relative error over the selected weights), spread over them")
    p.add_argument("--layers", default=None, help="regular expression selecting weight (file) or module (model) names")
    p.add_argument("--no-data-aware", action="store_true", dest="no_data_aware",
                   help="models: decompose the weights alone instead of minimising the error on calibration inputs")
    p.add_argument("--heal", choices=_Choices("tnviz.model.heal", "HEALINGS"), default=None, metavar="MODE",
                   help="models: a short fine-tune after compression, one of %(choices)s (layer-wise: each TN layer "
                        "to the original layer's outputs; distill: all TN layers jointly to the original model's "
                        "outputs; end-to-end: digits demos, on their labels); kept only if it helps the held-out metric")
    p.add_argument("--heal-steps", type=_positive_int, default=None, dest="heal_steps",
                   help="steps per layer (layer-wise), optimizer steps (distill) or epochs (end-to-end); "
                        "default: each healing's own")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("-o", "--output", required=True,
                   help="output folder: new, empty, or an earlier tnviz output (replaced only with --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier tnviz output in the output folder (never the input, never other files)")
    p.add_argument("--resume", action="store_true",
                   help="continue a run into the same -o that was stopped (killed): the weights it finished are "
                        "taken from its progress beside the output; the folder is the uninterrupted run's")
    p.add_argument("--dense", action="store_true",
                   help="write a plain Hugging Face folder instead: dense weights rebuilt from the networks, the "
                        "input's config.json and tokenizer copied (transformers loads it without tnviz)")
    p.add_argument("--order-search", action="store_true", dest="order_search",
                   help="re-order the hidden neurons of each feed-forward pair (the function is unchanged) so its "
                        "MPO is more compressible; the folder stores the order and loading applies it")
    whole = p.add_mutually_exclusive_group()
    whole.add_argument("--blockwise", action="store_const", const=True, default=None,
                       help="causal LMs (LLaMA, Mistral, Qwen2, GPT-2 folders): data-aware, one decoder block at a "
                            "time, with one block's weights in memory, each block calibrated on the compressed blocks' "
                            "output (default: when the whole model would not fit in the memory available, or in "
                            "TNVIZ_MEMORY_BUDGET GiB)")
    whole.add_argument("--no-blockwise", action="store_const", const=False, dest="blockwise",
                       help="hold the whole model, whatever its size (every layer calibrated on the original model)")
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


class _Choices:
    """The names of a registry that imports torch, read only when argparse checks a value or prints
    help: ``tnviz cost`` and ``tnviz --version`` stay light."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def _names(self) -> list[str]:
        import importlib

        return list(getattr(importlib.import_module(self.module), self.name))

    def __iter__(self):
        return iter(self._names())

    def __contains__(self, value: object) -> bool:
        return value in self._names()


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
    # torch's and transformers' warnings (deprecations, "some weights were not used") are not the
    # user's to act on; an error is one line, and a success prints tnviz's own warnings only
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if args.func in (cmd_compress, cmd_spectra):  # the commands that run the engine's torch code
                import_torch()
            code = args.func(args)
        except TnvizError as exc:
            return _fail(exc)
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            return _fail(f"cannot read {exc.filename!r}: {exc.strerror}")
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:  # e.g. piped into `head`
            sys.stdout = open(os.devnull, "w")
            return 0
    for w in caught:
        if w.filename.startswith(str(Path(__file__).resolve().parent)):
            print(f"tnviz: warning: {w.message}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The CLI as a user runs it: a real subprocess, JSON output, exit codes, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import tnviz


def run(*args: str):
    return subprocess.run([sys.executable, "-m", "tnviz.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def spec(tmp_path):
    return str(tnviz.save_network(tnviz.mpo([8, 8, 8, 8], [8, 8, 8, 8], 4), tmp_path / "mpo.json"))


def test_cost_json_has_the_contract_keys_and_the_engine_values(spec):
    out = run("cost", spec, "--batch", "1024", "--optimize", "dp", "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    expected = tnviz.cost(tnviz.load_network(spec), batch=1024, optimize="dp")
    for key in ("params", "dense_params", "flops", "dense_flops", "backward_flops", "reconstruct_flops",
                "peak_elements"):
        assert d[key] == getattr(expected, key), key
    assert d["dense_flops"] == 2 * 1024 * 4096 * 4096
    assert d["path"] == [list(p) for p in expected.path]
    assert len(d["steps"]) == 4 and {"operands", "flops", "size"} <= set(d["steps"][0])
    assert "crossovers" in d


def test_cost_says_the_strategy_the_layer_itself_runs():
    """Issue 13.3: the CLI said 'factorized' (FLOPs of two einsum ways) for the bundled MPO at batch
    1024 while TNLinear ran 'chain'.  The answer is now the layer's own: a real layer, run in both
    modes at that batch, records the strategy the JSON and the human output name."""
    from tnviz.nn import TNLinear
    spec = str(Path(tnviz.__file__).parents[1] / "tnviz_app" / "examples" / "mpo_4096x4096.json")
    out = run("cost", spec, "--batch", "1024", "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert "best_strategy" not in d
    layer = TNLinear(tnviz.load_network(spec))
    x = torch.randn(1024, 4096)
    layer.train()
    layer(x)
    trained = layer.last_strategy
    layer.eval()
    with torch.no_grad():
        layer(x)
    assert d["strategy"]["inference"]["strategy"] == layer.last_strategy == "chain"
    assert d["strategy"]["training"]["strategy"] == trained == "chain"
    est = d["strategy"]["inference"]["estimates"]
    assert min(est, key=est.get) == "chain" and set(est) == {"chain", "factorized", "rebuilt"}
    human = run("cost", spec, "--batch", "1024").stdout
    assert "inference runs    chain (modelled cost in FLOP-equivalents: chain " in human
    assert "training runs     chain" in human and "cheaper strategy" not in human


def test_cost_human_output(spec):
    out = run("cost", spec, "--batch", "64")
    assert out.returncode == 0
    assert "parameters        2,560 (dense 16,777,216" in out.stdout
    # the default is the best path found, and the output says which search found it
    expected = tnviz.cost(tnviz.load_network(spec), batch=64)
    assert f"path (best: {expected.path_optimizer}, of " in out.stdout
    assert "searched          optimal " in out.stdout
    explicit = run("cost", spec, "--batch", "64", "--optimize", "auto")
    assert "path (auto):" in explicit.stdout


@pytest.mark.parametrize("args,message", [
    (("cost", "/nonexistent/net.json"), "a network file must exist"),
    (("cost", "SPEC", "--batch", "0"), "must be a positive integer; got 0"),
    (("cost", "SPEC", "--batch", "abc"), "must be a positive integer; got 'abc'"),
    (("cost", "SPEC", "--optimize", "fast"), "invalid choice: 'fast'"),
    (("cost", "BAD"), "'version' field must be 1; got 7"),
    (("cost", "NOTJSON"), "must be valid JSON"),
    (("frobnicate",), "invalid choice: 'frobnicate'"),
    (("compress", "SPEC", "-o", "x", "--rtol", "2"), "between 0 and 1"),
    (("compress", "SPEC", "-o", "x", "--ratio", "0.5"), "must be above 1"),
])
def test_user_mistakes_are_one_line_with_exit_code_2(args, message, spec, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "tnviz.network", "version": 7, "sizes": {}, "tensors": []}))
    notjson = tmp_path / "x.json"
    notjson.write_text("{ nope")
    args = tuple({"SPEC": spec, "BAD": str(bad), "NOTJSON": str(notjson)}.get(a, a) for a in args)
    out = run(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr


def test_help_lists_every_command():
    out = run("--help")
    assert out.returncode == 0
    for command in ("app", "cost", "stack", "compress", "spectra"):
        assert command in out.stdout


def test_stack_json_every_view_multiplies_to_the_dense_matrix(spec):
    out = run("stack", spec, "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    names = [v["name"] for v in d["views"]]
    assert {"left-to-right", "right-to-left", "grouped", "gauge"} <= set(names)
    for view in d["views"]:
        assert view["max_abs_diff"] < 1e-9
        sizes = [(layer["in_size"], layer["out_size"]) for layer in view["layers"]]
        assert sizes[0][0] == 4096 and sizes[-1][1] == 4096
        assert all(a[1] == b[0] for a, b in zip(sizes, sizes[1:]))  # the layers chain


def test_library_names_of_the_spec_exist():
    for name in ("load_network", "mpo", "tensor_ring", "tucker", "cp", "from_einsum", "cost", "stack_views",
                 "compress", "load_compressed"):
        assert callable(getattr(tnviz, name)), name
    assert callable(tnviz.TensorNetwork.to_json)
    # tnviz.decompose is the function of SPEC 2.3 and still the package
    import torch

    W = torch.randn(12, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    dec = tnviz.decompose(W, "svd", max_rank=3)
    assert dec.network.params == 3 * (12 + 20)
    assert dec.rel_error > 0.1  # a random 12x20 weight is not rank 3
    assert set(tnviz.decompose.DECOMPOSITIONS) == {"mpo", "tr", "tucker", "cp", "svd"}
    from tnviz.nn import TNLinear  # noqa: F401  (the layer names of SPEC 2.3)
    from tnviz.nn import TNConv2d  # noqa: F401


def test_compress_a_demo_model_data_aware_with_its_functional_effect(tmp_path):
    out = run("compress", "digits-mlp", "--max-rank", "8", "-o", str(tmp_path / "mlp"), "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["data_aware"] is True
    assert {"original", "compressed"} <= set(d["functional"])
    assert d["functional"]["original"]["accuracy"] > 0.9
    assert d["totals"]["params_after"] < d["totals"]["params_before"]
    assert all(layer["data_error"] is not None for layer in d["layers"])
    back = tnviz.load_compressed(tmp_path / "mlp")
    assert set(back.layers) == {layer["name"] for layer in d["layers"]}


def test_compress_a_demo_model_and_distill_it(tmp_path):
    out = run("compress", "digits-mlp", "--max-rank", "4", "--heal", "distill", "--heal-steps", "5",
              "-o", str(tmp_path / "mlp"), "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert {"original", "compressed", "healed"} <= set(d["functional"])
    assert 0 <= d["functional"]["healed"]["accuracy"] <= 1


def test_model_only_options_are_refused_for_a_weights_file(tmp_path):
    """Healing needs an architecture; a global target works on a weights file too (one pipeline)."""
    path = tmp_path / "w.safetensors"
    save_file({"fc.weight": torch.randn(16, 16), "fc2.weight": torch.randn(16, 16)}, str(path))
    out = run("compress", str(path), "--heal", "distill", "--max-rank", "2", "-o", str(tmp_path / "o"))
    assert out.returncode == 2 and "holds weights only" in out.stderr and not (tmp_path / "o").exists()
    out = run("compress", str(path), "--method", "svd", "--target-ratio", "2", "-o", str(tmp_path / "o"), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["totals"]["ratio"] >= 1.9
    out = run("compress", str(path), "--max-rank", "2", "--ratio", "3", "-o", str(tmp_path / "o"))
    assert out.returncode == 2 and "choose exactly one" in out.stderr


# ---------------------------------------------------------------------- compress and spectra (tnviz.model)
def _low_rank(out_f, in_f, rank, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(out_f, rank, generator=g)
    b = torch.randn(rank, in_f, generator=g)
    return (a @ b / rank**0.5 + 0.01 * torch.randn(out_f, in_f, generator=g)).float()


@pytest.fixture
def model_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "fc1.weight": _low_rank(32, 48, 6, 1),
        "fc1.bias": torch.randn(32, generator=g),
        "fc2.weight": _low_rank(16, 64, 4, 2).to(torch.bfloat16),
        "head.weight": _low_rank(3, 16, 2, 3),
        "conv.weight": torch.randn(8, 4, 3, 3, generator=g),
        "norm.weight": torch.ones(32),
        "steps": torch.tensor([3, 1, 4], dtype=torch.int64),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    return path, tensors


def _cli(*args):
    return run(*args)


def test_cli_compress_json_and_errors(model_file, tmp_path):
    path, _ = model_file
    out = _cli("compress", str(path), "--method", "tucker", "--max-rank", "3", "-o", str(tmp_path / "c"), "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    for key in ("layers", "totals", "seconds", "device"):
        assert key in d
    assert {"name", "shape", "method", "params_before", "params_after", "rel_error", "ranks"} <= set(d["layers"][0])
    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(3, 3), module)
    bad = _cli("compress", str(module), "--max-rank", "2", "-o", str(tmp_path / "m"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    txt = tmp_path / "w.txt"
    txt.write_text("hello")
    bad = _cli("compress", str(txt), "--max-rank", "2", "-o", str(tmp_path / "m"))
    assert bad.returncode == 2 and ".safetensors" in bad.stderr


def _bad_file(kind: str, tmp_path: Path, good: Path) -> tuple[Path, str]:
    """A file a user might wrongly pass, and a phrase of the rule its error must state."""
    if kind == "truncated":
        path = tmp_path / "cut.safetensors"
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        return path, "truncated"
    if kind == "pickled module":
        path = tmp_path / "module.pt"
        torch.save(torch.nn.Linear(3, 3), path)
        return path, "must hold only tensors"
    if kind == "torchscript":
        path = tmp_path / "script.pt"
        torch.jit.save(torch.jit.script(torch.nn.Linear(3, 3)), str(path))
        return path, "TorchScript"
    if kind == "wrong extension":
        path = tmp_path / "model.onnx"
        path.write_bytes(good.read_bytes())
        return path, "must end in one of .safetensors"
    if kind == "no 2-D weights":
        path = tmp_path / "norms.safetensors"
        save_file({"ln.weight": torch.ones(8), "ln.bias": torch.zeros(8)}, str(path))
        return path, "at least one 2-D"
    if kind == "empty":
        path = tmp_path / "empty.safetensors"
        path.write_bytes(b"")
        return path, "must not be empty"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["truncated", "pickled module", "torchscript", "wrong extension", "no 2-D weights",
                                  "empty"])
@pytest.mark.parametrize("command", ["compress", "spectra"])
def test_cli_refuses_bad_files_with_one_plain_line(kind, command, model_file, tmp_path, capsys):
    from tnviz.cli import main  # in process: the subprocess path is covered above

    path, rule = _bad_file(kind, tmp_path, model_file[0])
    extra = ["--max-rank", "2", "-o", str(tmp_path / "out")] if command == "compress" else []
    code = main([command, str(path), *extra])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tnviz: error: "), err
    assert rule in lines[0] and "\x1b" not in lines[0]
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_cli_spectra_refuses_cp(model_file):
    bad = _cli("spectra", str(model_file[0]), "--method", "cp")
    assert bad.returncode == 2 and "invalid choice: 'cp'" in bad.stderr


def test_cli_spectra(model_file):
    path, _ = model_file
    out = _cli("spectra", str(path), "--layers", "fc1", "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    sv = next(iter(d["layers"][0]["bonds"].values()))["singular_values"]
    assert sv == sorted(sv, reverse=True) and sv[0] > 0


def test_cli_compress_draws_a_progress_bar_on_a_terminal_only(model_file, tmp_path):
    """stderr a terminal: a bar that reaches n/n; stderr a pipe (logs, CI): no bar, same stdout."""
    import os
    import pty

    path, _ = model_file
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "tnviz.cli", "compress", str(path), "--max-rank", "2", "-o",
                               str(tmp_path / "tty")], stdout=subprocess.PIPE, stderr=slave, text=True, timeout=300)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    assert proc.returncode == 0
    bar = b"".join(chunks).decode()
    total = len(json.loads((tmp_path / "tty" / "tnviz.json").read_text())["layers"]) + \
        len(json.loads((tmp_path / "tty" / "tnviz.json").read_text())["skipped"])
    assert "\r[" in bar and f"{total}/{total}" in bar and "done" in bar
    piped = _cli("compress", str(path), "--max-rank", "2", "-o", str(tmp_path / "pipe"))
    assert piped.returncode == 0 and piped.stderr == ""
    assert "weights:" in proc.stdout and "weights:" in piped.stdout


def test_library_warnings_stay_off_the_one_error_line(model_file, tmp_path, capsys, monkeypatch):
    """(issue 15 item 10) torch's and transformers' warnings added lines next to the one error line."""
    import warnings

    import tnviz.model.compress as compress_module
    from tnviz.cli import main
    from tnviz.errors import ModelFileError

    def noisy(*args, **kwargs):
        warnings.warn_explicit("TypedStorage is deprecated", UserWarning, torch.__file__, 1)
        raise ModelFileError("a weights file must be readable; it is not")

    monkeypatch.setattr(compress_module, "compress", noisy)
    code = main(["compress", str(model_file[0]), "--max-rank", "2", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == ["tnviz: error: a weights file must be readable; it is not"]


def test_the_app_is_served_on_this_machine_only_unless_asked(monkeypatch):
    """(issue 15 item 11) localhost by default, an explicit --host to share; the upload cap and the
    error details set deliberately (tracebacks only to a local user)."""
    from tnviz.cli import APP_MAX_UPLOAD_MB, app_command, build_parser

    def flags(*argv):
        cmd = app_command(build_parser().parse_args(["app", *argv]))
        return dict(zip(cmd[::1], cmd[1:]))

    local = flags()
    assert local["--server.address"] == "localhost" and local["--server.maxUploadSize"] == str(APP_MAX_UPLOAD_MB)
    assert local["--client.showErrorDetails"] == "true"
    assert local["--server.fileWatcherType"] == "none"  # a page's first visit no longer waits for it
    shared = flags("--host", "0.0.0.0", "--port", "9000")
    assert shared["--server.address"] == "0.0.0.0" and shared["--server.port"] == "9000"
    assert shared["--client.showErrorDetails"] == "false"
    from tnviz_app.components.subjects import MAX_UPLOAD_BYTES

    assert MAX_UPLOAD_BYTES == APP_MAX_UPLOAD_MB * 1024**2  # the page's own check says the same number


# ---------------------------------------------------------------------- oversized stacks (issue 15 item 5)
@pytest.mark.parametrize("net,message", [
    (tnviz.mpo([2, 2], [2, 2], ranks=10**9), "stack views draw random tensors for networks up to"),
    (tnviz.mpo([2, 2], [2, 2], ranks=10**7), "stack views draw random tensors for networks up to 16,777,216"),
    (tnviz.TensorNetwork.build([("A", ["i", "o"])], {"i": 10**9, "o": 2}, ["i"], ["o"], "one wide leg"),
     "a stack layer is limited to 262,144 inputs or outputs; 'one wide leg' has in_features = 1,000,000,000"),
    (tnviz.TensorNetwork.build([("A", ["i", "o"])], {"i": 10**9, "o": 1}, ["i"], ["o"], "one thin leg"),
     "a stack layer is limited to 262,144 inputs or outputs; 'one thin leg' has in_features = 1,000,000,000"),
    (tnviz.mpo([2] * 20, [2] * 20, ranks=1, name="40 legs of 2"),
     "a stack layer is limited to 262,144 inputs or outputs; '40 legs of 2' has in_features = 1,048,576"),
])
def test_stack_refuses_oversized_networks_from_their_shapes(net, message, tmp_path):
    # MemoryError tracebacks, or 29 s and 5 GB before the refusal
    spec = str(tnviz.save_network(net, tmp_path / "big.json"))
    out = run("stack", spec)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr and "MemoryError" not in out.stderr


def test_cost_json_says_which_search_found_the_path(spec):
    out = run("cost", spec, "--batch", "1024", "--json")
    d = json.loads(out.stdout)
    expected = tnviz.cost(tnviz.load_network(spec), batch=1024)
    assert d["optimize"] == "best" and d["flops"] == expected.flops == 2_684_354_560
    assert d["path_optimizer"] == expected.path_optimizer
    assert [s["optimizer"] for s in d["searched"]] == [n for n, _ in expected.searched]
    assert d["skipped"] == []


def test_cost_of_a_500_tensor_chain_finishes(tmp_path):
    # did not finish in 15 minutes (100 tensors: 6.9 s)
    spec = str(tnviz.save_network(tnviz.mpo([2] * 500, [2] * 500, ranks=2), tmp_path / "chain.json"))
    out = run("cost", spec, "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert len(d["steps"]) == 500 and {s["optimizer"] for s in d["searched"]} == {"input-first", "left-to-right"}


def test_fail_prints_one_plain_line():
    import io
    from contextlib import redirect_stderr

    from tnviz.cli import _fail

    err = io.StringIO()
    with redirect_stderr(err):
        assert _fail(tnviz.TnvizError("\x1b[31mred\x1b[0m and\nwrapped")) == 2
    assert err.getvalue() == "tnviz: error: red and wrapped\n"


def test_the_torch_import_pause_leaves_a_caller_s_collector_alone():
    # main() called from Python (here, with torch loaded) neither freezes the caller's objects nor
    # leaves the collector off; a fresh `tnviz compress` process imports torch with it paused
    import gc

    import torch  # noqa: F401  loaded first, so the call below must leave this process alone

    from tnviz import _runtime, cli

    assert cli.import_torch is _runtime.import_torch  # the one function the app's server uses too
    frozen = gc.get_freeze_count()
    assert cli.import_torch() is False
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    code = ("import gc, sys; from tnviz import cli; done = cli.import_torch(); "
            "print(done, gc.isenabled(), gc.get_freeze_count() > 0, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["True", "True", "True", "True"]

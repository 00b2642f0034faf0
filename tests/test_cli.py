"""The CLI as a user runs it: a real subprocess, JSON output, exit codes, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

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
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"fc.weight": torch.randn(16, 16)}, str(path))
    out = run("compress", str(path), "--target-ratio", "2", "-o", str(tmp_path / "o"))
    assert out.returncode == 2 and "holds weights only" in out.stderr
    out = run("compress", str(path), "--max-rank", "2", "--ratio", "3", "-o", str(tmp_path / "o"))
    assert out.returncode == 2 and "choose exactly one" in out.stderr


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

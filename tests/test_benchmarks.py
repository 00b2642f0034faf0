"""The benchmark scripts run (on CPU, tiny layers, one repeat): the GPU check hands
``bench_forward.run`` its own arguments, and a GPU session has minutes, not time to find out that
a field is missing.  Nothing here times anything."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_forward  # noqa: E402
import gpu_check  # noqa: E402


@pytest.mark.parametrize("mode", ["eval", "step"])
def test_gpu_checks_arguments_run_bench_forward(mode):
    ns = gpu_check.bench_namespace("mpo", mode, "float32", [2, 3], [2], [1, 3], repeats=1, device="cpu")
    ns.no_tltorch = True
    result = bench_forward.run(ns)
    assert {r["method"] for r in result["rows"]} >= {"nn.Linear", "TNLinear auto"}
    assert result["input_grad"] is False
    assert bench_forward.targets(result) and "| batch |" in bench_forward.markdown(result)


def test_bench_forward_command_line_step_with_input_grad(capsys):
    assert bench_forward.main(["--device", "cpu", "--mode", "step", "--input-grad", "--in-dims", "2", "3",
                               "--out-dims", "3", "2", "--ranks", "2", "--batches", "2", "--repeats", "1",
                               "--no-tltorch"]) == 0
    out = capsys.readouterr().out
    assert "input with gradient" in out and "SPEC 5 targets" in out


def test_bench_cuda_runs_its_rows_on_cpu():
    """The GPU script's second half (fused kernel, CUDA graphs) as a CPU smoke run: no kernel, no
    graphs, but every row, its error against the float64 reference, and the summary.  Without
    triton (an optional dependency) the fused rows are reported skipped, not failed."""
    import bench_cuda

    from tnviz.nn.fused_launch import triton_importable

    args = bench_cuda.parse_args(["--device", "cpu", "--dtypes", "float32", "--dims", "2", "3", "--ranks", "2",
                                  "--batches", "1", "4", "--step-batches", "4", "--repeats", "1"])
    result = bench_cuda.run(args)
    rows = result["rows"]
    assert {r["mode"] for r in rows} == {"eval", "step"}
    assert max(r["rel_error"] for r in rows) < 1e-5
    assert len(bench_cuda.summary(result)) == 1 + 3  # header, (batch 1, 4) eval and batch 4 step
    assert "| dtype |" in bench_cuda.markdown(result)
    fused_rows = [r for r in rows if r["method"].startswith("TNLinear fused")]
    if triton_importable():  # the strategy exists (its plan runs the chain on CPU)
        assert {r["mode"] for r in fused_rows} == {"eval", "step"} and not result["skipped"]
    else:
        assert not fused_rows
        assert result["skipped"] == ["TNLinear fused: skipped: triton is not installed (optional dependency)"]
        assert result["skipped"][0] in bench_cuda.markdown(result)
        # by column, not by word: the fastest method may be two words ("TNLinear chain")
        header, *lines = bench_cuda.summary(result)
        col = header.index("fused/chain")
        assert all(line[col:col + len("fused/chain")].strip() == "skipped" for line in lines), lines


def test_bench_overhead_reports_every_row():
    import bench_overhead

    rows = bench_overhead.measure(rounds=1, round_s=0.001, shapes=[((2, 3), 2)])
    assert [r["input"] for r in rows] == ["2-D", "3-D"]
    assert all(r["tn_us"] > 0 and r["linear_us"] > 0 for r in rows)
    assert "| overhead µs |" in bench_overhead.markdown(rows)


def test_gpu_check_runs_every_test_file_that_holds_gpu_tests():
    import re

    marked = sorted(str(f.relative_to(BENCH.parent)) for f in (BENCH.parent / "tests").rglob("test_*.py")
                    if re.search(r"pytest\.mark\.gpu\b", f.read_text()))
    assert sorted(gpu_check.GPU_TESTS) == marked

"""The interactive workflow (issue 16): what is computed once is reused bit for bit, a cancelled run
keeps what was there before, healing never returns a worse model.  Nothing here times anything
(benchmarks/bench_workflow.py does)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def test_import_tnviz_sets_the_passive_openmp_policy_before_torch_unless_the_user_chose():
    code = "import os, tnviz, torch; print(os.environ.get('OMP_WAIT_POLICY'), tnviz._runtime.configure())"
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["PASSIVE", "True"]
    out = subprocess.run([sys.executable, "-c", code], env=_env(OMP_WAIT_POLICY="ACTIVE"), capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["ACTIVE", "False"]  # the user's setting stays, and is reported as not ours
    late = "import os, torch, tnviz; print(os.environ.get('OMP_WAIT_POLICY'))"
    out = subprocess.run([sys.executable, "-c", late], env=_env(), capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None"]  # torch already loaded: too late to matter, so not pretended


# ---------------------------------------------------------------------- statistics once, reused bit for bit
def _tn_tensors(result) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in result.model.state_dict().items()}


def test_cached_calibration_statistics_give_bit_identical_decompositions():
    """A second compression of the same subject reuses its statistics (no new pass) and writes the
    same tensors, bit for bit, as a compression of a freshly opened subject."""
    from tnviz.model import calibrate
    from tnviz.model.compress import compress
    from tnviz.model.subject import demo_subject

    subject = demo_subject("digits-mlp", "cpu")
    first = compress(subject, layers=r"fc[12]$", ratio=8, device="cpu")
    passes = []
    original = calibrate.collect_input_stats
    calibrate.collect_input_stats = lambda *a, **k: passes.append(1) or original(*a, **k)
    try:
        again = compress(subject, layers=r"fc[12]$", ratio=8, device="cpu")
    finally:
        calibrate.collect_input_stats = original
    assert passes == []  # the statistics came from the subject's cache
    fresh = compress(demo_subject("digits-mlp", "cpu"), layers=r"fc[12]$", ratio=8, device="cpu")
    a, b, c = _tn_tensors(first), _tn_tensors(again), _tn_tensors(fresh)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    assert first.metrics == again.metrics == fresh.metrics


def test_a_pass_that_stops_at_the_wanted_layer_gives_the_full_pass_statistics_bit_for_bit():
    """Asking for an early layer stops each forward pass there (after a first full batch that shows
    every wanted layer is called once); its statistics equal those of a pass through every layer."""
    from tnviz.model.calibrate import collect_input_stats
    from tnviz.model.subject import demo_subject

    subject = demo_subject("digits-cnn", "cpu")
    batches = subject.calibration
    assert len(batches) > 1  # the early stop happens from the second batch on
    reached = []
    last = subject.model.fc2 if hasattr(subject.model, "fc2") else list(subject.model.modules())[-1]
    handle = last.register_forward_hook(lambda *a: reached.append(1))
    try:
        alone = collect_input_stats(subject.model, batches, ["conv1"], device="cpu")
    finally:
        handle.remove()
    assert len(reached) == 1  # only the first batch ran to the end of the model
    every = collect_input_stats(subject.model, batches, None, device="cpu")
    assert torch.equal(alone["conv1"].second_moment, every["conv1"].second_moment)
    assert torch.equal(alone["conv1"].mean, every["conv1"].mean) and alone["conv1"].count == every["conv1"].count


def test_a_layer_called_twice_per_pass_is_never_cut_short():
    from tnviz.model.calibrate import collect_input_stats

    shared = torch.nn.Linear(4, 4)

    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = shared

        def forward(self, x):
            return self.a(torch.relu(self.a(x)))

    model = Twice()
    batches = [torch.randn(8, 4, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    stats = collect_input_stats(model, batches, ["a"], device="cpu")
    assert stats["a"].count == 2 * 8 * 3
    rows = []
    for b in batches:
        rows += [b, torch.relu(shared(b)).detach()]
    x = torch.cat(rows).double()
    assert torch.allclose(stats["a"].second_moment, x.T @ x / len(x), rtol=1e-12, atol=1e-12)


def test_a_factored_covariance_passed_on_gives_the_same_decomposition_and_is_checked():
    from tnviz.decompose import decompose
    from tnviz.decompose import data_aware as da
    from tnviz.decompose.legs import make_legs
    from tnviz.errors import DecompositionError

    g = torch.Generator().manual_seed(0)
    W = torch.randn(24, 16, dtype=torch.float64, generator=g)
    X = torch.randn(16, 200, dtype=torch.float64, generator=g)
    C = X @ X.T / 200
    legs = make_legs(W.shape, (4, 4), (4, 6))
    factored = da.parse_covariance(C, legs, W)
    assert da.parse_covariance(factored, legs, W) is factored
    for method in ("svd", "mpo", "tucker"):
        plain = decompose(W, method, max_rank=3, input_cov=C, in_dims=(4, 4), out_dims=(4, 6))
        passed = decompose(W, method, max_rank=3, input_cov=factored, in_dims=(4, 4), out_dims=(4, 6))
        assert all(torch.equal(plain.tensors[k], passed.tensors[k]) for k in plain.tensors)
        assert plain.data_error == passed.data_error
    with pytest.raises(DecompositionError, match="factored input_cov must match"):
        da.parse_covariance(factored, legs, W, eps=1e-3)
    with pytest.raises(DecompositionError, match="factored input_cov must match"):
        da.parse_covariance(factored, legs, W.float())


# ---------------------------------------------------------------------- cancelled runs keep what was there
def _cancel_at(k: int):
    from tnviz.errors import Cancelled

    calls = []

    def progress(done, total, label):
        calls.append(label)
        if len(calls) > k:
            raise Cancelled(f"stopped at {label}")

    return progress


def test_a_cancelled_heal_keeps_the_previous_model_and_result():
    from tnviz.errors import Cancelled
    from tnviz.model.compress import compress

    result = compress("digits-mlp", layers=r"fc[12]$", ratio=8, device="cpu")
    before = _tn_tensors(result)
    metrics = {k: dict(v) for k, v in result.metrics.items()}
    for mode in ("layer-wise", "end-to-end"):
        with pytest.raises(Cancelled):
            result.heal(mode, progress=_cancel_at(1))  # after the first layer / epoch has trained
        now = _tn_tensors(result)
        assert all(torch.equal(before[k], now[k]) for k in before)
        assert result.heals == [] and result.metrics == metrics


def test_a_cancelled_compression_and_sensitivity_return_nothing_and_leave_the_subject_as_it_was():
    from tnviz.errors import Cancelled
    from tnviz.model.analysis import sensitivity
    from tnviz.model.compress import compress
    from tnviz.model.subject import demo_subject

    subject = demo_subject("digits-mlp", "cpu")
    state = {k: v.clone() for k, v in subject.model.state_dict().items()}
    with pytest.raises(Cancelled):
        compress(subject, layers=r"fc[12]$", ratio=8, device="cpu", progress=_cancel_at(2))
    assert all(torch.equal(state[k], v) for k, v in subject.model.state_dict().items())
    result = compress(subject, layers=r"fc[12]$", ratio=8, device="cpu")
    tensors = _tn_tensors(result)
    with pytest.raises(Cancelled):
        sensitivity(result, progress=_cancel_at(1))
    assert all(torch.equal(tensors[k], v) for k, v in _tn_tensors(result).items())
    assert sensitivity(result)[0]["layer"] == "fc1"  # and it still runs after


def test_a_heal_that_cannot_help_returns_the_input_model_unchanged():
    """A healing that only makes the model worse (a learning rate that throws it away) is undone:
    the model after it is the model before it, bit for bit, and the outcome says so."""
    from tnviz.model import heal as heal_module
    from tnviz.model.compress import compress

    result = compress("digits-mlp", layers=r"fc[12]$", ratio=8, device="cpu")
    before = _tn_tensors(result)
    healing = heal_module.HEALINGS["end-to-end"]
    wild = heal_module.Healing(healing.name, healing.description, healing.unit, healing.default_steps,
                               healing.kinds, lambda model, subject, steps, progress=None:
                               heal_module.heal_digits(model, epochs=steps, lr=10.0, progress=progress))
    heal_module.HEALINGS["end-to-end"] = wild
    try:
        outcome = result.heal("end-to-end", 1)
    finally:
        heal_module.HEALINGS["end-to-end"] = healing
    assert not outcome.improved and outcome.kept == "previous"
    assert outcome.after["accuracy"] < outcome.before["accuracy"]
    after = _tn_tensors(result)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert result.current == result.metrics["compressed"]


def test_layerwise_heal_with_a_held_out_split_keeps_each_layers_best_state_and_a_budget_stops_it():
    from tnviz.model.apply import apply_plan
    from tnviz.model.heal import heal_layerwise
    from tnviz.model.plan import Rule, make_plan
    from tnviz.model.subject import demo_subject

    mlp = demo_subject("digits-mlp", "cpu")
    plan = make_plan(mlp.model, [Rule(r"fc[12]$", "mpo", {"ratio": 16})])
    result = apply_plan(mlp.model, plan, calibration=mlp.calibration, device="cpu")
    report = heal_layerwise(result.model, mlp.model, mlp.calibration, steps=60, lr=2e-3, holdout=0.2)
    assert all(report.loss_after[n] <= report.loss_before[n] for n in report.loss_before)
    assert all(1 <= report.layer_steps[n] <= 60 for n in ("fc1", "fc2"))
    quick = apply_plan(mlp.model, plan, calibration=mlp.calibration, device="cpu")
    budget = heal_layerwise(quick.model, mlp.model, mlp.calibration, steps=100_000, budget_s=0.0)
    assert budget.layer_steps == {"fc1": 1, "fc2": 1}  # out of time after the first step of each layer

"""Resumable runs (issue 18.3): a run killed with SIGKILL after k finished weights and restarted
with --resume writes the folder an uninterrupted run writes, byte for byte."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tnviz.errors import ModelFileError, TnvizError
from tnviz.model.folder import load_compressed
from tnviz.model.io import save_safetensors
from tnviz.model.resume import HOLD_ENV, JOURNAL, progress_folder

pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TNVIZ_WORKERS": "1"}


def weights_file(path: Path) -> Path:
    generator = torch.Generator().manual_seed(0)
    state = {f"layers.{k}.fc.weight": torch.randn(48, 40, generator=generator) for k in range(6)}
    state["layers.0.fc.bias"] = torch.randn(48, generator=generator)
    return save_safetensors(state, path)


def cli(*args: str, env: dict | None = None, wait: bool = True):
    cmd = [sys.executable, "-m", "tnviz.cli", "compress", *args]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or ENV, text=True)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env or ENV)


def journaled(out: Path) -> int:
    path = progress_folder(out) / JOURNAL
    return len(path.read_text().splitlines()) if path.is_file() else 0


def kill_after(source: Path, out: Path, k: int) -> None:
    """A real SIGKILL, from outside, once the run has journaled k weights (it waits there)."""
    proc = cli(str(source), "--ratio", "3", "-o", str(out), wait=False, env={**ENV, HOLD_ENV: str(k)})
    deadline = time.monotonic() + 120
    while journaled(out) < k and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert journaled(out) == k, proc.communicate()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("k", [1, 4])
def test_a_killed_run_resumes_to_the_uninterrupted_runs_bytes(k, tmp_path):
    source = weights_file(tmp_path / "w.safetensors")
    whole = cli(str(source), "--ratio", "3", "-o", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "out"
    kill_after(source, out, k)
    with pytest.raises(ModelFileError, match=f"not written yet; a run into it was stopped after {k} of 6 weights"):
        load_compressed(out)
    again = cli(str(source), "--ratio", "3", "-o", str(out), "--resume", "--json")
    assert again.returncode == 0, again.stderr
    for name in ("model.safetensors", "tnviz.json"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert not progress_folder(out).exists()


def test_resume_refuses_another_input_or_other_settings_and_a_fresh_run_starts_over(tmp_path):
    import tnviz

    source = weights_file(tmp_path / "w.safetensors")
    out = tmp_path / "out"
    kill_after(source, out, 2)
    bad = cli(str(source), "--ratio", "2", "-o", str(out), "--resume")
    assert bad.returncode == 2 and "had other settings" in bad.stderr, bad.stderr
    with pytest.raises(TnvizError, match="had other settings"):
        tnviz.compress(source, out, ratio=2, resume=True)
    result = tnviz.compress(source, out, ratio=3, resume=True)  # the library continues it too
    assert result.resumed == 2 and load_compressed(out).layers
    kill_after(source, tmp_path / "o2", 2)
    fresh = tnviz.compress(source, tmp_path / "o2", ratio=3)  # without resume: from the start
    assert fresh.resumed == 0 and (tmp_path / "o2" / "model.safetensors").read_bytes() == \
        (out / "model.safetensors").read_bytes()


def test_a_model_run_resumes_too(tmp_path):
    """Data-aware, on a model (the digits MLP): killed after one weight, resumed to the same bytes."""
    whole = cli("digits-mlp", "--ratio", "2", "-o", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    proc = cli("digits-mlp", "--ratio", "2", "-o", str(tmp_path / "out"), wait=False, env={**ENV, HOLD_ENV: "1"})
    deadline = time.monotonic() + 120
    while journaled(tmp_path / "out") < 1 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    again = cli("digits-mlp", "--ratio", "2", "-o", str(tmp_path / "out"), "--resume")
    assert again.returncode == 0, again.stderr
    for name in ("model.safetensors", "tnviz.json"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert json.loads((tmp_path / "out" / "tnviz.json").read_text())["layers"]

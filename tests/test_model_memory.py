"""Memory of a weights-only compression: a weight read alone (a plain file read, not the memory
map) and its memory returned after it, so the peak resident set follows the largest weight, not
the file (read from /proc/self/status VmHWM in a subprocess; a size, not a timing)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tnviz.model import memory
from tnviz.model.memory import peak_rss_bytes, trim

ROOT = Path(__file__).resolve().parents[1]

_RUN = """
import sys
import tnviz
from tnviz.model.memory import peak_rss_bytes
r = tnviz.compress(sys.argv[1], sys.argv[2], method="svd", max_rank=8, layers=r"layers\\.[0-9]+\\.")
print("layers", len(r.layers), "peak", peak_rss_bytes())
"""

_IMPORTS = """
import tnviz, tnviz.model.compress, tnviz.model.apply
from tnviz.model.memory import peak_rss_bytes
print("peak", peak_rss_bytes())
"""


def _llama_like(path: Path, hidden: int, layers: int) -> tuple[int, int]:
    """A LLaMA-shaped weights file; returns (file bytes, largest block's bytes)."""
    inter = hidden * 43 // 16 // 64 * 64
    g = torch.Generator().manual_seed(0)
    tensors = {"model.embed_tokens.weight": torch.randn(4000, hidden, generator=g)}
    for k in range(layers):
        p = f"model.layers.{k}."
        for n in "qkvo":
            tensors[p + f"self_attn.{n}_proj.weight"] = torch.randn(hidden, hidden, generator=g)
        for n in ("gate", "up"):
            tensors[p + f"mlp.{n}_proj.weight"] = torch.randn(inter, hidden, generator=g)
        tensors[p + "mlp.down_proj.weight"] = torch.randn(hidden, inter, generator=g)
        tensors[p + "input_layernorm.weight"] = torch.ones(hidden)
    save_file(tensors, str(path))
    block = sum(v.numel() * 4 for n, v in tensors.items() if n.startswith("model.layers.0."))
    return path.stat().st_size, block


def _peak(code: str, *args: str) -> tuple[int, str]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=900,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split("peak")[1]), out.stdout


def test_peak_rss_and_trim_are_readable():
    assert peak_rss_bytes() is None or peak_rss_bytes() > 0
    trim()  # a no-op off glibc; never raises
    free = memory.free_heap_bytes()
    assert free is None or free >= 0
    trim(memory.TRIM_FLOOR)


def test_trim_with_a_floor_gives_back_only_a_heap_that_holds_at_least_that_much(monkeypatch):
    calls = []

    class Libc:
        def malloc_trim(self, pad):
            calls.append(pad)

    monkeypatch.setattr(memory, "_libc", lambda: Libc())
    monkeypatch.setattr(memory, "free_heap_bytes", lambda: 100 << 20)
    trim(200 << 20)
    assert calls == []  # 100 MB free: left for the next weight, whose pages it saves faulting in
    trim(100 << 20)
    trim()
    assert calls == [0, 0]
    monkeypatch.setattr(memory, "free_heap_bytes", lambda: None)  # cannot be read: trimmed as before
    trim(200 << 20)
    assert calls == [0, 0, 0]


@pytest.mark.slow
def test_a_1_gb_model_compresses_in_a_fraction_of_its_size(tmp_path):
    # before: every tensor read through the memory map stayed resident (a 1.9 GB file peaked at
    # 3.0 GB), then glibc's heap kept each freed weight (1.3 GB)
    size, block = _llama_like(tmp_path / "llama.safetensors", hidden=1024, layers=20)
    assert size > 10**9
    imports, _ = _peak(_IMPORTS)
    peak, said = _peak(_RUN, str(tmp_path / "llama.safetensors"), str(tmp_path / "out"))
    assert "layers 140" in said
    used = peak - imports
    # the goal of issue 18: at most twice the largest block plus 1 GB, whatever the model's size;
    # and, on this 1 GB file, well under its size (two weights in flight, their decompositions)
    assert peak <= 2 * block + 2**30, f"peak {peak / 2**20:.0f} MB, block {block / 2**20:.0f} MB"
    assert used < size / 2, f"{used / 2**20:.0f} MB above the imports for a {size / 2**20:.0f} MB file"
    assert (tmp_path / "out" / "model.safetensors").is_file()

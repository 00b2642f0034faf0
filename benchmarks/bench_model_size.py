"""Cost over model size: does the data-aware compression's time follow the work?

Models: all-MiniLM-L6-v2 (bundled, real weights) and three LLaMA shapes built offline by
``transformers`` from a config (random weights, saved as a sharded Hugging Face folder, read back
the way a user's folder is): ``tiny`` (hidden 256, 2 blocks), ``small`` (the same blocks, 8 of
them) and ``medium`` (hidden 512, 8 blocks).  For each: the subject opened as ``tnviz.compress``
opens it, the calibration statistics of every linear weight in the blocks collected (timed), then
``tnviz.compress(subject, method="mpo", ratio=2, layers=<the blocks' linears>)`` reusing them
(timed; each weight's own seconds from its result).  Two claims are checked:

* time per weight is about constant for weights of one shape (``tiny`` and ``small`` share
  every shape; ``small`` has 4x the weights);
* calibration cost is linear in the calibration tokens (``small`` calibrated on 1x, 2x and 4x the
  bundled sentences: seconds per 1,000 tokens).

    python benchmarks/bench_model_size.py [--out DIR]      # ~2 min on a 2-core CPU
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_forward import machine  # noqa: E402

import tnviz  # noqa: E402
from tnviz.model.apply import calibration_stats  # noqa: E402
from tnviz.model.subject import open_subject  # noqa: E402

LLAMAS = {
    "tiny": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=2),
    "small": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=8),
    "medium": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8),
}
BLOCK_LINEARS = {"minilm": r"encoder\.layer\.[0-9]+\..*(query|key|value|dense)$",
                 "llama": r"layers\.[0-9]+\.(self_attn|mlp)\."}


def build_llama(size: str, folder: Path) -> Path:
    """A random LLaMA of ``size`` saved as a 2-shard Hugging Face folder (config + index)."""
    import transformers
    from safetensors.torch import save_file

    torch.manual_seed(0)
    config = transformers.LlamaConfig(num_attention_heads=8, num_key_value_heads=4, vocab_size=2048,
                                      max_position_embeddings=256, tie_word_embeddings=True, **LLAMAS[size])
    model = transformers.LlamaForCausalLM(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    config.architectures = ["LlamaForCausalLM"]
    config.to_json_file(folder / "config.json")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    names, weight_map = list(state), {}
    for k in range(2):
        file = f"model-{k + 1:05d}-of-00002.safetensors"
        save_file({n: state[n] for n in names[k::2]}, str(folder / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in names[k::2]})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def tokens_of(batches: list[Any]) -> int:
    return sum(int(b["attention_mask"].sum()) if isinstance(b, dict) and "attention_mask" in b
               else int(torch.as_tensor(b if not isinstance(b, dict) else b["input_ids"]).numel()) for b in batches)


def one_model(name: str, source: Any, pattern: str) -> dict[str, Any]:
    started = time.perf_counter()
    subject = open_subject(source)
    opened = time.perf_counter() - started
    modules = dict(subject.model.named_modules())
    import re

    names = [n for n, m in modules.items() if isinstance(m, torch.nn.Linear) and re.search(pattern, n)]
    t = time.perf_counter()
    subject.input_stats(names)
    calibrate = time.perf_counter() - t
    t = time.perf_counter()
    result = tnviz.compress(subject, method="mpo", ratio=2.0, layers=pattern)
    compress = time.perf_counter() - t
    per_shape: dict[str, list[float]] = defaultdict(list)
    for layer in result.layers:
        per_shape[f"{layer.shape[0]}x{layer.shape[1]}"].append(layer.seconds)
    return {"model": name, "params": sum(p.numel() for p in subject.model.parameters()), "weights": len(result.layers),
            "tokens": tokens_of(subject.calibration), "open_s": opened, "calibrate_s": calibrate,
            "compress_s": compress,
            "per_shape": {k: {"weights": len(v), "median_s": statistics.median(v), "total_s": sum(v)}
                          for k, v in sorted(per_shape.items())}}


def calibration_scaling(folder: Path, pattern: str) -> list[dict[str, Any]]:
    """Calibration seconds of ``small`` on 1x, 2x and 4x the bundled calibration batches."""
    import re

    subject = open_subject(folder)
    names = [n for n, m in subject.model.named_modules() if isinstance(m, torch.nn.Linear) and re.search(pattern, n)]
    base = list(subject.calibration)
    rows = []
    for times in (1, 2, 4):
        batches = base * times
        calibration_stats(subject.model, base[:1], names)  # warm (first-call allocations)
        t = time.perf_counter()
        calibration_stats(subject.model, batches, names)
        seconds = time.perf_counter() - t
        n = tokens_of(batches)
        rows.append({"multiple": times, "tokens": n, "seconds": seconds, "s_per_1k_tokens": 1000 * seconds / n})
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Machine: {result['machine']}.", "",
             "| model | params | weights | calibration tokens | open | calibrate | compress | per weight, by shape (median s) |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in result["models"]:
        shapes = "; ".join(f"{k}: {v['median_s']:.3f} ({v['weights']})" for k, v in r["per_shape"].items())
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.1f} M | {r['weights']} | {r['tokens']:,} | {r['open_s']:.2f} s | "
                     f"{r['calibrate_s']:.2f} s | {r['compress_s']:.2f} s | {shapes} |")
    lines += ["", "Calibration of LLaMA small on more tokens:", "",
              "| multiple | tokens | seconds | s per 1k tokens |", "|---:|---:|---:|---:|"]
    for r in result["calibration"]:
        lines.append(f"| {r['multiple']}x | {r['tokens']:,} | {r['seconds']:.2f} | {r['s_per_1k_tokens']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="a folder: writes model_size.json and model_size.md there")
    p.add_argument("--sizes", nargs="+", default=list(LLAMAS), choices=list(LLAMAS))
    p.add_argument("--no-minilm", action="store_true")
    args = p.parse_args(argv)
    models = []
    if not args.no_minilm:
        models.append(one_model("MiniLM-L6 (real)", "minilm", BLOCK_LINEARS["minilm"]))
    with tempfile.TemporaryDirectory() as tmp:
        folders = {size: build_llama(size, Path(tmp) / f"llama-{size}") for size in args.sizes}
        for size, folder in folders.items():
            models.append(one_model(f"LLaMA {size} (random)", folder, BLOCK_LINEARS["llama"]))
        scaling = calibration_scaling(folders["small"] if "small" in folders else next(iter(folders.values())),
                                      BLOCK_LINEARS["llama"])
    result = {"machine": machine(torch.device("cpu")), "models": models, "calibration": scaling}
    text = markdown(result)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "model_size.json").write_text(json.dumps(result, indent=2))
        (out / "model_size.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

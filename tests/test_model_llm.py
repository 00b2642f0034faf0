"""LLM-class Hugging Face folders (issue 18.1): tiny random LLaMA, Mistral, Qwen2 and GPT-2 built
offline by transformers from a config, saved sharded into 3 files with an index, compressed end to
end by ``tnviz.compress`` and the CLI, evaluated by perplexity and next-token KL."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tnviz  # noqa: E402
from tnviz.errors import ModelFileError  # noqa: E402
from tnviz.model.data import sentences  # noqa: E402
from tnviz.model.folder import load_compressed  # noqa: E402
from tnviz.model.io import open_weights  # noqa: E402
from tnviz.model.plan import block_and_role, layer_table  # noqa: E402

pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py

VOCAB = 320
KINDS = ("llama", "mistral", "qwen2", "gpt2")


def tiny_config(kind: str):
    blocks = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, vocab_size=VOCAB)
    if kind == "llama":
        return transformers.LlamaConfig(tie_word_embeddings=True, **blocks)
    if kind == "mistral":
        return transformers.MistralConfig(tie_word_embeddings=False, **blocks)
    if kind == "qwen2":
        return transformers.Qwen2Config(tie_word_embeddings=True, **blocks)
    return transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, vocab_size=VOCAB,
                                   bos_token_id=0, eos_token_id=0)


def low_rank_(model: torch.nn.Module, rank: int, seed: int = 0) -> None:
    """Every 2-D weight replaced by a random product of rank ``rank`` (so an SVD at that rank,
    its full rank, holds it exactly)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and min(p.shape) > rank:
                a = torch.randn(p.shape[0], rank, generator=generator)
                b = torch.randn(rank, p.shape[1], generator=generator)
                low = a @ b
                p.copy_(low * (p.norm() / low.norm()))  # the norm of the random init: activations as usual


def save_sharded(model: torch.nn.Module, folder: Path, shards: int = 3) -> dict[str, torch.Tensor]:
    """``config.json`` + ``model-0000k-of-00003.safetensors`` + ``model.safetensors.index.json``, the
    way ``save_pretrained`` writes them (a tied ``lm_head.weight`` left out); returns the tensors."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    model.config.architectures = [type(model).__name__]
    model.config.to_json_file(folder / "config.json")
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight")
    names = list(state)
    weight_map = {}
    for k in range(shards):
        file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = names[k::shards]
        save_file({n: state[n] for n in part}, str(folder / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return state


def build(kind: str, folder: Path, rank: int | None = None, seed: int = 0):
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(tiny_config(kind)).eval()
    if rank is not None:
        low_rank_(model, rank, seed)
    return model, save_sharded(model, folder)


def tiny_tokenizer(path: Path) -> None:
    """A byte-level BPE of 300 tokens trained on the bundled sentences (offline, well under a second)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.train_from_iterator(sentences("all"), trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                                        special_tokens=["[PAD]", "[UNK]"]))
    tokenizer.save(str(path))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm")
    out = {}
    for kind in KINDS:
        model, state = build(kind, root / kind)
        out[kind] = (root / kind, model, state)
    tiny_tokenizer(root / "llama" / "tokenizer.json")
    return out


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


IDS = torch.tensor([[5, 17, 99, 3, 250, 8, 41, 12], [7, 7, 300, 2, 18, 64, 1, 0]])


# ---------------------------------------------------------------------- reading
def test_a_sharded_folder_is_read_shard_by_shard_and_an_inconsistent_index_is_refused(folders, tmp_path):
    import shutil

    folder, _, state = folders["qwen2"]
    with open_weights(folder) as weights:
        assert weights.sharded and len(weights.names()) == len(state) and sorted(weights.names()) == sorted(state)
        for name in state:
            assert torch.equal(weights.get(name), state[name])
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    (bad / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(ModelFileError, match="'model-00002-of-00003.safetensors' .* is missing"):
        open_weights(bad)
    shutil.rmtree(bad)
    shutil.copytree(folder, bad)
    index = json.loads((bad / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00003.safetensors"
    (bad / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelFileError, match="names tensor 'model.layers.9.mlp.up_proj.weight' in shard "
                                             "'model-00001-of-00003.safetensors', which does not hold it"):
        open_weights(bad)
    index["weight_map"] = {"x": "../elsewhere.safetensors"}
    (bad / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelFileError, match="in its own folder"):
        open_weights(bad)


def test_a_config_asking_for_remote_code_is_refused(folders, tmp_path):
    import shutil

    folder = tmp_path / "remote"
    shutil.copytree(folders["llama"][0], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "x.Model"}}))
    with pytest.raises(ModelFileError, match="without remote code; it sets 'auto_map'"):
        tnviz.compress(folder, ratio=2)


@pytest.mark.parametrize("kind", KINDS)
def test_the_folder_builds_the_causal_lm_tied_as_saved(kind, folders):
    from tnviz.model.hf import load_hf_model

    folder, original, _ = folders[kind]
    with open_weights(folder) as weights:
        model, _ = load_hf_model(weights, "cpu")
    assert type(model) is type(original)
    assert torch.equal(logits(model, IDS), logits(original, IDS))
    tied = model.config.tie_word_embeddings
    assert (model.lm_head.weight is model.get_input_embeddings().weight) == tied


# ---------------------------------------------------------------------- the layer table
def test_the_layer_table_has_blocks_and_roles_and_gpt2_conv1d_is_its_out_by_in_map(folders):
    llama = layer_table(folders["llama"][1])
    roles = {(i.block, i.role) for i in llama}
    for block in (0, 1):
        for role in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            assert (block, role) in roles
    # the tied lm_head is the embedding's table: one layer, with the alias
    embed = [i for i in llama if i.name == "model.embed_tokens"]
    assert len(embed) == 1 and embed[0].tied == ("lm_head.weight",) and "lm_head" not in {i.name for i in llama}
    gpt2 = {i.name: i for i in layer_table(folders["gpt2"][1])}
    c_attn = gpt2["transformer.h.0.attn.c_attn"]
    assert c_attn.transposed and c_attn.shape == (96, 32) and c_attn.kind == "Linear"  # Conv1D weight is (32, 96)
    assert {block_and_role(n)[1] for n in gpt2 if n.startswith("transformer.h.1.")} == {
        "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}
    assert block_and_role("lm_head") == (None, "lm_head")


# ---------------------------------------------------------------------- end to end
def assert_every_input_tensor_is_in_the_output(out: Path, state: dict[str, torch.Tensor]) -> None:
    back = load_compressed(out)
    assert set(back.layers) | set(back.untouched) == set(state)
    for name, tensor in back.untouched.items():  # copied bit for bit
        assert tensor.dtype == state[name].dtype and tensor.view(-1).view(torch.uint8).equal(
            state[name].reshape(-1).view(torch.uint8)), name
    for name, layer in back.layers.items():  # compressed, in the input's shape
        assert tuple(layer.to_weight().shape) == tuple(state[name].shape), name


@pytest.mark.parametrize("kind", KINDS)
def test_an_llm_folder_compresses_end_to_end_and_loads_into_its_architecture(kind, folders, tmp_path):
    folder, original, state = folders[kind]
    result = tnviz.compress(folder, tmp_path / "out", ratio=1.5)
    assert result.subject.kind == "causal" and result.data_aware
    names = {r.name for r in result.layers}
    assert any(".mlp." in n for n in names)
    assert_every_input_tensor_is_in_the_output(tmp_path / "out", state)
    m = result.metrics
    assert m["original"]["next-token KL"] == 0.0 and m["compressed"]["next-token KL"] > 0
    assert 1 < m["compressed"]["perplexity"] < 2 * VOCAB
    # the held-out text is disjoint from the calibration text
    assert not set(sentences("heldout")) & set(sentences("calibration"))
    doc = json.loads((tmp_path / "out" / "tnviz.json").read_text())
    assert set(doc["functional"]["compressed"]) >= {"perplexity", "next-token KL"}
    # loaded into a fresh model of the original architecture, tied as before
    fresh = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(folder))
    model = load_compressed(tmp_path / "out", into=fresh)
    assert model is fresh
    assert torch.allclose(logits(model, IDS), logits(result.model, IDS), atol=1e-5)
    assert not torch.allclose(logits(model, IDS), logits(original, IDS), atol=1e-3)  # it did change
    if original.config.tie_word_embeddings and "embed" in " ".join(names) + " wte":
        embed = model.get_input_embeddings()
        assert model.lm_head is embed.linear  # one network for both


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_a_folder_whose_tied_embedding_stayed_dense_loads_into_a_tied_model_and_not_an_untied_one(kind, folders,
                                                                                                     tmp_path):
    """Only the MLPs compressed: the folder holds the embedding once (the tied lm_head is not
    stored twice), and a model that ties them takes it; one that does not is refused by name."""
    folder, _, _ = folders[kind]
    result = tnviz.compress(folder, tmp_path / "out", ratio=1.5, layers=r"mlp\.", data_aware=False)
    config = transformers.AutoConfig.from_pretrained(folder)
    fresh = transformers.AutoModelForCausalLM.from_config(config)
    model = load_compressed(tmp_path / "out", into=fresh)
    assert model.lm_head.weight is model.get_input_embeddings().weight
    assert torch.allclose(logits(model, IDS), logits(result.model, IDS), atol=1e-5)
    config.tie_word_embeddings = False
    untied = transformers.AutoModelForCausalLM.from_config(config)
    with pytest.raises(ModelFileError, match="missing \\['lm_head.weight'\\]"):
        load_compressed(tmp_path / "out", into=untied)


@pytest.mark.parametrize("kind", KINDS)
def test_a_full_rank_compression_equals_the_original(kind, tmp_path):
    """Weights of rank 4 compressed by an SVD at rank 4 (their full rank): the compressed model is
    the original to float32 rounding, GPT-2's transposed Conv1D weights included."""
    original, state = build(kind, tmp_path / kind, rank=4)
    result = tnviz.compress(tmp_path / kind, tmp_path / "out", method="svd", max_rank=4, data_aware=False,
                            precision=torch.float64)
    assert not result.skipped and len(result.layers) >= 9
    assert (logits(result.model, IDS) - logits(original, IDS)).abs().max() < 1e-5
    assert result.metrics["compressed"]["next-token KL"] < 1e-9
    back = load_compressed(tmp_path / "out")
    for name, layer in back.layers.items():  # the dense reference: each rebuilt weight is the input's
        assert torch.allclose(layer.to_weight(), state[name], atol=1e-5), name
    if kind == "gpt2":
        layer = back.layers["transformer.h.0.attn.c_attn.weight"]
        assert layer.transposed and tuple(layer.to_weight().shape) == (32, 96) == tuple(state[
            "transformer.h.0.attn.c_attn.weight"].shape)
        x = torch.randn(3, 32)
        conv1d = original.transformer.h[0].attn.c_attn
        tn = result.model.transformer.h[0].attn.c_attn
        with torch.no_grad():
            assert torch.allclose(tn(x), conv1d(x), atol=1e-5)


def test_calibration_is_tokenized_by_the_folders_tokenizer_else_the_byte_fallback_says_so(folders):
    from tnviz.model.subject import open_subject

    with_tokenizer = open_subject(folders["llama"][0], "cpu")
    assert with_tokenizer.inputs.startswith("the bundled sentences tokenized by the upload's tokenizer.json")
    without = open_subject(folders["gpt2"][0], "cpu")
    assert "as UTF-8 bytes" in without.inputs and "no tokenizer.json" in without.inputs
    first = without.calibration[0]
    text = min(sentences("calibration"), key=lambda t: len(t.encode("utf-8"))).encode("utf-8")  # shortest first
    assert first["input_ids"][0, :len(text)].tolist() == [b % VOCAB for b in text]
    assert int(first["attention_mask"][0].sum()) == len(text)


def test_the_cli_compresses_by_role_in_every_block(folders, tmp_path):
    folder, _, state = folders["llama"]
    out = subprocess.run([sys.executable, "-m", "tnviz.cli", "compress", str(folder), "--layers",
                          r"mlp\.(gate|up|down)_proj", "--ratio", "1.5", "-o", str(tmp_path / "o"), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert sorted((entry["block"], entry["role"]) for entry in report["layers"]) == [
        (b, f"mlp.{r}_proj") for b in (0, 1) for r in ("down", "gate", "up")]
    assert set(report["functional"]["compressed"]) >= {"perplexity", "next-token KL"}
    assert_every_input_tensor_is_in_the_output(tmp_path / "o", state)
    text = subprocess.run([sys.executable, "-m", "tnviz.cli", "compress", str(folder), "--layers", r"mlp\.up_proj",
                           "--ratio", "1.5", "-o", str(tmp_path / "t")], capture_output=True, text=True, timeout=300)
    assert text.returncode == 0 and "block 0" in text.stdout and "block 1" in text.stdout, text.stderr
    assert "perplexity" in text.stdout and "next-token KL" in text.stdout


_PLAIN_LOAD = """
import sys
sys.modules["tnviz"] = None  # importing tnviz from here fails: the folder must stand alone
import torch, transformers
model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save(model(input_ids=ids).logits, sys.argv[3])
print(type(model).__name__, "tnviz" in sys.modules and sys.modules["tnviz"] is not None)
"""


@pytest.mark.parametrize("kind", ["llama", "gpt2", "qwen2"])
def test_a_dense_export_is_a_plain_folder_transformers_loads_without_tnviz(kind, folders, tmp_path):
    import os

    folder, original, state = folders[kind]
    result = tnviz.compress(folder, tmp_path / "dense", ratio=1.5, dense=True)
    files = {p.name for p in (tmp_path / "dense").iterdir()}
    assert {"config.json", "model.safetensors"} <= files and ("tokenizer.json" in files) == (kind == "llama")
    with open_weights(tmp_path / "dense") as weights:  # the input's names, shapes and dtypes
        assert sorted(weights.names()) == sorted(state)
        assert all(weights.shape(n) == tuple(state[n].shape) for n in state)
    torch.save(IDS, tmp_path / "ids.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", _PLAIN_LOAD, str(tmp_path / "dense"), str(tmp_path / "ids.pt"),
                          str(tmp_path / "logits.pt")], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [type(original).__name__, "False"]
    plain = torch.load(tmp_path / "logits.pt")
    assert (plain - logits(result.model, IDS)).abs().max() < 1e-5
    assert (plain - logits(original, IDS)).abs().max() > 1e-3  # it is the compressed model, not the input
    cli = subprocess.run([sys.executable, "-m", "tnviz.cli", "compress", str(folder), "--ratio", "1.5", "--dense",
                          "-o", str(tmp_path / "cli")], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})  # the calibration GEMMs at this test's count
    assert cli.returncode == 0, cli.stderr
    assert (tmp_path / "cli" / "model.safetensors").read_bytes() == (tmp_path / "dense" / "model.safetensors").read_bytes()
    with pytest.raises(ModelFileError, match="must have format 'tnviz.compressed'"):
        load_compressed(tmp_path / "dense")

"""tnviz.model.calibrate: input second moments equal dense references; hooks leave the model untouched."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tnviz.errors import TnvizError
from tnviz.model.calibrate import chosen_layers, collect_input_stats, kron_factors, kron_product


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3))


def _batches(sizes=(5, 17, 1, 9), dim=12, seed=0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    # anisotropic, non-centred inputs so that a wrong normalisation or a missed row shows
    scale = torch.linspace(0.1, 3.0, dim)
    return [torch.randn(n, dim, generator=generator) * scale + 0.5 for n in sizes]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def test_linear_second_moments_equal_dense_reference():
    model = _mlp()
    batches = _batches()
    stats = collect_input_stats(model, batches, device="cpu")
    assert set(stats) == {"0", "2", "4"}
    # the same float32 activations the model computes, batch by batch, then X^T X / n in float64
    with torch.no_grad():
        first = [b for b in batches]
        second = [torch.relu(model[0](b)) for b in batches]
        third = [torch.tanh(model[2](h)) for h in second]
    for name, rows in {"0": first, "2": second, "4": third}.items():
        x = torch.cat(rows).double().numpy()
        assert stats[name].count == 32 and stats[name].kind == "Linear"
        assert stats[name].second_moment.dtype == torch.float64
        assert np.allclose(stats[name].second_moment.numpy(), x.T @ x / len(x), rtol=1e-12, atol=1e-15), name
        assert np.allclose(stats[name].mean.numpy(), x.mean(0), rtol=1e-12, atol=1e-15), name


def test_token_inputs_are_flattened_over_leading_dims():
    layer = nn.Linear(4, 2)
    generator = torch.Generator().manual_seed(3)
    batches = [torch.randn(2, 5, 4, generator=generator), torch.randn(3, 1, 4, generator=generator)]
    stats = collect_input_stats(nn.Sequential(layer), batches, device="cpu")["0"]
    rows = torch.cat([b.reshape(-1, 4) for b in batches]).double()
    assert stats.count == 13
    assert _rel(stats.second_moment, rows.T @ rows / 13) < 1e-13


def _explicit_patches(x: torch.Tensor, kernel: int, padding: int) -> torch.Tensor:
    """Patches by plain loops (independent of F.unfold), ordered (channel, ky, kx) like weight.reshape(out, -1)."""
    n, c, h, w = x.shape
    padded = torch.zeros(n, c, h + 2 * padding, w + 2 * padding, dtype=x.dtype)
    padded[:, :, padding:padding + h, padding:padding + w] = x
    rows = []
    for sample in range(n):
        for i in range(h + 2 * padding - kernel + 1):
            for j in range(w + 2 * padding - kernel + 1):
                rows.append(padded[sample, :, i:i + kernel, j:j + kernel].reshape(-1))
    return torch.stack(rows)


def test_conv_second_moments_on_unfolded_patches_equal_dense_reference():
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    model = nn.Sequential(conv)
    generator = torch.Generator().manual_seed(2)
    batches = [torch.randn(2, 3, 5, 5, generator=generator), torch.randn(1, 3, 5, 5, generator=generator)]
    stats = collect_input_stats(model, batches, device="cpu")["0"]
    patches = _explicit_patches(torch.cat(batches).double(), 3, 1)
    assert stats.kind == "Conv" and stats.count == 3 * 25 and stats.dim == 27
    assert _rel(stats.second_moment, patches.T @ patches / len(patches)) < 1e-13
    # the patch ordering is the weight's: W.reshape(out, -1) @ patch + b is the conv output
    with torch.no_grad():
        out = conv.double()(torch.cat(batches).double())
        via_patches = patches @ conv.weight.reshape(4, -1).T + conv.bias
    assert torch.allclose(via_patches, out.permute(0, 2, 3, 1).reshape(-1, 4), atol=1e-12)


def test_digits_cnn_conv_and_linear_layers():
    from tnviz.model.demos import DigitsCNN, digits_batches

    torch.manual_seed(5)
    model = DigitsCNN().eval()  # statistics need no training; the trained demo is tested in test_demos
    batches = digits_batches("train", batch_size=100, limit=300)
    stats = collect_input_stats(model, batches, device="cpu")
    assert set(stats) == {"conv1", "conv2", "fc1", "fc2"}
    assert stats["conv1"].count == 300 * 64 and stats["conv1"].dim == 9
    assert stats["conv2"].dim == 16 * 9 and stats["fc1"].count == 300
    x = torch.cat(batches).double()
    patches = _explicit_patches(x, 3, 1)
    assert _rel(stats["conv1"].second_moment, patches.T @ patches / len(patches)) < 1e-13


def test_hooks_leave_outputs_bit_identical_and_are_removed():
    model = _mlp()
    x = _batches()[1]
    with torch.no_grad():
        before = model(x)
    seen = []
    top = model.register_forward_hook(lambda module, inputs, output: seen.append(output.clone()))
    collect_input_stats(model, [x], device="cpu")
    top.remove()
    with torch.no_grad():
        after = model(x)
    assert torch.equal(seen[0], before) and torch.equal(after, before)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert model.training  # the mode is left as it was


def test_hooks_are_removed_when_a_batch_fails():
    model = _mlp()
    with pytest.raises(RuntimeError):
        collect_input_stats(model, [torch.randn(3, 12), torch.randn(3, 7)], device="cpu")
    assert all(not m._forward_hooks for m in model.modules())


def test_layer_selection_by_regex_list_and_errors():
    model = nn.Sequential()
    model.add_module("encoder_fc", nn.Linear(4, 4))
    model.add_module("head", nn.Linear(4, 2))
    assert list(chosen_layers(model, "encoder")) == ["encoder_fc"]
    assert list(chosen_layers(model, ["head"])) == ["head"]
    stats = collect_input_stats(model, [torch.randn(3, 4)], layers="head", device="cpu")
    assert list(stats) == ["head"]
    with pytest.raises(TnvizError, match="matched none"):
        chosen_layers(model, "decoder")
    with pytest.raises(TnvizError, match="must name Linear/Conv2d"):
        chosen_layers(model, ["nope"])
    with pytest.raises(TnvizError, match="saw none"):
        collect_input_stats(model, [], device="cpu")


def _random_psd(n: int, generator: torch.Generator) -> torch.Tensor:
    a = torch.randn(n, n, generator=generator, dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(n, dtype=torch.float64)


@pytest.mark.parametrize("legs", [(3, 4), (2, 3, 2), (4,)])
def test_kron_factors_recover_kronecker_covariances_exactly(legs):
    generator = torch.Generator().manual_seed(len(legs))
    parts = [_random_psd(d, generator) for d in legs]
    covariance = kron_product(parts) * 2.5
    factors = kron_factors(covariance, legs)
    assert [tuple(f.shape) for f in factors] == [(d, d) for d in legs]
    assert _rel(kron_product(factors), covariance) < 1e-12
    for factor in factors:
        assert float(torch.linalg.eigvalsh(factor).min()) > 0


def test_kron_error_is_reported_and_positive_for_general_covariances():
    generator = torch.Generator().manual_seed(7)
    mixing = torch.randn(12, 12, generator=generator)
    batches = [torch.randn(200, 12, generator=generator) @ mixing]
    model = nn.Sequential(nn.Linear(12, 3))
    stats = collect_input_stats(model, batches, device="cpu", leg_dims={"0": (3, 4)})["0"]
    assert stats.leg_dims == (3, 4) and 0.01 < stats.kron_error < 1.5
    exact = kron_product(stats.kron_factors)
    assert stats.kron_error == pytest.approx(_rel(exact, stats.second_moment), rel=1e-9)
    with pytest.raises(TnvizError, match="multiply to the input size"):
        kron_factors(stats.second_moment, (5, 3))


def test_attention_mask_excludes_padding_rows():
    from tnviz.model.bert import Bert

    config = {"vocab_size": 30, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 16, "max_position_embeddings": 16}
    torch.manual_seed(4)
    model = Bert(config).eval()
    sequences = [[2, 5, 6, 7, 3], [2, 9, 3]]
    padded = {"input_ids": torch.tensor([sequences[0], sequences[1] + [0, 0]]),
              "attention_mask": torch.tensor([[1] * 5, [1, 1, 1, 0, 0]])}
    together = collect_input_stats(model, [padded], layers=r"intermediate", device="cpu")
    alone = collect_input_stats(model, [{"input_ids": torch.tensor([s])} for s in sequences], layers=r"intermediate", device="cpu")
    name = "encoder.layer.0.intermediate.dense"
    assert together[name].count == alone[name].count == 8
    assert _rel(together[name].second_moment, alone[name].second_moment) < 1e-5
    unmasked = collect_input_stats(model, [padded], layers=r"intermediate", device="cpu", mask_key=None)
    assert unmasked[name].count == 10 and _rel(unmasked[name].second_moment, alone[name].second_moment) > 1e-3


def test_minilm_feed_forward_statistics_count_real_tokens():
    from tnviz.model.demos import load_minilm, sentences

    model = load_minilm(device="cpu")
    texts = sentences("calibration")[:8]
    batches = model.batches(texts, batch_size=4)
    stats = collect_input_stats(model, batches, layers=r"layer\.0\.(intermediate|output)\.dense", device="cpu",
                                leg_dims={"encoder.layer.0.intermediate.dense": (16, 24)})
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    first, second = stats["encoder.layer.0.intermediate.dense"], stats["encoder.layer.0.output.dense"]
    assert first.count == second.count == tokens
    assert first.dim == 384 and second.dim == 1536
    assert torch.allclose(first.second_moment, first.second_moment.T)
    assert first.kron_error is not None and first.kron_error < 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_accumulates_on_cuda_like_on_cpu():
    model = _mlp().cuda()
    batches = [b.cuda() for b in _batches()]
    on_gpu = collect_input_stats(model, batches, device="cuda")
    on_cpu = collect_input_stats(model.cpu(), [b.cpu() for b in batches], device="cpu")
    for name in on_cpu:
        assert on_gpu[name].second_moment.device.type == "cuda"
        assert _rel(on_gpu[name].second_moment.cpu(), on_cpu[name].second_moment) < 1e-5


class _SharedInput(nn.Module):
    """q, k and v read one tensor (as attention does); ``w`` reads it after an in-place change."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.w = (nn.Linear(6, 4) for _ in range(4))

    def forward(self, x):
        h = torch.tanh(x)
        out = self.q(h) + self.k(h) + self.v(h)
        h.mul_(2.0)  # the same object, changed: its moments must be computed again
        return out.sum() + self.w(h).sum()


def test_layers_fed_the_same_tensor_share_its_moments_and_an_in_place_change_is_seen():
    torch.manual_seed(0)
    model = _SharedInput()
    batches = _batches(sizes=(7, 3), dim=6)
    stats = collect_input_stats(model, batches, device="cpu")
    h = torch.cat([torch.tanh(b) for b in batches]).double()
    for name, rows in {"q": h, "k": h, "v": h, "w": 2 * h}.items():
        want = rows.T @ rows / rows.shape[0]
        assert _rel(stats[name].second_moment, want) < 1e-13, name
        assert stats[name].count == 10
    assert torch.equal(stats["q"].second_moment, stats["v"].second_moment)


def test_a_cached_input_is_not_mistaken_for_a_later_tensor_at_the_same_address():
    """Per batch the cache is cleared, and within one it holds the tensor it describes, so a
    freed activation's memory cannot come back as a 'hit' for a different tensor."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 5))
    batches = _batches(sizes=(4, 4, 4), dim=5, seed=2)
    stats = collect_input_stats(model, batches, device="cpu")
    with torch.no_grad():
        rows = {"0": [], "2": [], "4": []}
        for b in batches:
            h1 = torch.tanh(model[0](b))
            rows["0"].append(b), rows["2"].append(h1), rows["4"].append(torch.tanh(model[2](h1)))
    for name, parts in rows.items():
        x = torch.cat(parts).double()
        assert _rel(stats[name].second_moment, x.T @ x / len(x)) < 1e-13, name


@pytest.mark.parametrize("rows,dim", [(0, 7), (3, 7), (40, 384), (500, 1000), (8192 + 37, 200)])
def test_moments_upper_triangle_blocks_equal_the_full_product_and_are_exactly_symmetric(rows, dim):
    """moments computes x^T x by column blocks of its upper triangle and mirrors it: the same
    matrix as the full float64 product (to rounding), symmetric bit for bit, over one or more chunks."""
    from tnviz.model.calibrate import moments

    x = torch.randn(rows, dim, generator=torch.Generator().manual_seed(dim)) + 0.3
    xtx, total, count = moments(x, torch.device("cpu"))
    ref = x.double().T @ x.double()
    assert count == rows and xtx.dtype == torch.float64
    assert torch.equal(xtx, xtx.T)
    assert float((xtx - ref).abs().max()) <= 1e-12 * max(1.0, float(ref.abs().max()))
    assert torch.allclose(total, x.double().sum(0), rtol=1e-12, atol=1e-12)

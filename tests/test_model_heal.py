"""Healing: layer-wise distillation, every TN layer distilled jointly (heal_distill), end to end on
the digits labels, and the HEALINGS registry."""
from __future__ import annotations

import copy

import pytest
import torch

from tnviz.errors import TnvizError
from tnviz.model.apply import apply_plan
from tnviz.model.heal import HEALINGS, heal, heal_digits, heal_distill, heal_layerwise
from tnviz.model.plan import Rule, make_plan
from tnviz.model.subject import demo_subject
from tnviz.model.surgery import tn_modules


def _setup():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.Tanh(), torch.nn.Linear(48, 32), torch.nn.Tanh(),
                                torch.nn.Linear(32, 8))
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(64, 32, generator=g) for _ in range(4)]
    plan = make_plan(model, [Rule(r"^[02]$", "mpo", {"ratio": 3.0})])
    result = apply_plan(model, plan, calibration=batches, device="cpu")
    return model, result.model, batches


def _loss(model, original, batches) -> float:
    """The reported loss, recomputed: mean over batches of ||f(b) - f_orig(b)||^2 / ||f_orig(b)||^2 (float64)."""
    with torch.no_grad():
        values = []
        for b in batches:
            y = original(b).double()
            values.append(float(((model(b).double() - y) ** 2).mean() / (y ** 2).mean()))
    return sum(values) / len(values)


def test_distill_lowers_the_output_loss_and_trains_only_tn_layers():
    original, compressed, batches = _setup()
    assert set(tn_modules(compressed)) == {"0", "2"}
    last_before = compressed[4].weight.detach().clone()
    before = _loss(compressed, original, batches)
    report = heal_distill(compressed, original, batches, steps=80, lr=3e-3)
    after = _loss(compressed, original, batches)
    assert report.mode == "distill" and report.kept == []
    assert report.loss_before["model"] == pytest.approx(before, rel=1e-4)
    assert report.loss_after["model"] == pytest.approx(after, rel=1e-4)
    assert after < 0.7 * before
    assert torch.equal(compressed[4].weight, last_before)  # the dense layer is not trained
    assert all(p.requires_grad for p in compressed.parameters())  # frozen only while distilling
    assert all(p.grad is None for p in compressed[4].parameters())


def test_distill_is_seeded():
    original, compressed, batches = _setup()
    twin = copy.deepcopy(compressed)
    a = heal_distill(compressed, original, batches, steps=20, lr=1e-3, seed=3)
    b = heal_distill(twin, original, batches, steps=20, lr=1e-3, seed=3)
    assert a.loss_after == b.loss_after
    x = batches[0]
    assert torch.equal(compressed(x), twin(x))


def test_distill_never_leaves_the_model_worse():
    original, compressed, batches = _setup()
    state = {k: v.clone() for k, v in compressed.state_dict().items()}
    report = heal_distill(compressed, original, batches, steps=5, lr=50.0)  # a step this large diverges
    assert report.kept == ["model"] and report.loss_after == report.loss_before
    assert all(torch.equal(v, state[k]) for k, v in compressed.state_dict().items())


def test_distill_refuses_what_it_cannot_do():
    original, compressed, batches = _setup()
    with pytest.raises(TnvizError, match="at least one step; got steps=0"):
        heal_distill(compressed, original, batches, steps=0)
    with pytest.raises(TnvizError, match="at least one calibration batch; got none"):
        heal_distill(compressed, original, [], steps=5)
    with pytest.raises(TnvizError, match="at least one TN layer"):
        heal_distill(copy.deepcopy(original), original, batches, steps=5)


class _Tokens(torch.nn.Module):
    """Per-token outputs ``(batch, tokens, 3)`` from ``input_ids``; ``pad_noise`` changes only the
    padding positions (id 0)."""

    def __init__(self, pad_noise: float = 0.0) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(10, 3)
        torch.nn.init.normal_(self.table.weight, generator=torch.Generator().manual_seed(0))
        self.pad_noise = pad_noise

    def forward(self, input_ids, attention_mask=None):
        out = self.table(input_ids)
        return out + self.pad_noise * (input_ids == 0).unsqueeze(-1).to(out.dtype)


def test_padding_positions_do_not_count_in_output_agreement():
    from tnviz.model.evaluate import output_agreement

    ids = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 0, 0, 0]])
    batch = {"input_ids": ids, "attention_mask": (ids != 0).long()}
    same = output_agreement(_Tokens(), _Tokens(pad_noise=5.0), [batch])
    assert same.cosine == pytest.approx(1.0) and same.rel_error == pytest.approx(0.0) and same.top1 == 1.0
    # without the mask the padding differences count
    unmasked = output_agreement(_Tokens(), _Tokens(pad_noise=5.0), [{"input_ids": ids}])
    assert unmasked.rel_error > 0.1


def test_distill_loss_leaves_padding_positions_out():
    """A model that differs from the original only at padding tokens has nothing to distil."""
    from tnviz.nn import TNLinear

    class Tagged(_Tokens):
        def __init__(self, pad_noise: float) -> None:
            super().__init__(pad_noise)
            self.head = TNLinear(__import__("tnviz").mpo([3], [3], ranks=[]))
            with torch.no_grad():
                self.head.tensors[next(iter(self.head.tensors))].copy_(torch.eye(3))
                self.head.bias.zero_()

        def forward(self, input_ids, attention_mask=None):
            return self.head(super().forward(input_ids, attention_mask))

    ids = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 0, 0, 0]])
    batch = {"input_ids": ids, "attention_mask": (ids != 0).long()}
    report = heal_distill(Tagged(pad_noise=5.0), _Tokens(), [batch], steps=2)
    assert report.loss_before["model"] == pytest.approx(0.0, abs=1e-12)


@pytest.fixture(scope="module")
def mlp():
    return demo_subject("digits-mlp", "cpu")


def test_layerwise_heal_lowers_each_layer_loss(mlp):
    plan = make_plan(mlp.model, [Rule(r"fc[12]$", "mpo", {"ratio": 16})])
    result = apply_plan(mlp.model, plan, calibration=mlp.calibration, device="cpu")
    before = mlp.measure(result.model)["accuracy"]
    report = heal_layerwise(result.model, mlp.model, mlp.calibration, steps=60, lr=2e-3)
    after = mlp.measure(result.model)["accuracy"]
    print(f"layer-wise heal, digits MLP: {before:.4f} -> {after:.4f}")
    assert set(report.loss_after) == {"fc1", "fc2"}
    assert all(report.loss_after[n] < report.loss_before[n] for n in report.loss_after)
    # the curve: one training loss per step and layer, starting near loss_before and going down
    assert {n: len(c) for n, c in report.curve.items()} == {"fc1": 60, "fc2": 60}
    for n, c in report.curve.items():
        assert min(c[-10:]) < c[0] and c[0] < 3 * report.loss_before[n]


def test_end_to_end_heal_of_a_digits_demo(mlp):
    plan = make_plan(mlp.model, [Rule(r"fc[12]$", "mpo", {"ratio": 16})])
    result = apply_plan(mlp.model, plan, calibration=mlp.calibration, device="cpu")
    compressed = mlp.measure(result.model)["accuracy"]
    seen = []
    report = heal_digits(result.model, epochs=2, seed=0, on_loss=lambda name, loss: seen.append((name, loss)))
    healed = mlp.measure(result.model)["accuracy"]
    assert seen == [("model", v) for v in report.curve["model"]] and len(seen) == 2  # live, as recorded
    assert report.loss_after["model"] < report.loss_before["model"]
    assert healed > compressed + 0.05


def test_the_registry_names_every_healing_and_refuses_what_does_not_apply(mlp):
    assert list(HEALINGS) == ["layer-wise", "distill", "end-to-end"]
    for name, healing in HEALINGS.items():
        assert healing.name == name and healing.default_steps >= 1 and healing.unit
    plan = make_plan(mlp.model, [Rule(r"fc2$", "mpo", {"ratio": 16})])
    result = apply_plan(mlp.model, plan, calibration=mlp.calibration, device="cpu")
    report = heal(result.model, mlp, "layer-wise", steps=5)
    assert report.mode == "layer-wise" and set(report.loss_after) == {"fc2"}
    with pytest.raises(TnvizError, match="healing must be one of"):
        heal(result.model, mlp, "bogus")
    sentences_like = demo_subject("digits-mlp", "cpu")
    sentences_like.kind = "outputs"  # an uploaded model: no labels to train end to end on
    with pytest.raises(TnvizError, match="'end-to-end' healing applies to digits"):
        heal(result.model, sentences_like, "end-to-end")


class _Block(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.up, self.down = torch.nn.Linear(width, 2 * width), torch.nn.Linear(2 * width, width)

    def forward(self, x):
        return x + self.down(torch.tanh(self.up(x)))


class _Blocks(torch.nn.Module):
    """An encoder in miniature: an input layer, then blocks in one ModuleList (as BERT's)."""

    def __init__(self, width: int = 16, depth: int = 4):
        super().__init__()
        self.embed = torch.nn.Linear(8, width)
        self.layers = torch.nn.ModuleList(_Block(width) for _ in range(depth))

    def forward(self, x):
        x = self.embed(x)
        for block in self.layers:
            x = block(x)
        return x


def _blocks_setup():
    torch.manual_seed(0)
    model = _Blocks()
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(48, 8, generator=g) for _ in range(3)]
    plan = make_plan(model, [Rule(r"layers\.\d+\.(up|down)$", "svd", {"max_rank": 3})])
    return model, plan, batches


def test_layerwise_heal_replays_the_blocks_before_each_layer_bit_for_bit(monkeypatch):
    """Each layer's compressed inputs come from the previous block's recorded output, not a forward
    from the model's start: the healed model is the same, bit for bit, as with full captures, and
    the blocks run as often as the replay promises (counted, not timed)."""
    model, plan, batches = _blocks_setup()
    calls = {"n": 0}
    forward = _Block.forward

    def counted(self, x):
        calls["n"] += 1
        return forward(self, x)

    monkeypatch.setattr(_Block, "forward", counted)
    healed = {}
    for replay in (True, False):
        compressed = apply_plan(model, plan, calibration=batches, device="cpu").model
        calls["n"] = 0
        report = heal_layerwise(compressed, model, batches, steps=4, replay=replay)
        healed[replay] = (compressed.state_dict(), calls["n"], report)
    (fast, fast_calls, a), (full, full_calls, b) = healed[True], healed[False]
    assert fast.keys() == full.keys() and all(torch.equal(fast[k], full[k]) for k in fast)
    assert a.loss_after == b.loss_after and a.curve == b.curve
    # per batch: the teacher's capture runs 4 blocks; the 8 layers' captures (each stops inside its
    # block) run blocks 1, 1 / 2, 2 / 3, 3 / 4, 4 from the start (20 in all) without the replay, and
    # with it 1, 1, then 2 (block 0 once more, recording its output, and block 1), 1, 2, 1, 2, 1 (11)
    assert full_calls == 3 * (4 + 20) and fast_calls == 3 * (4 + 11)


def test_layerwise_heal_without_a_block_list_captures_from_the_start():
    """Layers outside one ModuleList of blocks (a Sequential) still heal, each capture a full pass."""
    original, healed, batches = _setup()
    report = heal_layerwise(healed, original, batches, steps=5)
    assert set(report.loss_after) == {"0", "2"} and all(report.loss_after[n] <= report.loss_before[n]
                                                        for n in report.loss_after)


def test_adam_is_torch_adam_bit_for_bit():
    from tnviz.model.heal import Adam

    def run(make):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(7, 13), torch.nn.Tanh(), torch.nn.Linear(13, 3))
        opt = make(list(net.parameters()))
        g = torch.Generator().manual_seed(1)
        for step in range(25):
            opt.zero_grad()
            out = net(torch.randn(16, 7, generator=g))
            (out[:, :2] if step % 5 == 4 else out).pow(2).mean().backward()
            opt.step()
        return [p.detach().clone() for p in net.parameters()]

    ours = run(lambda p: Adam(p, lr=3e-3))
    for foreach in (False, True):
        theirs = run(lambda p: torch.optim.Adam(p, lr=3e-3, foreach=foreach))
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs)), foreach
    with pytest.raises(TnvizError, match="Adam needs lr > 0"):
        Adam([torch.zeros(2, requires_grad=True)], lr=0)


def test_layerwise_heal_reports_kept_only_for_layers_left_as_they_came():
    """A healing that lowers every layer's loss keeps none as it came; one that throws the layers
    away (a learning rate of 10) leaves each as it came (its state, its loss) and says so."""
    model, plan, batches = _blocks_setup()
    compressed = apply_plan(model, plan, calibration=batches, device="cpu").model
    report = heal_layerwise(compressed, model, batches, steps=20, lr=1e-2)
    assert report.kept == [] and all(report.loss_after[n] < report.loss_before[n] for n in report.loss_after)
    compressed = apply_plan(model, plan, calibration=batches, device="cpu").model
    before = copy.deepcopy(compressed.state_dict())
    report = heal_layerwise(compressed, model, batches, steps=20, lr=10.0)
    assert report.kept == list(report.loss_before)
    assert report.loss_after == report.loss_before
    assert all(torch.equal(before[k], v) for k, v in compressed.state_dict().items())

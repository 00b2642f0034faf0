"""A tensorized autoencoder on the digits: its bottleneck is a bond of one MPO.

The network (:func:`autoencoder_network`) is a four-core MPO ``64 -> 64``:
``A[i1, b1] B[b1, i2, z] C[z, o1, b3] D[b3, o2]`` with the 8x8 image read as legs ``i1`` (row),
``i2`` (column) and written back as ``o1, o2``.  Every input leg sits left of bond ``z`` and every
output leg right of it, so ``z`` is the only path from pixels to pixels: the encoder is ``x·A·B``
(the bond state of :func:`tnviz.bonds.bond_cut` at ``z``), the latent code is ``tanh`` of it plus
a bias, and the decoder is ``code·C·D`` followed by a sigmoid (pixels in [0, 1]).  With
``activation=None`` and ``output='linear'`` it is exactly the linear layer of the MPO.

Its bond channels are shown as images by decoding one-hot codes (:meth:`channel_images`).

>>> ae = TensorizedAutoencoder(latent=6)
>>> ae.network.bonds
('b1', 'z', 'b3')
>>> import torch
>>> ae(torch.rand(3, 64)).shape, ae.encode(torch.rand(3, 64)).shape
(torch.Size([3, 64]), torch.Size([3, 6]))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..bonds import bond_cut, bond_state, finish_from_state
from ..errors import TnvizError
from ..network import TensorNetwork

#: Name of the latent bond.
LATENT_BOND = "z"
#: Bonds whose activations the autoencoder reports (:meth:`TensorizedAutoencoder.bond_activations`).
ENCODER_BONDS = (LATENT_BOND, "b1")

ACTIVATIONS: dict[str, Any] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "none": lambda z: z,
}
OUTPUTS: dict[str, Any] = {"sigmoid": torch.sigmoid, "linear": lambda y: y}


def autoencoder_network(latent: int = 16, side: int = 8, rows: int = 8, cols: int = 8) -> TensorNetwork:
    """The MPO ``(rows*cols) -> (rows*cols)`` whose middle bond ``z`` (size ``latent``) is the code;
    the outer bonds ``b1``, ``b3`` have size ``side`` (``side >= rows`` keeps them lossless)."""
    for name, v in (("latent", latent), ("side", side), ("rows", rows), ("cols", cols)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise TnvizError(f"autoencoder sizes must be positive integers; {name}={v!r}")
    return TensorNetwork.build(
        [("A", ["i1", "b1"]), ("B", ["b1", "i2", LATENT_BOND]), ("C", [LATENT_BOND, "o1", "b3"]), ("D", ["b3", "o2"])],
        {"i1": rows, "i2": cols, "o1": rows, "o2": cols, "b1": side, LATENT_BOND: latent, "b3": side},
        inputs=["i1", "i2"], outputs=["o1", "o2"], name=f"autoencoder MPO {rows * cols}->{latent}->{rows * cols}",
        layout={"A": (0.0, 0.0), "B": (2.0, 0.0), "C": (4.0, 0.0), "D": (6.0, 0.0)},
    )


class TensorizedAutoencoder(nn.Module):
    """``decode(encode(x))`` through one MPO split at its bond ``z`` (see the module docstring).

    The MPO's tensors live in ``self.layer`` (a :class:`~tnviz.nn.TNLinear` whose bias is the
    decoder's output bias), so the layer can be drawn, costed and analysed like any TN layer.
    """

    def __init__(self, latent: int = 16, side: int = 8, activation: str = "tanh", output: str = "sigmoid",
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        from ..nn import TNLinear

        if activation not in ACTIVATIONS:
            raise TnvizError(f"the code activation must be one of {list(ACTIVATIONS)}; got {activation!r}")
        if output not in OUTPUTS:
            raise TnvizError(f"the output must be one of {list(OUTPUTS)}; got {output!r}")
        self.network = autoencoder_network(latent, side)
        self.layer = TNLinear(self.network, bias=True, device=device, dtype=dtype, strategy="factorized")
        self.code_bias = nn.Parameter(torch.zeros(latent, device=device, dtype=dtype))
        self.cut = bond_cut(self.network, LATENT_BOND)
        self.activation, self.output = activation, output
        self.latent = latent

    def _tensors(self) -> dict[str, torch.Tensor]:
        return self.layer.named_network_tensors()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent code ``(N, latent)``: activation(bond state at ``z`` + code bias)."""
        x2d = x.reshape(x.shape[0], -1)
        return ACTIVATIONS[self.activation](bond_state(self.cut, x2d, self._tensors()) + self.code_bias)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 64)`` from codes ``(N, latent)``."""
        return OUTPUTS[self.output](finish_from_state(self.cut, code, self._tensors()) + self.layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def bond_activations(self, x: torch.Tensor, bond: str = LATENT_BOND, reduce: str = "sum",
                         at: dict[str, int] | None = None) -> torch.Tensor:
        """``(N, size)`` activations of a bond of the encoder: the code for ``z`` (after the
        activation, what the decoder reads), the reduced bond state for ``b1``."""
        from ..bonds import reduce_state

        if bond == LATENT_BOND:
            return self.encode(x)
        if bond != "b1":
            raise TnvizError(f"the autoencoder's encoder bonds are {list(ENCODER_BONDS)}; got {bond!r}")
        cut = bond_cut(self.network, bond)
        return reduce_state(cut, bond_state(cut, x.reshape(x.shape[0], -1), self._tensors()), reduce, at)

    def channel_images(self, scale: float = 1.0, relative: bool = False) -> torch.Tensor:
        """Each bond channel as an image: ``decode(scale · e_k)`` for the one-hot codes ``e_k``,
        shape ``(latent, rows, cols)``; ``relative`` subtracts ``decode(0)`` (the channel's own effect)."""
        p = self.code_bias
        with torch.no_grad():
            codes = scale * torch.eye(self.latent, device=p.device, dtype=p.dtype)
            images = self.decode(codes)
            if relative:
                images = images - self.decode(torch.zeros_like(codes[:1]))
            return images.reshape(self.latent, *self.network.out_dims)


@dataclass
class AutoencoderReport:
    """Training summary: reconstruction MSE (per pixel) and the mean-image baseline, both held out."""

    epochs: int
    train_loss: list[float] = field(default_factory=list)
    test_mse: float = float("nan")
    baseline_mse: float = float("nan")  # predicting the training mean image for every held-out digit
    seconds: float = 0.0

    @property
    def improvement(self) -> float:
        """Baseline MSE / autoencoder MSE (above 1: better than the mean image)."""
        return self.baseline_mse / max(self.test_mse, 1e-300)


def mean_image_mse(x_train: torch.Tensor, x_test: torch.Tensor) -> float:
    """MSE per pixel of predicting the training mean image for every test image."""
    mean = x_train.reshape(len(x_train), -1).mean(0)
    return float(((x_test.reshape(len(x_test), -1) - mean) ** 2).mean())


def reconstruction_mse(model: TensorizedAutoencoder, x: torch.Tensor) -> float:
    """MSE per pixel of ``model(x)`` against ``x``."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            flat = x.reshape(len(x), -1)
            return float(((model(flat) - flat) ** 2).mean())
    finally:
        model.train(was)


def train_autoencoder(latent: int = 16, *, epochs: int = 40, lr: float = 1e-2, batch_size: int = 128,
                      activation: str = "tanh", seed: int = 0, device: Any = None
                      ) -> tuple[TensorizedAutoencoder, AutoencoderReport]:
    """Train on the digits training split (seeded; global RNG untouched; single-threaded on CPU
    as the digits demos do) and measure the held-out error against the mean-image baseline."""
    import time

    from .demos import digits_split
    from .device import resolve_device

    if epochs < 1:
        raise TnvizError(f"training needs at least one epoch; got epochs={epochs}")
    start = time.perf_counter()
    device = resolve_device(device)
    data = digits_split()
    x = data.x_train.reshape(len(data.x_train), -1).to(device)
    x_test = data.x_test.reshape(len(data.x_test), -1).to(device)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    report = AutoencoderReport(epochs)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = TensorizedAutoencoder(latent, activation=activation, device=device)
            with torch.no_grad():  # start the output bias at the logit of the mean image
                model.layer.bias.copy_(torch.logit(x.mean(0).clamp(1e-3, 1 - 1e-3)))
            generator = torch.Generator().manual_seed(seed)
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
            model.train()
            for _ in range(epochs):
                order = torch.randperm(len(x), generator=generator).to(device)
                total = 0.0
                for s in range(0, len(x), batch_size):
                    rows = x[order[s:s + batch_size]]
                    optimizer.zero_grad(set_to_none=True)
                    loss = ((model(rows) - rows) ** 2).mean()
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * len(rows)
                report.train_loss.append(total / len(x))
    finally:
        torch.set_num_threads(threads)
    model.eval()
    report.test_mse = reconstruction_mse(model, x_test)
    report.baseline_mse = mean_image_mse(x, x_test)
    report.seconds = time.perf_counter() - start
    return model, report

"""The tensorized autoencoder: one MPO split at its bond z, trained on digits, beats the mean image."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tnviz
from tnviz.model.autoencoder import (
    LATENT_BOND, TensorizedAutoencoder, autoencoder_network, mean_image_mse, reconstruction_mse, train_autoencoder,
)
from tnviz.errors import TnvizError


def test_network_is_an_mpo_whose_middle_bond_is_the_only_path():
    net = autoencoder_network(latent=5)
    assert net.in_features == net.out_features == 64 and net.bonds == ("b1", LATENT_BOND, "b3")
    # the dense 64x64 map has rank at most the latent size
    t = tnviz.random_tensors(net, seed=0, dtype=np.float64)
    assert np.linalg.matrix_rank(tnviz.to_dense(net, t)) == 5
    with pytest.raises(TnvizError, match="positive integers"):
        autoencoder_network(latent=0)


def test_linear_autoencoder_is_the_mpo_layer():
    torch.manual_seed(0)
    ae = TensorizedAutoencoder(latent=6, activation="none", output="linear", dtype=torch.float64)
    x = torch.rand(9, 64, dtype=torch.float64)
    dense = tnviz.to_dense(ae.network, {n: t.detach().numpy() for n, t in ae.layer.named_network_tensors().items()})
    expected = x.numpy() @ dense.T + ae.layer.bias.detach().numpy()
    assert np.allclose(ae(x).detach().numpy(), expected, atol=1e-12)
    assert torch.allclose(ae(x), ae.layer(x), atol=1e-12)
    with pytest.raises(TnvizError, match="code activation"):
        TensorizedAutoencoder(activation="gelu")


@pytest.fixture(scope="module")
def trained():
    return train_autoencoder(latent=12, epochs=15, seed=0)


def test_training_beats_the_mean_image_on_heldout_digits(trained):
    from tnviz.model.demos import digits_split

    model, report = trained
    data = digits_split()
    # the baseline measured here, independently of the report
    mean = data.x_train.reshape(len(data.x_train), -1).mean(0)
    test = data.x_test.reshape(len(data.x_test), -1)
    baseline = float(((test - mean) ** 2).mean())
    assert report.baseline_mse == pytest.approx(baseline, rel=1e-6)
    assert mean_image_mse(data.x_train, data.x_test) == pytest.approx(baseline, rel=1e-6)
    assert report.test_mse == pytest.approx(reconstruction_mse(model, data.x_test), rel=1e-6)
    assert report.test_mse < 0.5 * baseline, (report.test_mse, baseline)
    assert report.train_loss[-1] < report.train_loss[0]


def test_channel_images_decode_one_hot_codes(trained):
    model, _ = trained
    images = model.channel_images()
    assert images.shape == (12, 8, 8)
    with torch.no_grad():
        third = model.decode(torch.eye(12)[3:4]).reshape(8, 8)
    assert torch.allclose(images[3], third)
    assert float((images[0] - images[1]).abs().max()) > 1e-3  # channels decode to different images
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    with torch.no_grad():
        base = model.decode(torch.zeros(1, 12)).reshape(8, 8)
    assert torch.allclose(model.channel_images(relative=True)[5], images[5] - base)


def test_training_is_seeded():
    state = torch.random.get_rng_state()
    a, ra = train_autoencoder(latent=4, epochs=1, seed=3)
    b, rb = train_autoencoder(latent=4, epochs=1, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert ra.train_loss == rb.train_loss
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(TnvizError, match="at least one epoch"):
        train_autoencoder(epochs=0)

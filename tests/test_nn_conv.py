"""TN convolutions against nn.Conv2d at full rank (paper Fig. 3 iv-v)."""
from __future__ import annotations

import pytest
import torch

import tnviz
from tnviz.errors import InvalidNetworkError, RankError
from tnviz.nn import CPConv2d, TNConv2d, TuckerConv2d, from_conv

F64 = torch.float64

GEOMETRIES = [
    {"kernel_size": 3, "padding": 1},
    {"kernel_size": (3, 2), "stride": 2, "padding": (1, 0), "dilation": (1, 2)},
    {"kernel_size": 1},
    {"kernel_size": 1, "stride": 2},
]


def make_conv(seed=0, cin=3, cout=5, **geometry):
    torch.manual_seed(seed)
    return torch.nn.Conv2d(cin, cout, **geometry).to(F64)


def image(cin=3, seed=1):
    return torch.randn(2, cin, 9, 7, dtype=F64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_tucker2_at_full_rank_equals_conv(geometry):
    conv = make_conv(**geometry)
    layer = from_conv(conv, "tucker2")
    assert isinstance(layer, TuckerConv2d)
    x = image()
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.kernel(), conv.weight.detach())
    # its network view is a valid SPEC network whose dense matrix is the flattened kernel
    dense = tnviz.to_dense(layer.network, {k: v.detach() for k, v in layer.network_tensors().items()})
    torch.testing.assert_close(dense, conv.weight.detach().reshape(conv.out_channels, -1))


def test_tucker2_truncated_is_smaller_and_approximate():
    conv = make_conv(cin=8, cout=8, kernel_size=3, padding=1)
    layer = TuckerConv2d.from_conv(conv, (3, 3))
    x = image(cin=8)
    with torch.no_grad():
        err = float((layer(x) - conv(x)).norm() / conv(x).norm())
    assert 0.01 < err < 1.0
    assert sum(p.numel() for p in (layer.u_in, layer.core, layer.u_out)) < conv.weight.numel()


def exact_cp_factors(K):
    """An exact CP of a kernel with R = cin*kh*kw: one-hot factors on the patch legs."""
    cout, cin, kh, kw = K.shape
    R = cin * kh * kw
    r = torch.arange(R)
    c, h, w = r // (kh * kw), (r // kw) % kh, r % kw
    one_hot = lambda idx, n: torch.nn.functional.one_hot(idx, n).T.to(K.dtype)  # noqa: E731
    return {"cout": K.reshape(cout, R), "cin": one_hot(c, cin), "kh": one_hot(h, kh), "kw": one_hot(w, kw)}


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_cp_conv_with_exact_factors_equals_conv(geometry):
    conv = make_conv(**geometry)
    layer = CPConv2d.from_factors(conv, exact_cp_factors(conv.weight.detach()))
    x = image()
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.kernel(), conv.weight.detach())


def test_cp_conv_from_conv_recovers_a_low_rank_kernel():
    pytest.importorskip("tnviz.decompose")
    net = tnviz.conv_cp(5, 3, 3, rank=2)
    tensors = tnviz.random_tensors(net, seed=0)
    conv = make_conv(kernel_size=3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(tnviz.to_dense(net, tensors)).reshape(5, 3, 3, 3))
    layer = from_conv(conv, "cp", ranks=2)
    assert layer.decomposition_error < 1e-6
    x = image()
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("method", ["tucker", "mpo"])
def test_tn_conv_over_the_patch_legs_equals_conv(geometry, method):
    pytest.importorskip("tnviz.decompose")
    conv = make_conv(**geometry)
    layer = from_conv(conv, method)
    assert isinstance(layer, TNConv2d)
    assert layer.network.inputs == ("cin", "kh", "kw") and layer.network.outputs == ("cout",)
    x = image()
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.kernel(), conv.weight.detach())


def test_tn_conv_with_a_template_kernel_network_and_gradients():
    net = tnviz.conv_tucker(5, 3, 3, ranks=[5, 3, 3, 3])
    layer = TNConv2d(net, in_channels=3, kernel_size=3, padding=1, dtype=F64)
    conv = make_conv(kernel_size=3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(layer.kernel())
        conv.bias.copy_(layer.linear.bias)
    x = image().requires_grad_(True)
    g = torch.randn(2, 5, 9, 7, dtype=F64)
    (layer(x) * g).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    (conv(x2) * g).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    # the kernel's gradient, pulled back through the network, equals the conv's
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in layer.linear.named_network_tensors().items()}
    K = tnviz.to_dense(net, leaves).reshape(5, 3, 3, 3)
    K.backward(conv.weight.grad)
    for n, p in layer.linear.named_network_tensors().items():
        torch.testing.assert_close(p.grad, leaves[n].grad)


def test_conv_state_dict_round_trip():
    conv = make_conv(kernel_size=3, padding=1)
    a = from_conv(conv, "tucker2", ranks=(2, 2))
    b = TuckerConv2d(3, 5, 3, (2, 2), padding=1, dtype=F64)
    x = image()
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x), b(x))


def test_conv_bad_input():
    with pytest.raises(InvalidNetworkError, match="cover one patch"):
        TNConv2d(tnviz.mpo([4, 4], [4], ranks=2), in_channels=3, kernel_size=3)
    with pytest.raises(InvalidNetworkError, match="choose one of"):
        from_conv(make_conv(kernel_size=3), "bogus")
    with pytest.raises(RankError, match="needs its rank"):
        from_conv(make_conv(kernel_size=3), "cp")
    with pytest.raises(InvalidNetworkError, match="groups=1"):
        from_conv(torch.nn.Conv2d(4, 4, 3, groups=2), "tucker2")

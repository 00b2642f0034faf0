"""Networks and the dense-reference check shared by the layer and strategy tests (test_nn_linear,
test_nn_chain, test_nn_modes, test_nn_ring, test_nn_rebuild, test_nn_workspace): odd sizes, size-1
legs, random shapes (seeded) and every small template."""
from __future__ import annotations

import numpy as np
import torch

import tnviz
from tnviz.nn import STRATEGIES, TNLinear

F64 = torch.float64


# the layer tests' networks, name -> network; odd leg sizes on purpose, ranks at or above full rank where it matters
LAYER_NETWORKS = {
    "mpo": tnviz.mpo([2, 3, 5], [3, 2, 3], ranks=[4, 5]),
    "mpo unequal legs": tnviz.mpo([3, 5], [2, 3, 2], ranks=3),
    "mpo one core": tnviz.mpo([7], [5], ranks=[]),
    "tensor ring": tnviz.tensor_ring([3, 2, 2], [2, 3, 2], ranks=[2, 3, 2]),
    "tucker": tnviz.tucker([3, 5], [2, 7], ranks=[2, 3, 4, 2]),
    "cp": tnviz.cp([3, 5], [2, 7], rank=4),
    "generic": tnviz.from_einsum(
        "xab,ayc,bczd,dw->xyzw", {"x": 3, "y": 2, "z": 5, "w": 3, "a": 2, "b": 3, "c": 2, "d": 4}, inputs="xz"
    ),
    "hyperedge generic": tnviz.from_einsum(
        "xr,yr,zrs,ws->xyzw", {"x": 3, "y": 4, "z": 2, "w": 5, "r": 3, "s": 2}, inputs="xz"
    ),
}


def strategies_for(net):
    return [name for name, s in STRATEGIES.items() if s.supports(net)]


def random_tucker(rng: np.random.Generator) -> tnviz.TensorNetwork:
    n_in, n_out = rng.integers(1, 4), rng.integers(1, 4)
    ins = [int(v) for v in rng.integers(1, 7, n_in)]
    outs = [int(v) for v in rng.integers(1, 7, n_out)]
    ranks = [int(v) for v in rng.integers(1, 5, n_in + n_out)]
    return tnviz.tucker(ins, outs, ranks=ranks)


def random_cp(rng: np.random.Generator) -> tnviz.TensorNetwork:
    ins = [int(v) for v in rng.integers(1, 7, rng.integers(1, 4))]
    outs = [int(v) for v in rng.integers(1, 7, rng.integers(1, 4))]
    return tnviz.cp(ins, outs, rank=int(rng.integers(1, 6)))


def templates() -> list[tnviz.TensorNetwork]:
    nets = []
    for name in tnviz.TEMPLATES:
        net = tnviz.build_template(name)
        if net.dense_params <= 1 << 20:
            nets.append(net)
    return nets


RNG = np.random.default_rng(7)
MODES_NETWORKS = {
    "tucker odd": tnviz.tucker([3, 5], [2, 7], ranks=[2, 3, 4, 2]),
    "tucker 3 legs": tnviz.tucker([3, 5, 2], [7, 2], ranks=2),
    "tucker one leg": tnviz.tucker([5], [3], ranks=2),
    "cp odd": tnviz.cp([3, 5], [2, 7], rank=4),
    "cp rank 1 size-1 leg": tnviz.cp([3, 1, 2], [7, 1], rank=1),
    **{f"random tucker {k}": random_tucker(RNG) for k in range(4)},
    **{f"random cp {k}": random_cp(RNG) for k in range(4)},
    **{f"template {net.name}": net for net in templates() if STRATEGIES["modes"].supports(net)},
}



def random_ring(rng: np.random.Generator) -> tnviz.TensorNetwork:
    n = int(rng.integers(2, 5))
    ins = [int(v) for v in rng.integers(1, 6, n)]
    outs = [int(v) for v in rng.integers(1, 6, n)]
    return tnviz.tensor_ring(ins, outs, ranks=[int(v) for v in rng.integers(1, 5, n)])


RING_NETWORKS = {
    "ring 2 cores (two bonds between them)": tnviz.tensor_ring([3, 5], [2, 7], ranks=[2, 3]),
    "ring odd": tnviz.tensor_ring([3, 5, 2], [2, 7, 3], ranks=[2, 3, 4]),
    "ring bond 1 everywhere": tnviz.tensor_ring([3, 4, 2], [2, 3, 2], ranks=1),
    "ring size-1 legs": tnviz.tensor_ring([3, 1, 2, 2], [1, 3, 2, 2], ranks=[2, 1, 3, 2]),
    "ring unequal legs": tnviz.tensor_ring([4, 3, 5], [2, 3, 4], ranks=2, in_cores=[0, 0, 1], out_cores=[1, 2, 2]),
    **{f"random ring {k}": random_ring(RNG) for k in range(5)},
    **{f"template {net.name}": net for net in templates() if STRATEGIES["ring"].supports(net)},
}



HALVES_NETWORKS = {**RING_NETWORKS, "mpo odd": tnviz.mpo([2, 3, 5], [3, 2, 3], ranks=[4, 5]),
                   "mpo unequal legs": tnviz.mpo([3, 5], [2, 3, 2], ranks=3),
                   "mpo 5 cores": tnviz.mpo([2, 3, 2, 1, 2], [3, 1, 2, 2, 2], ranks=[2, 3, 4, 2]),
                   **{f"template {net.name}": net for net in templates() if STRATEGIES["chain"].supports(net)}}


def reference(net: tnviz.TensorNetwork, seed: int):
    tensors = tnviz.random_tensors(net, seed=seed)
    leaves = {n: torch.tensor(a, requires_grad=True) for n, a in tensors.items()}
    return tensors, leaves



def check_against_dense(net: tnviz.TensorNetwork, strategy: str, seed: int) -> None:
    """Eval (cached, twice) and training (gradients of x and of every tensor) through ``strategy``
    against the float64 dense reference, at batch 1 and 5."""
    tensors, leaves = reference(net, seed=seed)
    bias = torch.linspace(-1, 1, net.out_features, dtype=F64)
    layer = TNLinear.from_tensors(net, tensors, bias, strategy=strategy)
    W = torch.from_numpy(tnviz.to_dense(net, tensors))
    for batch in (1, 5):
        x0 = torch.randn(batch, net.in_features, dtype=F64, generator=torch.Generator().manual_seed(batch))
        g = torch.randn(batch, net.out_features, dtype=F64, generator=torch.Generator().manual_seed(batch + 9))
        # eval mode under no_grad: the cached matrices
        layer.eval()
        with torch.no_grad():
            torch.testing.assert_close(layer(x0), x0 @ W.T + bias, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(layer(x0), x0 @ W.T + bias, rtol=1e-12, atol=1e-12)  # cache hit
        # training: gradients for x and every tensor against autograd through to_dense
        layer.train()
        layer.zero_grad()
        for leaf in leaves.values():
            leaf.grad = None
        x = x0.clone().requires_grad_(True)
        x_ref = x0.clone().requires_grad_(True)
        (layer(x) * g).sum().backward()
        ((x_ref @ tnviz.to_dense(net, leaves).T) * g).sum().backward()
        assert layer.last_strategy == strategy
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-12)
        for n, p in layer.named_network_tensors().items():
            torch.testing.assert_close(p.grad, leaves[n].grad, rtol=1e-10, atol=1e-12)


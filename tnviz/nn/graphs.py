"""CUDA graphs for small batches: capture a module's inference forward once per input shape and
replay it, so that a TN layer's many small kernels cost one launch.

At batch 1..64 a 4096x4096 MPO layer's forward is a handful of tiny GEMMs (merged cores, bias)
whose launch overhead (a few microseconds each, plus Python) exceeds their arithmetic; a captured
:class:`torch.cuda.CUDAGraph` replays all of them from one launch.  :class:`GraphedModule` wraps any
module (``TNLinear``, ``nn.Linear``, a stack): in eval mode, on CUDA, for inputs whose batch
(product of leading axes) is at most ``max_batch`` and when no gradient is needed, the first call
with a new shape warms the module up on a side stream and captures it (torch's documented recipe,
``torch.cuda.graph``); later calls copy the input into the graph's static input, replay, and return
a copy of its static output.  Every other call (CPU, training, gradients needed, larger batches,
during another capture) runs the module eagerly.

Weights: a graph reads the storage its tensors had at capture.  Before each replay the wrapper
compares every parameter's and buffer's address and version counter with those at capture and
re-captures on any difference, so in-place updates (``optimizer.step()``, ``load_state_dict``,
``p.mul_()`` under ``no_grad``) and re-assigned parameters (``layer.bias = nn.Parameter(...)``,
``.to()``) are both seen.  Not seen: writes through ``p.data`` (they bypass the version counter,
as they do for TNLinear's own weight cache) and state outside parameters and buffers.

>>> import torch, tnviz
>>> from tnviz.nn import TNLinear
>>> layer = graphed(TNLinear(tnviz.mpo([4, 4], [4, 4], ranks=2)).eval())
>>> with torch.no_grad():
...     y = layer(torch.randn(3, 16))        # on CPU: eager, nothing captured
>>> y.shape, layer.captures
(torch.Size([3, 16]), 0)
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

#: Default largest batch (product of the input's leading axes) that is captured: above this the
#: kernels are long enough that launch overhead no longer matters (benchmarks/README.md).
MAX_BATCH = 64


@dataclass
class Captured:
    """One captured forward: its graph and the static tensors it reads and writes."""

    graph: Any  # torch.cuda.CUDAGraph
    inputs: torch.Tensor
    output: torch.Tensor
    held: tuple  # cached tensors the graph reads (kept alive if their owner drops them)


class GraphedModule(nn.Module):
    """``module`` with its small-batch CUDA inference replayed from captured graphs.

    ``max_batch`` is the largest batch captured, ``warmup`` the eager calls on a side stream
    before each capture (plans, caches, autotuning, Triton compilation happen there).  Counters
    ``captures`` and ``replays`` say what happened.
    """

    def __init__(self, module: nn.Module, max_batch: int = MAX_BATCH, warmup: int = 3) -> None:
        super().__init__()
        self.module = module
        self.max_batch = max_batch
        self.warmup = warmup
        self.captures = 0
        self.replays = 0
        self._graphs: dict[tuple, Captured] = {}
        self._weights: tuple = ()

    def replayable(self, x: torch.Tensor) -> bool:
        """Whether a call with ``x`` runs from a graph (else eagerly)."""
        if not x.is_cuda or self.module.training or torch.cuda.is_current_stream_capturing():
            return False
        if math.prod(x.shape[:-1]) > self.max_batch:
            return False
        return not (torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.replayable(x):
            return self.module(x)
        weights = self._weights_state()
        if weights != self._weights:  # an update or a new tensor since the graphs were captured
            self._graphs.clear()
            self._weights = weights
        key = (tuple(x.shape), x.dtype, x.device)
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._graphs[key] = self._capture(x)
        captured.inputs.copy_(x)
        captured.graph.replay()
        self.replays += 1
        return captured.output.clone()  # the next replay overwrites the static output

    def _weights_state(self) -> tuple:
        return tuple((t.data_ptr(), t._version) for t in itertools.chain(self.parameters(), self.buffers()))

    def _capture(self, x: torch.Tensor) -> Captured:
        static_x = x.clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.no_grad():
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self.module(static_x)
            torch.cuda.current_stream(x.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # capture on the warm-up stream: per-stream library state (cuBLAS workspaces, handles)
            # is then created before the capture, not during it
            with torch.cuda.graph(graph, stream=side):
                static_y = self.module(static_x)
        self.captures += 1
        return Captured(graph, static_x, static_y, _cached_tensors(self.module))

    def reset(self) -> None:
        """Drop every captured graph (they are captured again on the next calls)."""
        self._graphs.clear()


def _cached_tensors(module: nn.Module) -> tuple:
    """The weight caches of TN layers (``TNLinear._cache``: merged cores, rebuilt weights) that a
    graph captured in eval mode reads instead of the parameters.  The graph holds no reference to
    them; without this, ``layer.train(); layer.eval()`` (which clears the cache) would free memory
    that the next replay reads."""
    held = []
    for m in module.modules():
        cache = getattr(m, "_cache", None)
        if isinstance(cache, dict):
            held.extend(value for _, value in cache.values())
    return tuple(held)


def graphed(module: nn.Module, max_batch: int = MAX_BATCH, warmup: int = 3) -> GraphedModule:
    """``module`` wrapped in a :class:`GraphedModule` (see there).

    >>> import torch
    >>> graphed(torch.nn.Linear(4, 2)).max_batch
    64
    """
    return GraphedModule(module, max_batch, warmup)

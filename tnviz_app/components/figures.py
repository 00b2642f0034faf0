"""The cost figures every page shows for a network, from one cached call of :func:`tnviz.cost`.

Designer, Costs, Stack view, Teach and Gallery all read the forward FLOPs of a layer here, so the
same network at the same batch shows the same number everywhere (and in ``tnviz cost``).  The
strategy a layer runs is read here too, from :func:`tnviz.nn.strategies.decisions`: the layer's own
choice, as ``tnviz cost`` prints it.

>>> forward_label("best"), forward_label("greedy")
('Forward FLOPs (best path)', 'Forward FLOPs (greedy path)')
"""
from __future__ import annotations

import streamlit as st

import tnviz
from tnviz.cost import DEFAULT_OPTIMIZER, LayerCost
from tnviz.nn.strategies import Decision, decisions

from .formatting import human


@st.cache_data(show_spinner=False, max_entries=64)
def layer_cost(net_json: str, batch: int, optimize: str = DEFAULT_OPTIMIZER) -> LayerCost:
    """``tnviz.cost`` of the network (as JSON, so the cache key is plain text)."""
    return tnviz.cost(tnviz.load_network(net_json), batch=batch, optimize=optimize)


def forward_label(optimize: str = DEFAULT_OPTIMIZER) -> str:
    """The label of the forward FLOPs figure: which path it is the cost of."""
    return f"Forward FLOPs ({optimize} path)"


def forward_flops(c: LayerCost) -> str:
    """The forward FLOPs figure as every page writes it."""
    return human(c.flops)


def path_found_by(c: LayerCost) -> str:
    """One sentence on which search found the path and what the others found, for captions."""
    if not c.searched:
        return f"Path of the {c.optimize!r} optimizer."
    others = ", ".join(f"{name} {human(flops)}" for name, flops in c.searched)
    skipped = "".join(f"; {name} skipped ({why})" for name, why in c.skipped)
    return f"Cheapest path found by {c.path_optimizer!r} among the searches that fit this size: {others}{skipped}."


@st.cache_data(show_spinner=False, max_entries=64)
def layer_decisions(net_json: str, batch: int) -> dict[str, Decision | Exception]:
    """What a default ``TNLinear`` of the network runs at ``batch`` on the CPU, per mode."""
    return decisions(tnviz.load_network(net_json), batch)


def runs_line(chosen: dict[str, Decision | Exception]) -> str:
    """``"inference: chain · training: chain"``; ``"none fits"`` where a mode exceeds the budget."""
    return " · ".join(f"{mode}: {d.strategy if isinstance(d, Decision) else 'none fits the memory budget'}"
                      for mode, d in chosen.items())


def estimate_rows(chosen: dict[str, Decision | Exception]) -> list[dict]:
    """The table each mode chose from: one row per strategy, its modelled cost and whether it runs."""
    rows = []
    for mode, d in chosen.items():
        if not isinstance(d, Decision):
            continue
        for name, est in sorted(d.estimates.items(), key=lambda kv: kv[1]):
            rows.append({"mode": mode, "strategy": name, "modelled cost (FLOP-equivalents)": human(est),
                         "runs": "yes" if name == d.strategy else ""})
    return rows

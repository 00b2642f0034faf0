"""Costs: what the current network costs as a layer at a batch size, from shapes alone."""
from __future__ import annotations

import streamlit as st

import tnviz
from tnviz_app.components.figures import (estimate_rows, forward_flops, forward_label, layer_cost, layer_decisions,
                                          path_found_by)
from tnviz.nn.strategies import Decision
from tnviz_app.components.formatting import arrow_safe, human, human_bytes, md_escape
from tnviz_app.components.measure import measure_panel
from tnviz_app.components.persist import remember, restore
from tnviz_app.state import get_network
from tnviz.cost import DEFAULT_OPTIMIZER, DTYPE_BYTES, BatchSweep
from tnviz.render.charts import flops_vs_batch, step_bars

K_BATCH, K_OPT, K_DTYPE = "costs.batch", "costs.optimize", "costs.dtype"
MAX_BATCH = 1 << 24


@st.cache_data(show_spinner=False, max_entries=32)
def sweep(net_json: str, optimize: str, largest: int) -> BatchSweep:
    batches = [2**k for k in range(largest.bit_length())]
    return tnviz.batch_sweep(tnviz.load_network(net_json), batches, optimize=optimize)


def tile(column, label: str, text: str, amount: int | None, dense: int | None, help: str) -> None:
    """A metric tile whose delta compares ``amount`` with the dense layer's (green when smaller)."""
    if not amount or not dense:
        column.metric(label, text, help=help, border=True)
        return
    ratio = amount / dense
    if ratio < 1:
        delta, arrow, color = f"{1 / ratio:,.1f}x less than dense", "down", "green"
    elif ratio > 1:
        delta, arrow, color = f"{ratio:,.2f}x dense", "up", "red"
    else:
        delta, arrow, color = "same as dense", "off", "gray"
    column.metric(label, text, delta, delta_color=color, delta_arrow=arrow, help=help, border=True)


st.title("Costs")
net = get_network()
st.caption(f"{md_escape(net.name or '(unnamed)')} · {net.in_features:,} → {net.out_features:,} · FLOPs counted as opt_einsum does")

optimizers = list(tnviz.OPTIMIZERS)
restore(K_BATCH, 1024)
restore(K_OPT, DEFAULT_OPTIMIZER)
restore(K_DTYPE, "float32")
c1, c2, c3 = st.columns(3)
batch = int(c1.number_input("Batch size", min_value=1, max_value=MAX_BATCH, step=1, key=K_BATCH))
optimize = c2.selectbox(
    "Path optimizer", optimizers, key=K_OPT,
    help="best: the cheapest path of the searches that fit the network's size; the others: one of opt_einsum's "
         "searches, or a fixed order")
dtype = c3.selectbox("dtype (for memory)", list(DTYPE_BYTES), key=K_DTYPE)
remember(K_BATCH, K_OPT, K_DTYPE)

net_json = net.to_json()
try:
    with st.spinner("Finding the contraction path..."):
        c = layer_cost(net_json, batch, optimize)
        sw = sweep(net_json, optimize, max(1 << 16, 4 * batch))
except tnviz.TnvizError as exc:
    st.error(md_escape(exc), icon=":material/error:")
    st.stop()

row1, row2 = st.columns(3), st.columns(3)
tile(row1[0], "Parameters", f"{c.params:,}", c.params, c.dense_params, f"dense: {c.dense_params:,}")
tile(row1[1], forward_label(optimize), forward_flops(c), c.flops, c.dense_flops,
     f"{c.flops:,} on the path {c.path_note}; it may mix both strategies (dense: {c.dense_flops:,} = 2·B·in·out)")
tile(row1[2], "Backward FLOPs", human(c.backward_flops), c.backward_flops, c.dense_backward_flops,
     f"{c.backward_flops:,}: gradients for x and for every tensor (dense: {c.dense_backward_flops:,})")
tile(row2[0], "Factorized FLOPs", human(c.factorized_flops), c.factorized_flops, c.dense_flops,
     f"{c.factorized_flops:,}: the input contracted through the tensors one at a time")
tile(row2[1], "Rebuild + matmul FLOPs", human(c.rebuild_flops), c.rebuild_flops, c.dense_flops,
     f"rebuild W ({c.reconstruct_flops:,}) then one matmul ({c.dense_flops:,})")
row2[2].metric(
    f"Peak memory ({dtype})", human_bytes(c.peak_bytes(dtype)), f"{c.peak_elements:,} elements",
    delta_color="off", delta_arrow="off", border=True,
    help=f"{c.peak_elements:,} elements alive at once on the forward path; largest intermediate "
         f"{c.largest_intermediate:,}",
)
st.subheader("Contraction path")
st.caption(f"{len(c.steps)} pairwise steps with the input x as an operand · {path_found_by(c)}")
st.dataframe(
    arrow_safe([
        {
            "step": k + 1,
            "contract": " · ".join(f"{n}[{','.join(ix)}]" for n, ix in zip(s.operands, s.operand_indices)),
            "result": f"{s.result}[{','.join(s.result_indices)}]",
            "summed": ", ".join(s.summed),
            "FLOPs": s.flops,
            "backward FLOPs": s.backward_flops,
            "intermediate (elements)": s.size,
        }
        for k, s in enumerate(c.steps)
    ]),
    hide_index=True,
)

st.subheader("Useful ranks")
sizes = net.sizes
if c.max_useful_ranks:
    st.dataframe(
        arrow_safe([
            {"bond": bond, "size": sizes[bond], "max useful": useful,
             "status": "ok" if sizes[bond] <= useful else f"{sizes[bond] - useful} wasted"}
            for bond, useful in c.max_useful_ranks.items()
        ]),
        hide_index=True,
    )
else:
    st.caption("No bonds between two tensors (hyperedges such as a CP rank have no such bound).")
for warning in c.warnings:
    st.warning(warning, icon=":material/warning:")

chosen = layer_decisions(net_json, batch)
st.subheader("Strategy the layer runs")
for mode, d in chosen.items():
    if isinstance(d, Decision):
        st.markdown(f"**{mode.capitalize()}** at batch {batch:,}: `{d.strategy}`. {d.reason}.")
    else:
        st.warning(f"{mode.capitalize()}: {md_escape(str(d))}", icon=":material/warning:")
st.caption("This is what a default tnviz.nn.TNLinear of this network runs on the CPU (strategy 'auto'), from the "
           "modelled costs below: FLOPs weighted by memory traffic, not the FLOP counts above. Factorized and "
           "rebuilt FLOPs are the two einsum ways to compute the layer; the sweep strategies ('chain', 'ring', "
           "'modes') are usually faster than either.")
st.dataframe(arrow_safe(estimate_rows(chosen)), hide_index=True)

st.subheader("FLOPs vs batch size")
if sw.best_skipped:
    st.caption(f"The {optimize!r} path is not drawn per batch: {sw.best_skipped}.")
if sw.crossovers:
    st.caption(" · ".join(f"from batch {b:,}: {w} is cheaper" for b, w in sw.crossovers))
else:
    winner = "factorized" if sw.factorized[0] <= sw.rebuilt[0] else "rebuilt"
    st.caption(f"No crossover between batch 1 and {sw.batches[-1]:,}: {winner} is cheaper throughout.")
st.plotly_chart(flops_vs_batch(sw, current_batch=batch), key="costs.flops_chart")
st.plotly_chart(step_bars(c), key="costs.step_chart")
measure_panel(net, batch, dtype)

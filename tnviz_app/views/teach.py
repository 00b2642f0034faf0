"""Teach: the notation, a step-through contraction of an input with the current layer, and the
gauge freedom on a bond.  Every number is computed here from the current network."""
from __future__ import annotations

import streamlit as st

import tnviz
from tnviz_app.components.figures import forward_label
from tnviz_app.components.formatting import arrow_safe, human, md_escape
from tnviz.errors import plain_message
from tnviz_app.components.persist import remember, restore
from tnviz_app.components.diagram import diagram, notation_pictures
from tnviz_app.state import get_network
from tnviz.gallery import fig2_matrix_product
from tnviz.cost import DEFAULT_OPTIMIZER, rebuild_path
from tnviz.network import TensorNetwork
from tnviz.teach import Walkthrough, contraction_walkthrough, gauge_bonds, gauge_demo, stage

K_STEP, K_OPT, K_BATCH = "teach.step", "teach.optimize", "teach.batch"
K_BOND, K_SEED = "teach.bond", "teach.seed"
K_PREV, K_NEXT = "teach.previous", "teach.next"
K_SEEN = "teach.network_seen"
MAX_BATCH = 1 << 20


@st.cache_data(show_spinner=False, max_entries=32)
def walkthrough(net_json: str, batch: int, optimize: str) -> Walkthrough:
    return contraction_walkthrough(tnviz.load_network(net_json), batch, optimize)


@st.cache_data(show_spinner=False, max_entries=32)
def gauge_summary(net_json: str, bond: str, seed: int) -> dict:
    demo = gauge_demo(tnviz.load_network(net_json), bond, seed)
    return {
        "left": demo.left, "right": demo.right, "condition": demo.condition,
        "change": demo.change_norms, "relative": demo.relative_changes,
        "max_abs_diff": demo.max_abs_diff, "max_abs_value": demo.max_abs_value, "compared": demo.compared,
    }


def _reset_step() -> None:
    st.session_state[K_STEP] = 0


def _move(delta: int, count: int) -> None:
    st.session_state[K_STEP] = min(max(st.session_state.get(K_STEP, 0) + delta, 0), count - 1)


# ---------------------------------------------------------------------- 1. notation
def notation() -> None:
    st.header("1. The notation")
    st.markdown(
        "A **tensor** is a shape; each of its indices is a line (a **leg**). Lines that end in the "
        "open are the layer's inputs (below) and outputs (above), labelled `name=size`."
    )
    # the delta's three arms make it the widest picture (272 pt): in a quarter of the page it was
    # shrunk to half size, its labels unreadable; a wider column draws it at the others' scale, and
    # below 1100 px the four pictures wrap two to a row (NOTATION_CSS), where it fits at full size
    st.html(NOTATION_CSS)
    with st.container(key=NOTATION_KEY):
        _notation_pictures()


NOTATION_KEY = "teach_notation"
#: Streamlit marks a keyed container with the class st-key-<key>.
NOTATION_CSS = f"""<style>
@media (max-width: 1100px) {{
  .st-key-{NOTATION_KEY} [data-testid="stHorizontalBlock"] {{ flex-wrap: wrap; row-gap: 1rem; }}
  .st-key-{NOTATION_KEY} [data-testid="stColumn"] {{
    flex: 1 1 calc(50% - 1rem) !important; min-width: calc(50% - 1rem) !important; width: auto !important;
  }}
}}
</style>"""


def _notation_pictures() -> None:
    pictures = notation_pictures()
    # the hyperedge picture is the widest (272 pt = 363 px): its column holds it at its natural size
    # from a 1400 px window (diagrams scale down to fit their column, never up)
    cols = st.columns([1, 1, 1, 1.7])
    with cols[0]:
        st.markdown("**Leg**")
        diagram(pictures["leg"], alt="a matrix with two legs")
        st.caption(r"A matrix $m_{ij}$ has two legs, $i$ and $j$: one line per index. Highlighted in orange: "
                   r"the legs $i=4$ (output) and $j=3$ (input).")
    with cols[1]:
        st.markdown("**Bond**")
        diagram(pictures["bond"], alt="two tensors joined by a bond")
        st.caption(r"A line joining two tensors is a **bond**: an index they share and that is summed. "
                   r"Bonds are drawn red; this one, $k=3$, is highlighted in orange.")
    with cols[2]:
        st.markdown("**Contraction**")
        diagram(pictures["contraction"], alt="the result of contracting a and b")
        st.latex(r"c_{ij} = \sum_k a_{ik}\, b_{kj}")
        st.caption(
            f"Contracting $a$ and $b$ sums over their bond: the pair becomes one tensor with the open legs "
            f"left. Cost: {rebuild_path(fig2_matrix_product()).flops:,} FLOPs ($2 \\cdot i \\cdot k \\cdot j$)."
        )
    with cols[3]:
        st.markdown("**Hyperedge**")
        diagram(pictures["hyperedge"], alt="three tensors sharing one index")
        st.latex(r"\delta_{ijk} = 1 \text{ if } i = j = k, \text{ else } 0")
        st.caption("An index shared by three or more tensors is a **hyperedge**, drawn through a dot: "
                   r"the delta tensor $\delta_{ijk}$ (the core of a CP layer), highlighted in orange.")


# ---------------------------------------------------------------------- 2. contraction
COMPARED_PATHS = ("best", "optimal", "greedy", "left-to-right")


def compare_paths(net: TensorNetwork, batch: int, chosen: Walkthrough) -> None:
    """One line: the whole contraction's FLOPs for each main path, and which give the chosen
    path's sequence (so a choice that changes nothing says so)."""
    mine = tuple(s.members for s in chosen.steps)
    parts = []
    for name in COMPARED_PATHS:
        if name not in tnviz.OPTIMIZERS:
            continue
        try:
            other = walkthrough(net.to_json(), batch, name)
        except tnviz.TnvizError:
            continue
        same = tuple(s.members for s in other.steps) == mine
        parts.append(f"{name} {human(other.total_flops)}" + (" (this sequence)" if same else ""))
    if parts:
        st.caption("Whole contraction, FLOPs by path at this batch: " + " · ".join(parts))


def contraction(net: TensorNetwork) -> None:
    st.header("2. Contract an input with the current layer")
    st.markdown(
        f"The current network **{net.name or '(unnamed)'}** ({net.in_features:,} → {net.out_features:,}) "
        "acts on a batch of inputs x. The forward pass contracts x with the tensors one pair at a time; "
        "the order (the *path*) decides the cost. Change it and step through."
    )
    optimizers = list(tnviz.OPTIMIZERS)
    restore(K_OPT, DEFAULT_OPTIMIZER)
    restore(K_BATCH, 1)
    c1, c2 = st.columns(2)
    optimize = c1.selectbox(
        "Path", optimizers, key=K_OPT, on_change=_reset_step,
        help="best: the cheapest path of the searches that fit the network's size (the Costs page's); "
             "optimal: exhaustive search; greedy: cheapest pair first; left-to-right: x with the first "
             "tensor, then each next one in order; others from opt_einsum",
    )
    batch = int(c2.number_input("Batch size", min_value=1, max_value=MAX_BATCH, step=1, key=K_BATCH,
                                on_change=_reset_step))
    remember(K_OPT, K_BATCH)
    try:
        walk = walkthrough(net.to_json(), batch, optimize)
    except tnviz.TnvizError as exc:
        st.error(md_escape(plain_message(exc)), icon=":material/error:")
        return
    compare_paths(net, batch, walk)
    count = len(walk.steps)
    if st.session_state.get(K_SEEN) != net:  # another network: start from its first step
        st.session_state[K_SEEN] = net
        st.session_state[K_STEP] = 0
    k = min(max(int(st.session_state.get(K_STEP, 0)), 0), count - 1)
    st.session_state[K_STEP] = k
    step = walk.steps[k]

    b1, b2, b3 = st.columns([1, 1, 4])
    b1.button("Previous", key=K_PREV, on_click=_move, args=(-1, count), disabled=k == 0,
              icon=":material/arrow_back:")
    b2.button("Next", key=K_NEXT, on_click=_move, args=(1, count), disabled=k == count - 1,
              icon=":material/arrow_forward:")
    b3.progress((k + 1) / count, text=f"Step {k + 1} of {count}")

    st.subheader(f"Step {step.number} of {count}: {step.result} = {' · '.join(step.operands)}")
    holds = [f"{op} holds {{{', '.join(m)}}}" for op, m in zip(step.operands, step.members) if op.startswith("#")]
    st.markdown(
        f"Merge **{step.operands[0]}** and **{step.operands[1] if len(step.operands) > 1 else ''}**"
        f"{' (' + '; '.join(holds) + ')' if holds else ''}, summing over "
        f"**{', '.join(step.summed) or 'nothing (an outer product)'}**."
    )
    shape = "x".join(str(d) for d in step.result_shape) or "scalar"
    st.markdown(
        f"New intermediate: **{step.result}[{', '.join(step.result_indices)}]** (the indices still needed "
        "by another operand or by the output)"
    )
    m1, m2, m3, m4 = st.columns(4)
    m4.metric(forward_label(optimize), human(walk.total_flops), f"batch {batch:,}", delta_color="off",
              delta_arrow="off", border=True,
              help=f"{walk.total_flops:,}: the whole contraction on this path (tnviz.cost's figure)")
    m1.metric("Its size", f"{step.size:,}", f"shape {shape}", delta_color="off", delta_arrow="off", border=True)
    m2.metric("FLOPs of this step", human(step.flops), f"{step.flops:,}", delta_color="off", delta_arrow="off",
              border=True)
    m3.metric("Running FLOPs", human(step.running_flops), f"of {human(walk.total_flops)} in total",
              delta_color="off", delta_arrow="off", border=True,
              help=f"dense layer: {walk.dense_flops:,} FLOPs (2·B·in·out)")

    before = stage(walk, k)
    d1, d2 = st.columns(2)
    with d1:
        st.markdown("**The layer and x** (this step's operands highlighted)")
        diagram(
            walk.display, highlight_tensors=step.highlight_tensors,
            highlight_indices=[walk.display_index(i) for i in step.summed],
            alt=f"layer with step {step.number} highlighted",
        )
    with d2:
        st.markdown(f"**The contraction so far** (after {k} step{'s' if k != 1 else ''})")
        diagram(
            before.network, highlight_tensors=before.next_pair, highlight_indices=before.next_summed,
            alt=f"operands before step {step.number}",
        )
    if k == count - 1:
        st.success(
            f"Done: y[{', '.join(step.result_indices)}] after {count} steps and {walk.total_flops:,} FLOPs "
            f"({walk.total_flops / walk.dense_flops:.3g}x the dense layer's {walk.dense_flops:,}).",
            icon=":material/check_circle:",
        )
    st.dataframe(
        arrow_safe([
            {"": "▶" if s.number == step.number else "", "step": s.number, "merge": " · ".join(s.operands),
             "summed": ", ".join(s.summed), "result": f"{s.result}[{', '.join(s.result_indices)}]",
             "size": s.size, "FLOPs": s.flops, "running FLOPs": s.running_flops}
            for s in walk.steps
        ]),
        hide_index=True,
    )


# ---------------------------------------------------------------------- 3. gauge
def gauge(net: TensorNetwork) -> None:
    st.header("3. Gauge freedom on a bond")
    bonds = list(gauge_bonds(net))
    if not bonds:
        st.info(
            "The current network has no bond (an index shared by exactly two tensors), so there is no "
            "gauge to show; a CP hyperedge is not a bond. Open an MPO or a tensor ring in the Designer.",
            icon=":material/info:",
        )
        return
    st.markdown(
        "Insert X X⁻¹ = 1 on a bond between tensors a and b, with X a random invertible matrix: "
        "a → a X⁻¹ and b → X b. Both tensors change, the layer does not."
    )
    restore(K_SEED, 0)
    if st.session_state.get(K_BOND) not in bonds:
        st.session_state[K_BOND] = bonds[0]
    c1, c2 = st.columns(2)
    bond = c1.selectbox("Bond", bonds, key=K_BOND)
    seed = int(c2.number_input("Seed of X", min_value=0, max_value=2**31 - 1, step=1, key=K_SEED))
    remember(K_SEED)
    try:
        with st.spinner("Contracting..."):
            g = gauge_summary(net.to_json(), bond, seed)
    except tnviz.TnvizError as exc:
        st.error(md_escape(plain_message(exc)), icon=":material/error:")
        return
    left, right = g["left"], g["right"]
    d, m = st.columns([1, 1])
    with d:
        diagram(net, highlight_tensors=[left, right], highlight_indices=[bond],
                alt=f"bond {bond} between {left} and {right}")
    with m:
        st.metric(f"‖{left}' − {left}‖  ({left} → {left} X⁻¹)", f"{g['change'][left]:.4g}",
                  f"{g['relative'][left]:.1%} of ‖{left}‖", delta_color="off", delta_arrow="off", border=True)
        st.metric(f"‖{right}' − {right}‖  ({right} → X {right})", f"{g['change'][right]:.4g}",
                  f"{g['relative'][right]:.1%} of ‖{right}‖", delta_color="off", delta_arrow="off", border=True)
        st.metric("max |layer after − layer before|", f"{g['max_abs_diff']:.3g}",
                  f"largest entry {g['max_abs_value']:.3g}", delta_color="off", delta_arrow="off", border=True,
                  help=f"compared: {g['compared']}, float64, random tensors (seed 0)")
        st.caption(f"Compared: {g['compared']}. X is {net.sizes[bond]}x{net.sizes[bond]} "
                   f"with condition number {g['condition']:.3g}.")


st.title("Teach")
current = get_network()
notation()
contraction(current)
gauge(current)

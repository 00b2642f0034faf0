"""Lesson: from the paper's Fig. 2 notation to a compressed layer of your own, one checked action
per step.  The checks are :mod:`tnviz_app.components.lesson`'s; the numbers are the engine's
(``tnviz.mpo``, the Costs page's ``layer_cost``, ``tnviz.decompose``, the Tensorize page's demo
subject and its metric).  Progress lives in the session: an earlier answer changed since it was
checked locks the steps after it again."""
from __future__ import annotations


import numpy as np
import streamlit as st

import tnviz
from tnviz_app.components.figures import forward_flops, forward_label, layer_cost
from tnviz_app.components.formatting import count, human, md_escape, times
from tnviz_app.components.lesson import (ACCURACY_TOLERANCE, STEP_KEYS, STEPS, Verdict, check_accuracy,
                                         check_contract, check_legs, check_matrix, check_params, check_rank,
                                         contraction_latex, matrix_network, mpo_of, params_latex,
                                         reshaped_network)
from tnviz_app.components.persist import MEMORY_KEY, remember, restore
from tnviz_app.components.diagram import diagram
from tnviz_app.state import device_info, set_network
from tnviz.errors import plain_message
from tnviz.render import build_scene

K = "lesson."
K_LAYER, K_IN, K_OUT, K_RANK = K + "layer", K + "in_legs", K + "out_legs", K + "rank"
K_PARAMS, K_SUMMED = K + "params", K + "summed"
K_DONE, K_VERDICT = K + "done", K + "verdicts"
WIDGETS = (K_LAYER, K_IN, K_OUT, K_RANK, K_PARAMS, K_SUMMED)
DEMO = "digits-mlp"
MAX_RANK = 1 << 16


# ---------------------------------------------------------------------- engine calls, cached
def _subject():
    from tnviz_app.components.subjects import subject  # the Tensorize page's cache: one model per server

    return subject("demo", DEMO, device_info().type)


@st.cache_data(show_spinner=False)
def layers(device: str) -> dict[str, tuple[int, int]]:
    """The model's Linear layers: name -> weight shape (out, in)."""
    from torch import nn

    model = _subject().model
    return {n: tuple(m.weight.shape) for n, m in model.named_modules() if isinstance(m, nn.Linear)}


@st.cache_resource(show_spinner="Decomposing the weight (TT-SVD)…", max_entries=16)
def decomposition(device: str, layer: str, in_dims: tuple, out_dims: tuple, rank: int):
    weight = _subject().model.get_submodule(layer).weight
    return tnviz.decompose(weight, "mpo", in_dims=list(in_dims), out_dims=list(out_dims), max_rank=rank)


@st.cache_data(show_spinner="Measuring held-out accuracy…", max_entries=16)
def accuracies(device: str, layer: str, in_dims: tuple, out_dims: tuple, rank: int) -> tuple[float, float]:
    """(original, with ``layer`` replaced by the TNLinear of its decomposition) on the held-out digits."""
    import copy

    from tnviz.model.surgery import build_layer, set_module

    subject = _subject()
    model = copy.deepcopy(subject.model)
    set_module(model, layer, build_layer(subject.model.get_submodule(layer),
                                         decomposition(device, layer, in_dims, out_dims, rank)))
    return subject.measure_original()["accuracy"], subject.measure(model)["accuracy"]


# ---------------------------------------------------------------------- progress
def _done() -> dict:
    return st.session_state.setdefault(K_DONE, {})


def _value(widget: str):
    """A widget's value: its state, or (a widget not drawn since the user came back from another
    page) the value remembered for it.  Not written into the state here: a value set for a widget
    that is not drawn in the same run outlives the widget's own and comes back stale."""
    if widget in st.session_state:
        return st.session_state[widget]
    return st.session_state.get(MEMORY_KEY, {}).get(widget, DEFAULTS[widget])


def _raw(key: str):
    """What the user did for a step, as it stands now (compared with what was checked)."""
    return {
        "matrix": lambda: _value(K_LAYER),
        "legs": lambda: (str(_value(K_IN) or "").strip(), str(_value(K_OUT) or "").strip()),
        "rank": lambda: _value(K_RANK),
        "params": lambda: _value(K_PARAMS),
        "contract": lambda: tuple(_value(K_SUMMED) or ()),
        "apply": lambda: "applied",
    }[key]()


def _accepted(key: str):
    return _done()[key][1]


def _net():
    (in_dims, out_dims), rank = _accepted("legs"), _accepted("rank")
    return mpo_of(in_dims, out_dims, rank, _accepted("matrix"))


def _verdict(key: str) -> Verdict:
    if key == "matrix":
        return check_matrix(_raw(key), layers(device_info().type))
    if key == "legs":
        layer = _accepted("matrix")
        return check_legs(*_raw(key), layers(device_info().type)[layer], layer)
    if key == "rank":
        return check_rank(_raw(key), *_accepted("legs"))
    if key == "params":
        return check_params(_raw(key), _net())
    if key == "contract":
        return check_contract(_raw(key), _net())
    (in_dims, out_dims) = _accepted("legs")
    original, compressed = accuracies(device_info().type, _accepted("matrix"), tuple(in_dims), tuple(out_dims),
                                      _accepted("rank"))
    return check_accuracy(original, compressed)


def _forget_from(position: int) -> None:
    for later in STEP_KEYS[position:]:
        _done().pop(later, None)
        st.session_state.get(K_VERDICT, {}).pop(later, None)


def _check(key: str) -> None:
    """The step's Check button: judge the action; a pass unlocks the next step."""
    position = STEP_KEYS.index(key)
    try:
        verdict = _verdict(key)
    except tnviz.TnvizError as exc:
        verdict = Verdict(False, plain_message(exc))
    _forget_from(position)
    st.session_state.setdefault(K_VERDICT, {})[key] = (verdict.ok, verdict.message)
    if verdict.ok:
        _done()[key] = (_raw(key), verdict.value)


def _prune() -> int:
    """Drop the steps whose answer changed since it was checked (and every later one); returns
    how many steps in a row are done."""
    for position, key in enumerate(STEP_KEYS):
        if key not in _done() or _done()[key][0] != _raw(key):
            changed = key in _done()  # then its message judged the old answer: it goes too
            _forget_from(position if changed else position + 1)
            return position
    return len(STEP_KEYS)


def _start_over() -> None:
    _forget_from(0)
    for key in WIDGETS:
        st.session_state.pop(key, None)
    st.session_state.get(MEMORY_KEY, {}).update({key: DEFAULTS[key] for key in WIDGETS})


DEFAULTS = {K_LAYER: None, K_IN: "", K_OUT: "", K_RANK: 8, K_PARAMS: None, K_SUMMED: []}


# ---------------------------------------------------------------------- drawing helpers
def _check_row(key: str, label: str = "Check") -> None:
    st.button(label, key=K + "check." + key, on_click=_check, args=(key,), type="primary",
              icon=":material/task_alt:")
    ok_message = st.session_state.get(K_VERDICT, {}).get(key)
    if ok_message:
        ok, message = ok_message
        (st.success if ok else st.error)(md_escape(message), icon=":material/check_circle:" if ok else ":material/error:")


def _heat(matrix: np.ndarray, scale: float) -> np.ndarray:
    """A matrix as an RGB image: blue negative, white zero, red positive, shared ``scale``."""
    v = np.clip(matrix / scale, -1.0, 1.0)[..., None]
    red, white, blue = np.array([0.84, 0.15, 0.16]), np.ones(3), np.array([0.13, 0.40, 0.67])
    rgb = np.where(v >= 0, white + v * (red - white), white - v * (blue - white))
    return (rgb * 255).astype(np.uint8)


def _step_header(position: int, title: str, done: bool) -> None:
    st.subheader(f"{'✓ ' if done else ''}Step {position + 1} of {len(STEPS)}: {title}")


# ---------------------------------------------------------------------- the steps
def step_matrix(done: bool) -> None:
    shapes = layers(device_info().type)
    st.markdown(
        "In the paper's notation (Fig. 2) a **tensor is a node** and each of its indices a **leg**; a leg "
        "joining two nodes is a **contraction**: the shared index summed over. A matrix is a node with two legs. "
        "Pick one weight matrix of the digits MLP (64 → 256 → 256 → 10, trained on 8×8 digit images): "
        "you will compress it and put it back."
    )
    restore(K_LAYER, None)
    st.selectbox("Weight matrix", list(shapes), key=K_LAYER, placeholder="Choose a layer",
                 format_func=lambda n: f"{n}: {shapes[n][0]} × {shapes[n][1]} ({shapes[n][0] * shapes[n][1]:,} numbers)")
    remember(K_LAYER)
    _check_row("matrix")
    if done:
        layer = _accepted("matrix")
        c1, c2 = st.columns([1, 2])
        with c1:
            diagram(matrix_network(layer, shapes[layer]), alt=f"{layer} as one tensor")
        with c2:
            st.latex(r"y_o = \sum_i W_{o\,i}\; x_i")
            st.caption(f"W has two legs: i = {shapes[layer][1]} (inputs, below) and o = {shapes[layer][0]} "
                       "(outputs, above). Applying the layer joins the input x to leg i and sums over it.")


def step_legs(done: bool) -> None:
    layer = _accepted("matrix")
    out_f, in_f = layers(device_info().type)[layer]
    proposals = tnviz.propose_legs(in_f, out_f)
    hint = f" (for example {','.join(map(str, proposals[0][0]))} and {','.join(map(str, proposals[0][1]))})" \
        if proposals else ""
    st.markdown(
        f"A tensor network needs more legs than two. Factor the {in_f} inputs and the {out_f} outputs into "
        f"sizes that multiply back to them{hint}: W becomes a tensor T with one leg per factor, the same "
        "numbers indexed differently."
    )
    restore(K_IN, "")
    restore(K_OUT, "")
    c1, c2 = st.columns(2)
    c1.text_input(f"Input leg sizes (product {in_f})", key=K_IN, placeholder="e.g. 8,8")
    c2.text_input(f"Output leg sizes (product {out_f})", key=K_OUT, placeholder="e.g. 16,16")
    remember(K_IN, K_OUT)
    _check_row("legs")
    if done:
        in_dims, out_dims = _accepted("legs")
        c1, c2 = st.columns([1, 2])
        with c1:
            diagram(reshaped_network(in_dims, out_dims), alt="W reshaped into legs")
        with c2:
            outs = " ".join(f"o_{{{k + 1}}}" for k in range(len(out_dims)))
            ins = " ".join(f"i_{{{k + 1}}}" for k in range(len(in_dims)))
            st.latex(rf"W_{{o\,i}} = T_{{{outs},\, {ins}}}, \quad o \leftrightarrow ({outs.replace(' ', ',')}),"
                     rf"\; i \leftrightarrow ({ins.replace(' ', ',')})")


def step_rank(done: bool) -> None:
    in_dims, out_dims = _accepted("legs")
    st.markdown(
        "Now split T into a chain of small tensors, a **matrix product operator** (MPO): each holds one input "
        "and one output leg, and neighbours are joined by a **bond**, a leg of size r (the rank) that is "
        "summed over. A larger r keeps more of W and costs more parameters."
    )
    restore(K_RANK, 8)
    st.number_input("Bond rank r", min_value=1, max_value=MAX_RANK, step=1, key=K_RANK)
    remember(K_RANK)
    _check_row("rank")
    if done:
        net = _net()
        c1, c2 = st.columns([1, 2])
        with c1:
            # the bond highlighted, the tensors not faded (as the Teach page's notation pictures)
            diagram(build_scene(net, highlight_indices=list(net.bonds), fade_others=False), alt="the MPO")
        with c2:
            st.latex(contraction_latex(net))
            st.caption("Bonds are drawn red (highlighted here in orange): each is summed over when the tensors are "
                       "contracted back into the matrix.")


def step_params(done: bool) -> None:
    net = _net()
    st.markdown("How many numbers does the MPO store? Each tensor holds the product of its legs' sizes:")
    st.latex(params_latex(net))
    st.markdown(" · ".join(f"**{t.name}**: " + ", ".join(f"{i} = {net.sizes[i]}" for i in t.indices)
                           for t in net.tensors))
    restore(K_PARAMS, None)
    st.number_input("Parameters of the MPO", min_value=0, step=1, key=K_PARAMS, placeholder="your count")
    remember(K_PARAMS)
    _check_row("params")
    if done:
        c = layer_cost(net.to_json(), 1)  # the Costs page's figures
        m1, m2, m3 = st.columns(3)
        m1.metric("Parameters", count(c.params), f"dense {count(c.dense_params)}", delta_color="off",
                  delta_arrow="off", border=True, help=f"{c.params:,} against {c.dense_params:,}")
        m2.metric("Compression", times(net.compression), help="dense / MPO parameters (the Designer's figure)", border=True)
        m3.metric(forward_label(c.optimize), forward_flops(c), f"dense {human(c.dense_flops)} · batch 1",
                  delta_color="off", delta_arrow="off", border=True,
                  help=f"{c.flops:,} FLOPs for one input (dense: {c.dense_flops:,} = 2·in·out); the Costs page "
                       "shows every batch size")
        if c.flops > c.dense_flops:
            st.caption(f"Fewer parameters is not fewer FLOPs: at this rank the input passes through "
                       f"{len(net.tensors)} tensors of {human(c.flops / len(net.tensors))} FLOPs each on average, "
                       f"{c.flops / c.dense_flops:.1f}x the dense product. A smaller rank or more legs cuts both.")
        else:
            st.caption(f"The MPO also computes with {c.dense_flops / c.flops:.1f}x fewer FLOPs than the dense product.")


def step_contract(done: bool) -> None:
    net = _net()
    st.markdown(
        "To see what the MPO lost, contract it back into one matrix W̃ and compare it with W. "
        "Which indices does that contraction sum over?"
    )
    restore(K_SUMMED, [])
    st.session_state[K_SUMMED] = [v for v in st.session_state[K_SUMMED] if v in net.sizes]
    st.multiselect("Sum over", list(net.sizes), key=K_SUMMED, placeholder="indices")
    remember(K_SUMMED)
    _check_row("contract")
    if done:
        (in_dims, out_dims), layer, rank = _accepted("legs"), _accepted("matrix"), _accepted("rank")
        res = decomposition(device_info().type, layer, tuple(in_dims), tuple(out_dims), rank)
        W = res_weight(layer)
        approx = res.to_dense().detach().cpu().double().numpy()
        scale = float(np.abs(W).max()) or 1.0
        st.latex(r"\text{relative error} = \frac{\lVert W - \tilde W \rVert_F}{\lVert W \rVert_F},"
                 r"\qquad \lVert A \rVert_F = \sqrt{\textstyle\sum_{oi} A_{oi}^2}")
        m1, m2 = st.columns(2)
        m1.metric("Relative error", f"{res.rel_error:.1%}", border=True,
                  help="measured on the contracted matrix (tnviz.decompose's rel_error)")
        m2.metric("Largest |W − W̃| entry", f"{float(np.abs(W - approx).max()):.3g}",
                  f"largest |W| entry {scale:.3g}", delta_color="off", delta_arrow="off", border=True)
        cols = st.columns(3)
        for col, (caption, image) in zip(cols, (("W", W), ("W̃ (the MPO contracted)", approx),
                                               ("W − W̃", W - approx))):
            col.image(_heat(image, scale), caption=caption, width="stretch", clamp=True)
        st.caption(f"TT-SVD keeps the {rank} largest singular values of each bond's unfolding "
                   f"({md_escape(res.algorithm)}); blue negative, red positive, one colour scale.")


@st.cache_data(show_spinner=False, max_entries=8)
def _weight(device: str, layer: str) -> np.ndarray:
    return _subject().model.get_submodule(layer).weight.detach().cpu().double().numpy()


def res_weight(layer: str) -> np.ndarray:
    return _weight(device_info().type, layer)


def step_apply(done: bool) -> None:
    layer = _accepted("matrix")
    st.markdown(
        f"Last: replace **{layer}** in the digits MLP by a `tnviz.nn.TNLinear` built from the MPO's tensors and "
        f"measure accuracy on the held-out digits. The step passes when the model loses at most "
        f"{ACCURACY_TOLERANCE * 100:.0f} points."
    )
    _check_row("apply", f"Replace {layer} and measure")
    if done:
        (in_dims, out_dims), rank = _accepted("legs"), _accepted("rank")
        original, compressed = accuracies(device_info().type, layer, tuple(in_dims), tuple(out_dims), rank)
        net = _net()
        m1, m2, m3 = st.columns(3)
        m1.metric("Original accuracy", f"{original:.1%}", border=True)
        m2.metric("Compressed accuracy", f"{compressed:.1%}", f"{(compressed - original) * 100:+.1f} points",
                  border=True)
        m3.metric(f"{layer} parameters", count(net.params), f"{times(net.compression)} smaller",
                  delta_color="off", delta_arrow="off", border=True)
        st.success(f"Done: {layer} is a {len(net.tensors)}-tensor MPO of rank {rank}, "
                   f"{times(net.compression)} smaller, and the model still reads {compressed:.1%} of the digits.",
                   icon=":material/celebration:")
        if st.button("Open this MPO in the Designer", key=K + "open"):
            set_network(net, f"lesson: {layer} at rank {rank}")
            st.switch_page("views/designer.py")


RENDER = {"matrix": step_matrix, "legs": step_legs, "rank": step_rank, "params": step_params,
          "contract": step_contract, "apply": step_apply}

# ---------------------------------------------------------------------- page
st.title("Lesson: compress a layer")
st.caption("Six steps, one action each, checked as you go: from the notation to a compressed layer of the "
           "digits model. Your progress stays while you visit other pages.")
with st.spinner("Loading the digits model…"):
    try:
        layers(device_info().type)
    except tnviz.TnvizError as exc:
        st.error(md_escape(plain_message(exc)), icon=":material/error:")
        st.stop()
reached = _prune()
top1, top2 = st.columns([4, 1])
top1.progress(reached / len(STEPS), text=f"{reached} of {len(STEPS)} steps done")
top2.button("Start over", key=K + "restart", on_click=_start_over, icon=":material/restart_alt:")
for position, (key, title) in enumerate(STEPS[: reached + 1]):
    with st.container(border=True):
        _step_header(position, title, position < reached)
        RENDER[key](position < reached)

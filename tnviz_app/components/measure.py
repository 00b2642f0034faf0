"""The Costs page's measured panel: the current layer timed on this device (each execution
strategy and ``auto`` against a dense ``nn.Linear``), next to the counted FLOPs."""
from __future__ import annotations

import math

import streamlit as st

import tnviz
from tnviz_app.components.formatting import human, md_escape

#: Largest dense weight (elements) the panel builds for the comparison; bigger layers are refused.
MAX_DENSE_ELEMENTS = 1 << 26
#: Largest batch the panel times (the page allows far larger batches for counting).
MAX_MEASURE_BATCH = 8192
K_MODE = "costs.measure.mode"
K_RESULT = "costs.measure.result"


def _device(wait: bool) -> str | None:
    """The device torch sees (the sidebar's): with ``wait``, found now if need be (importing torch);
    else ``None`` while it is still loading, so the Costs page is not held 1.5 s for a caption."""
    from tnviz_app.state import device_info, known_device

    dev = device_info() if wait else known_device()
    return dev.type if dev is not None else None


@st.cache_data(show_spinner=False, max_entries=32)
def measured(net_json: str, batch: int, dtype: str, device: str, mode: str, repeats: int) -> list[dict]:
    """``tnviz.nn.measure`` rows, cached per (layer, batch, dtype, device, mode)."""
    import torch

    from tnviz.nn.measure import measure

    return measure(tnviz.load_network(net_json), batch, device=device, dtype=getattr(torch, dtype),
                   repeats=repeats, mode=mode)


def measure_panel(net: tnviz.TensorNetwork, batch: int, dtype: str) -> None:
    """A button that times the layer here; the table shows time, speed-up and counted FLOPs."""
    st.subheader("Measured on this device")
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        st.caption("Measuring needs PyTorch, which is not installed here.")
        return
    # before the button: a press finds the device (imports torch) if the background thread has not yet
    pressed = st.session_state.get("costs.measure.run", False)
    device = _device(wait=bool(pressed) or st.session_state.get(K_RESULT) is not None)
    if dtype == "float16" and device in ("cpu", None):
        dtype = "float32"
    b = min(batch, MAX_MEASURE_BATCH)
    dense = net.in_features * net.out_features
    st.caption(
        f"Times every execution strategy of the current layer and a dense `nn.Linear` of the same size "
        f"on **{device or 'the device torch finds'}** in {dtype} at batch {b:,}{' (capped)' if b < batch else ''}, in one run with the "
        "methods taking turns (medians). Ratios are what matters; absolute times depend on the machine's load."
    )
    if dense > MAX_DENSE_ELEMENTS:
        st.info(f"The dense weight has {dense:,} elements (limit {MAX_DENSE_ELEMENTS:,}); not measured here: "
                "use benchmarks/bench_forward.py.", icon=":material/info:")
        return
    modes = {"forward (eval, cached)": "eval", "forward (training)": "train", "training step (forward + backward)": "step"}
    c1, c2 = st.columns([2, 1], vertical_alignment="bottom")
    label = c1.radio("What to time", list(modes), horizontal=True, key=K_MODE)
    key = (net.to_json(), b, dtype, device, modes[label])
    if c2.button("Measure", icon=":material/timer:", key="costs.measure.run"):
        with st.spinner(f"Timing on {device}..."):
            try:
                rows = measured(*key, repeats=5)
            except tnviz.TnvizError as exc:
                st.error(md_escape(exc), icon=":material/error:")
                return
        st.session_state[K_RESULT] = (key, rows)
    stored = st.session_state.get(K_RESULT)
    if not stored or stored[0] != key:
        st.caption("Press **Measure** to time the layer.")
        return
    rows = stored[1]
    st.dataframe(
        [
            {
                "method": r["method"],
                "ms (median)": None if math.isnan(r["ms"]) else round(r["ms"], 4),
                "speed-up vs nn.Linear": None if math.isnan(r["speedup_vs_dense"]) else f"{r['speedup_vs_dense']:.2f}x",
                "counted FLOPs": human(r["flops"]) if r["flops"] else "",
                "FLOPs drop": "" if math.isnan(r["flops_drop"]) else f"{r['flops_drop']:.2f}x",
                "note": r["note"],
            }
            for r in rows
        ],
        hide_index=True,
        key="costs.measure.table",
    )
    caption = ("Counted FLOPs here are those of the contraction each strategy actually runs (TNLinear's own "
               "plan for this batch), which can differ from the path of the optimizer chosen above.")
    if key[-1] == "step":
        caption += (" For a training step they count forward and backward, with an input that needs no gradient "
                    "(a first layer): `nn.Linear` does 2 matmuls, a tensorized layer about 3 passes of its plan.")
    st.caption(caption)
    auto = next((r for r in rows if r["method"] == "TNLinear auto"), None)
    if auto is not None:
        st.caption(f"`auto` chose **{auto['strategy']}**: {auto['speedup_vs_dense']:.2f}x the dense layer where the "
                   f"counted FLOPs allow {auto['flops_drop']:.2f}x.")

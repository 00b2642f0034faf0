"""Tensorize: bring a model, see which layers compress at what cost to its function, get it back smaller.

A thin page over :func:`tnviz.compress` (the same call as ``tnviz compress``): widget values become
its rules and settings, its :class:`~tnviz.model.compress.Compression` becomes tiles, tables and
charts; healing, sensitivity and the download are that result's own methods.
"""
from __future__ import annotations

import math
import re

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from tnviz_app.components.subjects import (MAX_UPLOAD_BYTES, demo_label, demo_source, receive_model_upload,
                                     subject_of)
from tnviz_app.state import device_info
from tnviz_app.components.formatting import md_escape
from tnviz_app.components.search import other_metrics, search_section
from tnviz.errors import TnvizError, plain_message
from tnviz.model.demos import DEMOS
from tnviz.model.heal import HEALINGS
from tnviz.model.plan import METHODS, TRUNCATIONS
from tnviz.render.charts import heal_curves

K = "tensorize."  # session-state prefix
UPLOADED = "upload"  # the source radio's entry for the loaded upload
#: Layer names are long (encoder.layer.11.intermediate.dense): a wide column, pinned while scrolling.
NAME_COLUMN = {  # 845 px in all: the whole table fits a 1400 px window (it was 1010 px, the error cut off)
    "layer": st.column_config.TextColumn("layer", width=200, pinned=True),
    "kind": st.column_config.TextColumn("kind", width=70),
    "shape": st.column_config.TextColumn("shape", width=90),
    "params": st.column_config.NumberColumn("params", width=85, format="localized"),
    "setting": st.column_config.TextColumn("setting", width=180),
    "params after (preview)": st.column_config.NumberColumn(
        "params after", width=110, format="localized", help="parameters after compression (preview)"),
    "weight error (preview)": st.column_config.NumberColumn(
        "weight error", width=110, format="%.4f", help="relative weight error of the layer (preview)"),
}


# ---------------------------------------------------------------------- widget values -> engine values
def _rules(rows: list[dict]):
    from tnviz.model.plan import Rule

    rules = []
    for row in rows:
        if not row.get("pattern"):
            continue
        legs = {}
        for key in ("in_dims", "out_dims"):
            text = str(row.get(key) or "").strip()
            if text and text.lower() != "auto":
                parts = re.split(r"[x, ]+", text)
                if not all(p.isdigit() and int(p) > 0 for p in parts):
                    raise TnvizError(f"legs must be positive sizes like 16x24, or 'auto'; got {text!r}")
                legs[key] = tuple(int(v) for v in parts)
        kind = row.get("truncation") or "ratio"
        value = row.get("value")
        if value is None:
            raise TnvizError(f"every rule needs a value for its truncation; {row['pattern']!r} has none")
        value = int(value) if kind == "max_rank" else float(value)
        rules.append(Rule(row["pattern"], row.get("method") or "mpo", {kind: value}, **legs))
    if not rules:
        raise TnvizError("a compression needs at least one pattern row")
    return rules


def _target(target: tuple | None) -> dict | None:
    return None if target is None else {target[0]: target[1]}


# ---------------------------------------------------------------------- cached engine calls
@st.cache_data(show_spinner="Planning…", max_entries=32)
def _plan(source_key: tuple, rows: tuple, target: tuple | None):
    from tnviz.model.plan import make_plan

    return make_plan(_subject(source_key), _rules([dict(r) for r in rows]), target=_target(target), device="cpu")


@st.cache_data(show_spinner="Previewing parameters and error…", max_entries=32)
def _preview(source_key: tuple, rows: tuple, target: tuple | None, data_aware: bool) -> list[dict]:
    from tnviz.model.apply import preview

    subject = _subject(source_key)
    plan = _plan(source_key, rows, target)
    stats = subject.input_stats(plan.names()) if data_aware and subject.has_model else None
    return preview(subject, plan, stats, device=source_key[2])


@st.cache_data(show_spinner=False, max_entries=8)
def _compare(source_key: tuple, pattern: str, ratio: float, heal_steps: int) -> list[dict]:
    from tnviz.model.analysis import compare_methods

    return compare_methods(_subject(source_key), pattern, ratio, heal_steps=heal_steps, device=source_key[2])


def _subject(key: tuple):
    kind, ref, device = key
    return subject_of({"kind": kind, "ref": ref}, device)


# ---------------------------------------------------------------------- the source
def _forget_run() -> None:
    """A new model: its own default settings, no results of the previous one."""
    for key in ("result", "rules", "rules_editor", "zip", "healed", "sens_df", "cmp_df"):
        st.session_state.pop(K + key, None)


def _device() -> str:
    return st.session_state.get(K + "device") or device_info().type


def _loaded() -> dict:
    if K + "loaded" not in st.session_state:
        st.session_state[K + "loaded"] = demo_source("digits-mlp")
    return st.session_state[K + "loaded"]


def _receive_upload() -> None:
    """Check an upload; only a good one replaces the loaded model (a bad one says why and keeps it)."""
    upload = st.session_state.get(K + "upload")
    if upload is None:
        return
    st.session_state[K + "upload_error"] = None
    try:
        source = receive_model_upload(upload, _device())
    except TnvizError as exc:
        st.session_state[K + "upload_error"] = f"{upload.name}: {plain_message(exc)}"
        return
    st.session_state[K + "loaded"] = source
    st.session_state[K + "uploaded"] = source
    st.session_state[K + "source"] = UPLOADED
    _forget_run()


def _pick_source() -> None:
    choice = st.session_state[K + "source"]
    st.session_state[K + "upload_error"] = None
    st.session_state[K + "loaded"] = st.session_state[K + "uploaded"] if choice == UPLOADED else demo_source(choice)
    _forget_run()


# ---------------------------------------------------------------------- page
st.title("Tensorize a model")
st.caption("Replace Linear / Conv / Embedding weights by tensor networks, measure what it does to the model, "
           "heal it, and download it. Data-aware by default: calibration inputs set what each layer must keep.")

with st.sidebar:
    devices = ["cuda", "cpu"] if device_info().type == "cuda" else ["cpu"]
    st.selectbox("Compute device", devices, key=K + "device")

loaded = _loaded()
uploaded = st.session_state.get(K + "uploaded")
options = list(DEMOS) + ([UPLOADED] if uploaded else [])
if st.session_state.get(K + "source") not in options:
    st.session_state[K + "source"] = UPLOADED if loaded["kind"] != "demo" else loaded["ref"]
source_col, upload_col = st.columns([1, 2])
with source_col:
    st.radio("Model", options, key=K + "source", on_change=_pick_source,
             format_func=lambda o: f"Uploaded: {uploaded['name']}" if o == UPLOADED else demo_label(o))
with upload_col:
    st.file_uploader(
        f"…or upload weights (.safetensors, state_dict .pt/.pth, or a zip of a Hugging Face folder; "
        f"at most {MAX_UPLOAD_BYTES // 2**20} MB; never executed)",
        key=K + "upload", on_change=_receive_upload,  # no type filter: every refusal says why, in our words
    )
    if st.session_state.get(K + "upload_error"):
        st.error(md_escape(st.session_state[K + "upload_error"]) + " — the loaded model is kept.", icon=":material/block:")
loaded = _loaded()
weights_only = loaded["kind"] == "file"
st.markdown(f"**Loaded:** {md_escape(loaded['name'])} "
            f"({'weights only: no architecture, so no functional metric' if weights_only else 'with its architecture'})")

device = _device()
source_key = (loaded["kind"], loaded["ref"], "cpu" if weights_only else device)
try:
    subject = _subject(source_key)
    from tnviz.model.plan import file_layer_table, layer_table

    infos = file_layer_table(subject.weights) if weights_only else layer_table(subject.model)
    table = pd.DataFrame([{"layer": i.name, "kind": i.kind, "shape": "x".join(map(str, i.shape)), "params": i.params}
                          for i in infos])
except TnvizError as exc:
    st.error(md_escape(plain_message(exc)))
    st.stop()

# ---------------------------------------------------------------------- settings
st.subheader("Settings")
demo = DEMOS.get(loaded["ref"]) if loaded["kind"] == "demo" else None
if K + "rules" not in st.session_state:
    st.session_state[K + "rules"] = pd.DataFrame([{
        "pattern": demo.layers if demo else ".*", "method": "mpo", "truncation": "ratio",
        "value": demo.ratio if demo else 2.0, "in_dims": "auto", "out_dims": "auto"}])
st.caption("Per name pattern (first match wins; a regular expression on "
           f"{'tensor' if weights_only else 'module'} names): method, truncation, legs.")
rules_df = st.data_editor(  # full width: in a column, its headers were cut off
    st.session_state[K + "rules"], num_rows="dynamic", key=K + "rules_editor", width="stretch",
    column_config={
        "pattern": st.column_config.TextColumn("pattern", width="medium", help="regex on layer names"),
        "method": st.column_config.SelectboxColumn("method", options=list(METHODS), required=True, width="small"),
        "truncation": st.column_config.SelectboxColumn("truncation", options=list(TRUNCATIONS), required=True,
                                                       width="small"),
        "value": st.column_config.NumberColumn("value", min_value=0.0, format="%.4g", width="small",
                                               help="; ".join(f"{k}: {v}" for k, v in TRUNCATIONS.items())),
        "in_dims": st.column_config.TextColumn("in legs", width="small", help="e.g. 8x8x4, or auto"),
        "out_dims": st.column_config.TextColumn("out legs", width="small", help="e.g. 8x8x4, or auto"),
    },
)
mode_col, target_col, option_col = st.columns([2, 2, 2])
with mode_col:
    mode = st.radio("Truncation from", ["the patterns", "one global target"], key=K + "mode",
                    help="one global target spreads a ratio or an error budget over the pattern-matched layers "
                         "by their sensitivity (error per parameter saved)")
target = None
if mode == "one global target":
    with target_col:
        kind = st.selectbox("Global target", ["ratio", "error budget"], key=K + "target_kind")
        if kind == "ratio":  # separate keys: a ratio of 2 must not become an error budget of 2
            value = st.number_input("Compression ratio", min_value=1.01, value=2.0, key=K + "target_value")
        else:
            value = st.number_input("RMS relative error over layers", min_value=0.001, max_value=0.999, value=0.3,
                                    key=K + "target_budget")
    target = ("ratio" if kind == "ratio" else "error", float(value))
with option_col:
    data_aware = st.checkbox("Data-aware (calibration inputs)", value=not weights_only, disabled=weights_only,
                             key=K + "data_aware") and not weights_only
    st.caption(f"Inputs: {subject.inputs}.")
    order_search = st.checkbox("Search neuron order", value=False, disabled=weights_only, key=K + "order_search",
                               help="re-order each feed-forward pair's hidden neurons (the function is unchanged) "
                                    "so its MPO compresses better; stored in the folder") and not weights_only
    show_preview = st.checkbox("Preview parameters and error per layer", value=loaded["ref"] != "minilm",
                               key=K + "preview",
                               help="the same decompositions the run makes (data-aware ones calibrate first)")

rows = tuple(tuple(sorted({k: (None if pd.isna(v) else v) for k, v in r.items()}.items()))
             for r in rules_df.to_dict("records"))
plan = None
try:
    plan = _plan(source_key, rows, target)
    planned = {p.name: p for p in plan.layers}
    table["setting"] = [planned[n].describe() if n in planned else "dense" for n in table["layer"]]
    if show_preview:
        pv = {r["layer"]: r for r in _preview(source_key, rows, target, data_aware)}
        table["params after (preview)"] = [pv.get(n, {}).get("params after") for n in table["layer"]]
        table["weight error (preview)"] = [pv.get(n, {}).get("weight error") for n in table["layer"]]
except (TnvizError, re.error, ValueError, KeyError) as exc:
    st.error(f"Settings: {md_escape(plain_message(exc))}")
    plan = None

st.subheader("Layers")
st.dataframe(table, hide_index=True, width="stretch", column_config=NAME_COLUMN)
if plan is not None and plan.allocation is not None:
    st.caption(f"Allocation of the global target ({plan.allocation.target}) by error per parameter saved "
               f"(proxy from one SVD of each weight): {plan.allocation.total_before:,} -> "
               f"{plan.allocation.total_after:,} parameters")
    st.dataframe(pd.DataFrame(plan.allocation.rows()), hide_index=True, width="stretch", column_config=NAME_COLUMN)


# ---------------------------------------------------------------------- run
def _live_curve(mode: str):
    """An ``on_loss`` callback that draws the healing's training loss as it trains (redrawn at most
    every half second, so drawing costs nothing next to the training)."""
    import time

    chart = st.empty()
    curves: dict[str, list[float]] = {}
    drawn = [0.0]
    unit = "epoch" if mode == "end-to-end" else "step"

    def on_loss(name: str, loss: float) -> None:
        curves.setdefault(name, []).append(loss)
        now = time.perf_counter()
        if now - drawn[0] > 0.5:
            drawn[0] = now
            chart.plotly_chart(heal_curves(curves, unit=unit, title=f"Healing loss per {unit} (training)"),
                               key=f"{K}heal_live.{sum(map(len, curves.values()))}")

    return on_loss


def _progress_bar():
    """A bar fed by the library's ``progress(done, total, label)`` with an estimate of the time left
    (from the pace so far), and a Cancel button: a click reruns the page, which stops the run at its
    next progress call; the library keeps what was there before (no new result; a healed model is
    restored), and only a finished run is stored in the session."""
    import time

    bar = st.progress(0.0, text="starting")
    st.button("Cancel", key=K + "cancel", icon=":material/cancel:",
              help="stop now and keep the model and results from before")
    started = time.perf_counter()

    def progress(done: int, total: int, name: str) -> None:
        elapsed = time.perf_counter() - started
        left = f" · about {elapsed * (total - done) / done:.0f} s left" if 0 < done < total else ""
        bar.progress(min(done / max(total, 1), 1.0), text=f"{done}/{total} {name}{left}")

    return bar, progress


def _deferred_zip(result):
    """The download's bytes as a callable: Streamlit runs it when the button is clicked (on its own
    thread), so a run's results show without waiting for the zip; the bytes are kept after the
    first click."""
    import threading

    lock, kept = threading.Lock(), []

    def data() -> bytes:
        with lock:
            if not kept:
                kept.append(result.zip())
            return kept[0]

    return data


def _run() -> None:
    from tnviz.model.compress import compress

    with st.status("Compressing…", expanded=True) as status:
        bar, progress = _progress_bar()
        result = compress(subject, rules=plan.rules, target=_target(target), data_aware=data_aware, device=device,
                          progress=progress, order_search=order_search)
        bar.progress(1.0, text="done")
        status.update(label="Done", state="complete", expanded=False)
    # assigned only now: a run cancelled or refused half way keeps the previous result
    st.session_state[K + "result"] = result
    for key in ("healed", "zip", "sens_df", "cmp_df"):
        st.session_state.pop(K + key, None)


if st.button("Run compression", type="primary", disabled=plan is None, key=K + "run"):
    try:
        _run()
    except TnvizError as exc:
        st.error(f"Compression: {md_escape(plain_message(exc))}")


# ---------------------------------------------------------------------- results
def _short_names(names: list[str]) -> list[str]:
    """Layer names without their common dotted prefix (``encoder.layer.``), for chart axes."""
    names = [str(n) for n in names]
    if len(names) < 2:
        return names
    prefix = names[0]
    for n in names[1:]:
        while not n.startswith(prefix):
            prefix = prefix[:-1]
    prefix = prefix[: prefix.rfind(".") + 1]
    return [n[len(prefix):] or n for n in names]


def _bar_chart(df: pd.DataFrame, columns: list[str], title: str, y_title: str, log: bool = False) -> go.Figure:
    x = _short_names(list(df["layer"]))
    fig = go.Figure([go.Bar(name=c, x=x, y=df[c], customdata=df["layer"],
                            hovertemplate="%{customdata}: %{y:,.4g}<extra>" + c + "</extra>") for c in columns])
    longest = max((len(n) for n in x), default=0)
    fig.update_layout(title=title, barmode="group", height=340 + (4 * longest if len(x) > 4 else 0),
                      margin=dict(l=10, r=10, t=40, b=10), xaxis={"type": "category", "title": "layer"},
                      yaxis={"title": y_title},
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"})
    values = [float(v) for c in columns for v in df[c] if pd.notna(v) and float(v) > 0]
    if log and values and max(values) > 100 * min(values):
        # a log axis only where sizes span decades; its bars start a decade below the smallest value,
        # not at the smallest value (which would draw it as almost nothing)
        low = math.floor(math.log10(min(values))) - 1
        fig.update_yaxes(type="log", range=[low, math.log10(max(values)) + 0.1], dtick=1)
    return fig


def _metric_chart(sdf: pd.DataFrame, metric: str, original: float, current: float) -> go.Figure:
    """Dots, not bars (the differences are small and a bar's axis must start at zero), on an axis
    that fits the data and both reference lines."""
    fig = go.Figure(go.Scatter(x=_short_names(list(sdf["layer"])), y=sdf[metric], mode="markers",
                               marker={"size": 14}, name=metric, customdata=sdf["layer"],
                               hovertemplate="%{customdata}: %{y:.4f}<extra></extra>"))
    fig.add_hline(y=original, line_dash="dot", annotation_text="original")
    fig.add_hline(y=current, line_dash="dash", line_color="#c0392b", annotation_text="all compressed (current)",
                  annotation_position="bottom right")
    values = [*sdf[metric].astype(float), original, current]
    low, high = min(values), max(values)
    pad = max((high - low) * 0.15, 1e-3)
    fig.update_layout(title=f"{metric} with one layer compressed", height=340, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis={"type": "category", "title": "layer compressed alone"},
                      yaxis={"title": metric, "range": [low - pad, high + pad]})
    return fig


result = st.session_state.get(K + "result")
if result is not None:
    st.subheader("Result")
    totals = result.totals
    metric = subject.metric
    tiles = st.columns(4 if metric else 3)
    tiles[0].metric(f"Layer parameters (from {totals['params_before']:,})", f"{totals['params_after']:,}",
                    f"{totals['params_after'] / max(totals['params_before'], 1) - 1:+.0%}", delta_color="inverse")
    tiles[1].metric("Ratio (compressed layers)", f"{totals['ratio']:.2f}x")
    if "model_params_before" in totals:
        tiles[2].metric(f"Model parameters (from {totals['model_params_before']:,})", f"{totals['model_params_after']:,}",
                        f"{totals['model_params_after'] / max(totals['model_params_before'], 1) - 1:+.0%}",
                        delta_color="inverse")
    else:
        tiles[2].metric("Layers compressed", f"{totals['layers']}")
    if metric:
        original, current = result.metrics["original"][metric], result.current[metric]
        tiles[3].metric(metric.capitalize(), f"{current:.4f}", f"{current - original:+.4f} vs original")
    other_metrics(result, metric)
    n_layers = len(result.layers)
    took = f"{result.seconds:.1f} s" if result.seconds >= 1 else f"{result.seconds * 1e3:.0f} ms"
    st.caption(f"{'Data-aware' if result.data_aware else 'Plain'} · {n_layers} layer{'s' * (n_layers != 1)} on "
               f"{result.device} in {took} · FLOPs per input row at batch 1 · weight error = ||W - W~|| / ||W||; "
               f"data error = the same on the calibration inputs, which is what a data-aware decomposition "
               f"minimises (its weight error may exceed 1 along directions the data never uses)")
    if result.layers:
        df = pd.DataFrame(result.rows())
        st.dataframe(df.drop(columns=["seconds"]), hide_index=True, width="stretch", column_config=NAME_COLUMN)
    for s in result.skipped:
        st.caption(f"{md_escape(s['name'])}: {md_escape(s['reason'])}")
    if result.layers:
        g1, g2 = st.columns(2)
        g1.plotly_chart(_bar_chart(df, ["params before", "params after"], "Parameters per layer", "parameters",
                                   log=True), width="stretch")
        g2.plotly_chart(_bar_chart(df, [c for c in ("weight error", "data error") if df[c].notna().any()],
                                   "Relative error per layer", "relative error"), width="stretch")
    search_section(result, K)

    if metric and result.layers:
        st.subheader("Sensitivity")  # not in an expander: the button's rerun folded the chart away
        sens_text, sens_button = st.columns([4, 1], vertical_alignment="center")
        sens_text.caption("The functional effect of compressing each layer alone (the others kept dense), "
                          "as in the run above.")
        if sens_button.button("Measure sensitivity", key=K + "sens"):
            from tnviz.model.analysis import sensitivity

            with st.status("Compressing one layer at a time…", expanded=True) as status:
                bar, progress = _progress_bar()
                st.session_state[K + "sens_df"] = pd.DataFrame(sensitivity(result, progress=progress))
                status.update(label="Measured", state="complete", expanded=False)
        sdf = st.session_state.get(K + "sens_df")
        if sdf is not None:
            st.plotly_chart(_metric_chart(sdf, metric, result.metrics["original"][metric],
                                          result.metrics["compressed"][metric]), width="stretch")

        st.subheader("Heal")
        modes = [m for m, h in HEALINGS.items() if subject.kind in h.kinds]
        h1, h2, h3 = st.columns(3)
        heal_mode = h1.radio("Healing", modes, key=K + "heal_mode", captions=[HEALINGS[m].description for m in modes])
        healing = HEALINGS[heal_mode]
        # one widget key per healing: 50 steps per layer must not become 50 epochs
        steps = h2.number_input(healing.unit.capitalize(), min_value=1, value=healing.default_steps,
                                key=f"{K}heal_steps.{heal_mode}", help=healing.description)
        if h3.button("Heal", key=K + "heal"):
            with st.status("Healing…", expanded=True) as status:
                bar, progress = _progress_bar()
                outcome = result.heal(heal_mode, int(steps), progress, on_loss=_live_curve(heal_mode))
                status.update(label="Healed" if outcome.improved else "Healing did not help", state="complete",
                              expanded=False)
            st.session_state[K + "healed"] = outcome
            st.session_state.pop(K + "zip", None)
            st.rerun()  # the tiles above show the model as it is now
        outcome = st.session_state.get(K + "healed")
        if outcome is not None:
            line = f"{outcome.report_line(metric)} (original {result.metrics['original'][metric]:.4f})"
            if outcome.improved:
                st.success(line, icon=":material/healing:")
            elif outcome.kept == "previous":
                st.warning(line, icon=":material/undo:")
                if st.button("Keep the healed model anyway", key=K + "keep_healed"):
                    result.keep_healed(outcome)
                    st.session_state.pop(K + "zip", None)
                    st.rerun()
            else:
                st.info(line)
            if outcome.report is not None and outcome.report.curve:
                unit = "epoch" if outcome.report.mode == "end-to-end" else "step"
                st.plotly_chart(heal_curves(outcome.report.curve, unit=unit,
                                            title=f"Healing loss per {unit} ({outcome.report.mode})"),
                                key=K + "heal_curve")

    if result.layers:
        if st.session_state.get(K + "zip") is None:  # written when first clicked, then kept
            st.session_state[K + "zip"] = _deferred_zip(result)
        st.download_button("Download compressed model (zip)", st.session_state[K + "zip"],
                           file_name=f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', subject.name)}-tnviz.zip",
                           mime="application/zip", key=K + "download")

    if loaded["kind"] == "demo" and metric:
        # a fixed `expanded` and a key: the expander stays as the user left it after the run
        with st.expander("Compare: method x plain/data-aware x healed (same parameters)",
                         key=K + "cmp_open", on_change="rerun"):
            rule_pattern = plan.rules[0].pattern if plan is not None else demo.layers
            ratio = st.number_input("Ratio", min_value=1.1, value=2.0, key=K + "cmp_ratio")
            if st.button("Run comparison (svd, mpo)", key=K + "cmp"):
                with st.spinner("Compressing four ways and healing each…"):
                    st.session_state[K + "cmp_df"] = pd.DataFrame(_compare(source_key, rule_pattern, float(ratio), 30))
            if st.session_state.get(K + "cmp_df") is not None:
                st.dataframe(st.session_state[K + "cmp_df"], hide_index=True, width="stretch")

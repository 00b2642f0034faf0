"""Tensorize: bring a model, see which layers compress at what cost to its function, get it back smaller.

Thin page over :mod:`tnviz.model.tensorize` (plan, apply, evaluate, export), :mod:`tnviz.model.heal`
and, for weights-only files, :func:`tnviz.model.compress.compress_file`.
"""
from __future__ import annotations

import math
import re
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.state import device_info
from tnviz.errors import TnvizError

#: Largest upload accepted here (bytes); the library's own cap is larger.
MAX_UPLOAD_BYTES = 200 * 1024**2
DEMO_LABELS = {"digits-mlp": "Digits MLP", "digits-cnn": "Digits CNN", "minilm": "MiniLM (all-MiniLM-L6-v2)"}
DEFAULT_PATTERN = {"minilm": r"layer\.\d+\.(intermediate|output)\.dense$", "digits-mlp": r"fc[12]$",
                   "digits-cnn": r"conv2|fc1"}
METHODS = ["mpo", "tr", "tucker", "cp", "svd"]
TRUNCATIONS = ["ratio", "max_rank", "rtol", "energy"]
K = "tensorize."  # session-state prefix
UPLOAD_DIR = Path(tempfile.gettempdir()) / "tnviz-uploads"
#: Layer names are long (encoder.layer.11.intermediate.dense): a wide column, pinned while scrolling.
NAME_COLUMN = {
    "layer": st.column_config.TextColumn("layer", width=240, pinned=True),
    "kind": st.column_config.TextColumn("kind", width=85),
    "shape": st.column_config.TextColumn("shape", width=90),
    "params": st.column_config.NumberColumn("params", width=95, format="localized"),
    "setting": st.column_config.TextColumn("setting", width=200),
    "params after (preview)": st.column_config.NumberColumn("params after (preview)", width=150, format="localized"),
    "weight error (preview)": st.column_config.NumberColumn("weight error (preview)", width=150, format="%.4f"),
}


# ---------------------------------------------------------------------- cached engine calls
@st.cache_resource(show_spinner="Loading the model…")
def _demo(name: str, device: str):
    from tnviz.model.tensorize import demo_subject

    return demo_subject(name, device)


@st.cache_resource(show_spinner="Building the model from its config…")
def _hf(path: str, device: str):
    from tnviz.model.tensorize import hf_subject

    return hf_subject(path, device, max_bytes=MAX_UPLOAD_BYTES)


@st.cache_data(show_spinner=False)
def _file_layers(path: str) -> list[dict]:
    from tnviz.model.io import candidates, open_weights

    with open_weights(path, max_bytes=MAX_UPLOAD_BYTES) as weights:
        return [{"layer": c.name, "kind": c.kind, "shape": "x".join(map(str, c.shape)), "params": c.params}
                for c in candidates(weights)]


def _rules(rows: list[dict]):
    from tnviz.model.tensorize import Rule

    rules = []
    for row in rows:
        if not row.get("pattern"):
            continue
        legs = {}
        for key in ("in_dims", "out_dims"):
            text = str(row.get(key) or "").strip()
            if text and text.lower() != "auto":
                try:
                    legs[key] = tuple(int(v) for v in re.split(r"[x, ]+", text) if v)
                except ValueError:
                    raise TnvizError(f"legs must be sizes like 16x24 or 'auto'; got {text!r}") from None
        kind = row.get("truncation") or "ratio"
        value = float(row["value"]) if kind in ("ratio", "rtol", "energy") else int(row["value"])
        rules.append(Rule(row["pattern"], row.get("method") or "mpo", {kind: value}, **legs))
    return rules


@st.cache_data(show_spinner="Planning…")
def _plan(subject_key: tuple, rows: tuple, target: tuple | None):
    from tnviz.model.tensorize import make_plan

    subject = _subject(subject_key)
    rules = _rules([dict(r) for r in rows])
    kwargs = {}
    if target:
        kwargs = {"target_ratio": target[1]} if target[0] == "ratio" else {"error_budget": target[1]}
    return make_plan(subject.model, rules, device="cpu", **kwargs)


@st.cache_data(show_spinner="Previewing parameters and error…")
def _preview(subject_key: tuple, rows: tuple, target: tuple | None) -> list[dict]:
    from tnviz.model.tensorize import preview

    return preview(_subject(subject_key).model, _plan(subject_key, rows, target), device="cpu")


@st.cache_data(show_spinner=False)
def _compare(subject_key: tuple, pattern: str, ratio: float, heal_steps: int) -> list[dict]:
    from tnviz.model.tensorize import compare_methods

    return compare_methods(_subject(subject_key), pattern, ratio, heal_steps=heal_steps, device=subject_key[2])


def _subject(key: tuple):
    kind, ref, device = key
    return _demo(ref, device) if kind == "demo" else _hf(ref, device)


# ---------------------------------------------------------------------- model source
def _receive_upload() -> None:
    """Check an upload; only a good one replaces the loaded model (a bad one says why and keeps it)."""
    from tnviz.model.io import open_weights

    upload = st.session_state.get(K + "upload")
    if upload is None:
        return
    st.session_state[K + "upload_error"] = None
    try:
        if upload.size > MAX_UPLOAD_BYTES:
            raise TnvizError(f"an upload may be at most {MAX_UPLOAD_BYTES:,} bytes; {upload.name!r} has {upload.size:,}")
        UPLOAD_DIR.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(dir=UPLOAD_DIR))
        path = folder / Path(upload.name).name
        path.write_bytes(upload.getvalue())
        try:
            with open_weights(path, max_bytes=MAX_UPLOAD_BYTES) as weights:
                has_architecture = type(weights).__name__ == "HFFolderWeights"
            if has_architecture:
                _hf(str(path), _device())  # builds it now, so a config that cannot be built is refused here
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    except TnvizError as exc:
        st.session_state[K + "upload_error"] = f"{upload.name}: {_plain(exc)}"
        return
    st.session_state[K + "loaded"] = {"kind": "hf" if has_architecture else "file", "ref": str(path), "name": upload.name}
    _forget_run()


def _plain(exc: Exception) -> str:
    """One plain line: torch's wrapped weights_only message carries terminal escapes, line breaks and
    advice to unpickle anyway, which is not ours to give."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(exc))
    text = re.sub(r":?\s*Weights only load failed\..*?(?=;|$)", "", text, flags=re.S)
    return " ".join(text.split())


def _forget_run() -> None:
    """A new model: its own default settings, no results of the previous one."""
    for key in ("result", "rules", "rules_editor", "file_report", "export", "zip", "healed", "sens_df", "cmp_df"):
        st.session_state.pop(K + key, None)


def _device() -> str:
    return st.session_state.get(K + "device") or device_info().type


def _loaded() -> dict:
    if K + "loaded" not in st.session_state:
        st.session_state[K + "loaded"] = {"kind": "demo", "ref": "digits-mlp", "name": DEMO_LABELS["digits-mlp"]}
    return st.session_state[K + "loaded"]


def _pick_demo() -> None:
    name = st.session_state[K + "demo"]
    st.session_state[K + "loaded"] = {"kind": "demo", "ref": name, "name": DEMO_LABELS[name]}
    st.session_state[K + "upload_error"] = None
    _forget_run()


# ---------------------------------------------------------------------- page
st.title("Tensorize a model")
st.caption("Replace Linear / Conv / Embedding weights by tensor networks, measure what it does to the model, "
           "heal it, and download it. Data-aware by default: calibration inputs set what each layer must keep.")

with st.sidebar:
    devices = ["cuda", "cpu"] if device_info().type == "cuda" else ["cpu"]
    st.selectbox("Compute device", devices, key=K + "device")

loaded = _loaded()
source_col, upload_col = st.columns([1, 2])
with source_col:
    st.radio("Demo model", list(DEMO_LABELS), format_func=DEMO_LABELS.get, key=K + "demo", on_change=_pick_demo,
             index=list(DEMO_LABELS).index(loaded["ref"]) if loaded["kind"] == "demo" else 0)
with upload_col:
    st.file_uploader(
        f"…or upload weights (.safetensors, state_dict .pt/.pth, or a zip of a Hugging Face folder; "
        f"at most {MAX_UPLOAD_BYTES // 2**20} MB; never executed)",
        key=K + "upload", on_change=_receive_upload,  # no type filter: every refusal says why, in our words
    )
    if st.session_state.get(K + "upload_error"):
        st.error(st.session_state[K + "upload_error"] + " — the loaded model is kept.", icon=":material/block:")
loaded = _loaded()
st.markdown(f"**Loaded:** {loaded['name']} "
            f"({'weights only: no architecture, so no functional metric' if loaded['kind'] == 'file' else 'with its architecture'})")

device = _device()
try:
    if loaded["kind"] == "file":
        table = pd.DataFrame(_file_layers(loaded["ref"]))
        subject_key = None
    else:
        subject_key = (loaded["kind"], loaded["ref"], device)
        from tnviz.model.tensorize import layer_table

        subject = _subject(subject_key)
        table = pd.DataFrame([{"layer": i.name, "kind": i.kind, "shape": "x".join(map(str, i.shape)),
                               "params": i.params} for i in layer_table(subject.model)])
except TnvizError as exc:
    st.error(str(exc))
    st.stop()

# ---------------------------------------------------------------------- settings
st.subheader("Settings")
default_pattern = DEFAULT_PATTERN.get(loaded["ref"], ".*")
if K + "rules" not in st.session_state:
    st.session_state[K + "rules"] = pd.DataFrame([{"pattern": default_pattern, "method": "mpo", "truncation": "ratio",
                                                   "value": 2.0 if loaded["ref"] == "minilm" else 8.0,
                                                   "in_dims": "auto", "out_dims": "auto"}])
st.caption("Per name pattern (first match wins; regex on module names): method, truncation, legs.")
rules_df = st.data_editor(  # full width: in a column, its headers were cut off
    st.session_state[K + "rules"], num_rows="dynamic", key=K + "rules_editor", width="stretch",
    column_config={
        "pattern": st.column_config.TextColumn("pattern", width="medium", help="regex on module names"),
        "method": st.column_config.SelectboxColumn("method", options=METHODS, required=True, width="small"),
        "truncation": st.column_config.SelectboxColumn("truncation", options=TRUNCATIONS, required=True,
                                                       width="small"),
        "value": st.column_config.NumberColumn("value", min_value=0.0, format="%.4g", width="small",
                                               help="ratio: compression factor; max_rank: bond size; "
                                                    "rtol: relative error; energy: kept fraction"),
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
            value = st.number_input("RMS relative error over layers", min_value=0.001, max_value=1.0, value=0.3,
                                    key=K + "target_budget")
    target = ("ratio" if kind == "ratio" else "budget", float(value))
with option_col:
    data_aware = st.checkbox("Data-aware (calibration inputs)", value=loaded["kind"] != "file",
                             disabled=loaded["kind"] == "file", key=K + "data_aware")
    if loaded["kind"] != "file" and _subject(subject_key).inputs:
        st.caption(f"Inputs: {_subject(subject_key).inputs}.")
    show_preview = st.checkbox("Preview parameters and error per layer", value=loaded["ref"] != "minilm",
                               key=K + "preview")

rows = tuple(tuple(sorted({k: (None if pd.isna(v) else v) for k, v in r.items()}.items()))
             for r in rules_df.to_dict("records"))
plan = None
try:
    if loaded["kind"] != "file":
        plan = _plan(subject_key, rows, target)
        planned = {p.name: p for p in plan.layers}
        table["compress"] = [n in planned for n in table["layer"]]
        table["setting"] = [planned[n].describe() if n in planned else "dense" for n in table["layer"]]
        if show_preview:
            pv = {r["layer"]: r for r in _preview(subject_key, rows, target)}
            table["params after (preview)"] = [pv.get(n, {}).get("params after") for n in table["layer"]]
            table["weight error (preview)"] = [pv.get(n, {}).get("weight error") for n in table["layer"]]
    else:
        rules = _rules([dict(r) for r in rows])
        if not rules:
            raise TnvizError("a compression needs at least one pattern row")
        regex = re.compile(rules[0].pattern)
        table["compress"] = [bool(regex.search(n)) for n in table["layer"]]
except (TnvizError, re.error, ValueError, KeyError) as exc:
    st.error(f"Settings: {exc}")
    plan = None

st.subheader("Layers")
st.dataframe(table, hide_index=True, width="stretch", column_config=NAME_COLUMN)
if plan is not None and plan.allocation is not None:
    st.caption(f"Allocation of the global target ({plan.allocation.target}) by error per parameter saved "
               f"(proxy from one SVD of each whitened weight): {plan.allocation.total_before:,} -> "
               f"{plan.allocation.total_after:,} parameters")
    st.dataframe(pd.DataFrame(plan.allocation.rows()), hide_index=True, width="stretch", column_config=NAME_COLUMN)


# ---------------------------------------------------------------------- run
def _run() -> None:
    from tnviz.model.tensorize import apply_plan, functional

    with st.status("Compressing…", expanded=True) as status:
        bar = st.progress(0.0, text="starting")

        def progress(done: int, total: int, name: str) -> None:
            bar.progress(min(done / max(total, 1), 1.0), text=f"{done}/{total} {name}")

        if loaded["kind"] == "file":
            from tnviz.model.compress import compress_file

            rule = _rules([dict(r) for r in rows])[0]
            (tkind, tvalue), = rule.truncation.items()
            if tkind == "energy":
                raise TnvizError("weights-only files take ratio, max_rank or rtol truncations; got energy")
            out = Path(tempfile.mkdtemp(dir=UPLOAD_DIR))
            report = compress_file(loaded["ref"], out, method=rule.method, layers=rule.pattern, device=device,
                                   progress=progress, **{tkind: int(tvalue) if tkind == "max_rank" else float(tvalue)})
            st.session_state[K + "file_report"] = report
            st.session_state[K + "export"] = str(out)
            st.session_state.pop(K + "result", None)
        else:
            subject = _subject(subject_key)
            result = apply_plan(subject.model, plan, calibration=subject.calibration if data_aware else None,
                                data_aware=data_aware, device=device, progress=progress)
            status.update(label="Measuring the functional effect…")
            reference = None
            if subject.kind == "minilm":
                from tnviz.model.demos import embed, sentences

                reference = embed(sentences("heldout"), subject.model)
            st.session_state[K + "reference"] = reference
            st.session_state[K + "samples"] = subject.samples
            st.session_state[K + "before"] = functional(subject.kind, subject.model, subject.model, subject.samples,
                                                        reference)
            st.session_state[K + "after"] = functional(subject.kind, subject.model, result.model, subject.samples,
                                                       reference)
            st.session_state[K + "result"] = result
            st.session_state[K + "run_id"] = st.session_state.get(K + "run_id", 0) + 1
            st.session_state.pop(K + "healed", None)
            st.session_state.pop(K + "zip", None)
            st.session_state.pop(K + "sens_df", None)
            st.session_state.pop(K + "file_report", None)
        bar.progress(1.0, text="done")
        status.update(label="Done", state="complete", expanded=False)


if st.button("Run compression", type="primary", disabled=plan is None and loaded["kind"] != "file", key=K + "run"):
    try:
        _run()
    except TnvizError as exc:
        st.error(f"Compression: {exc}")

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


def _bar_chart(df: pd.DataFrame, columns: list[str], title: str, log: bool = False) -> go.Figure:
    x = _short_names(list(df["layer"]))
    fig = go.Figure([go.Bar(name=c, x=x, y=df[c], customdata=df["layer"],
                            hovertemplate="%{customdata}: %{y:,.4g}<extra>" + c + "</extra>") for c in columns])
    longest = max((len(n) for n in x), default=0)
    fig.update_layout(title=title, barmode="group", height=340 + (4 * longest if len(x) > 4 else 0),
                      margin=dict(l=10, r=10, t=40, b=10), xaxis={"type": "category"},
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"})
    values = [float(v) for c in columns for v in df[c] if pd.notna(v) and float(v) > 0]
    if log and values and max(values) > 100 * min(values):
        # a log axis only where sizes span decades; its bars start a decade below the smallest value,
        # not at the smallest value (which would draw it as almost nothing)
        low = math.floor(math.log10(min(values))) - 1
        fig.update_yaxes(type="log", range=[low, math.log10(max(values)) + 0.1], dtick=1)
    return fig


def _export_zip(result) -> bytes:
    from tnviz.model.tensorize import export_model, zip_folder

    out = Path(tempfile.mkdtemp(dir=UPLOAD_DIR))
    try:
        export_model(result, out, source=loaded["name"])
        return zip_folder(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


result = st.session_state.get(K + "result")
file_report = st.session_state.get(K + "file_report")
if file_report is not None:
    from tnviz.model.tensorize import zip_folder

    st.subheader("Result")
    t = file_report["totals"]
    c1, c2, c3 = st.columns(3)
    c1.metric("Parameters before", f"{t['params_before']:,}")
    c2.metric("Parameters after", f"{t['params_after']:,}")
    c3.metric("Ratio", f"{t['ratio']:.2f}x")
    df = pd.DataFrame([{"layer": r["name"], "shape": "x".join(map(str, r["shape"])), "method": r["method"],
                        "params before": r["params_before"], "params after": r["params_after"],
                        "weight error": r["rel_error"], "ranks": str(r["ranks"])} for r in file_report["layers"]])
    st.dataframe(df, hide_index=True, width="stretch", column_config=NAME_COLUMN)
    for s in file_report["skipped"]:
        st.caption(f"{s['name']}: {s['reason']}")
    st.download_button("Download compressed model (zip)", zip_folder(st.session_state[K + "export"]),
                       file_name="tnviz-compressed.zip", mime="application/zip", key=K + "download")
elif result is not None:
    st.subheader("Result")
    totals = result.totals
    before, after = st.session_state[K + "before"], st.session_state[K + "after"]
    metric = next(iter(after))
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(f"Layer parameters (from {totals['params_before']:,})", f"{totals['params_after']:,}",
              f"{totals['params_after'] / max(totals['params_before'], 1) - 1:+.0%}", delta_color="inverse")
    c2.metric("Ratio (compressed layers)", f"{totals['ratio']:.2f}x")
    c3.metric(f"Model parameters (from {totals['model_params_before']:,})", f"{totals['model_params_after']:,}",
              f"{totals['model_params_after'] / max(totals['model_params_before'], 1) - 1:+.0%}", delta_color="inverse")
    c4.metric(metric.capitalize(), f"{after[metric]:.4f}", f"{after[metric] - before[metric]:+.4f} vs original")
    n_layers = len(result.layers)
    took = f"{result.seconds:.1f} s" if result.seconds >= 1 else f"{result.seconds * 1e3:.0f} ms"
    st.caption(f"{'Data-aware' if result.data_aware else 'Plain'} · {n_layers} layer{'s' * (n_layers != 1)} on {result.device} "
               f"in {took} · FLOPs per input row at batch 1 · "
               f"weight error = ||W - W~|| / ||W||; data error = the same on the calibration inputs, which is what "
               f"a data-aware decomposition minimises (its weight error may exceed 1 along directions the data never uses)")
    df = pd.DataFrame(result.rows())
    st.dataframe(df.drop(columns=["seconds"]), hide_index=True, width="stretch", column_config=NAME_COLUMN)
    for s in result.skipped:
        st.caption(f"{s['name']}: {s['reason']}")
    g1, g2 = st.columns(2)
    g1.plotly_chart(_bar_chart(df, ["params before", "params after"], "Parameters per layer", log=True),
                    width="stretch")
    g2.plotly_chart(_bar_chart(df, [c for c in ("weight error", "data error") if df[c].notna().any()],
                               "Relative error per layer"), width="stretch")

    st.subheader("Sensitivity")  # not in an expander: the button's rerun folded the chart away
    sens_text, sens_button = st.columns([4, 1], vertical_alignment="center")
    sens_text.caption("The functional effect of compressing each layer alone (the others kept dense), "
                      "as in the run above.")
    if sens_button.button("Measure sensitivity", key=K + "sens"):
        from tnviz.model.tensorize import sensitivity

        with st.spinner("Compressing one layer at a time…"):
            st.session_state[K + "sens_df"] = pd.DataFrame(
                sensitivity(result, _subject(subject_key).kind, st.session_state[K + "samples"]))
    sdf = st.session_state.get(K + "sens_df")
    if sdf is not None:
        m = [c for c in sdf.columns if c != "layer"][0]
        # dots, not bars: the differences are small and a bar's axis must start at zero
        fig = go.Figure(go.Scatter(x=_short_names(list(sdf["layer"])), y=sdf[m], mode="markers",
                                   marker={"size": 14}, name=m, customdata=sdf["layer"],
                                   hovertemplate="%{customdata}: %{y:.4f}<extra></extra>"))
        fig.add_hline(y=before[m], line_dash="dot", annotation_text="original")
        fig.add_hline(y=st.session_state[K + "after"][m], line_dash="dash", line_color="#c0392b",
                      annotation_text="all compressed (current)", annotation_position="bottom right")
        fig.update_layout(title=f"{m} with one layer compressed", height=340, margin=dict(l=10, r=10, t=40, b=10),
                          xaxis={"type": "category"})
        st.plotly_chart(fig, width="stretch")

    st.subheader("Heal")
    subject = _subject(subject_key)
    modes = ["layer-wise", "distill (all layers jointly)"] + (["end-to-end (digits labels)"] if subject.kind == "digits" else [])
    h1, h2, h3 = st.columns(3)
    heal_mode = h1.radio("Healing", modes, key=K + "heal_mode")
    if heal_mode == "layer-wise":  # separate keys: 50 steps per layer must not become 50 epochs
        steps = h2.number_input("Steps per layer", min_value=1, value=50, key=K + "heal_steps",
                                help="distillation steps of each TN layer towards the original layer's outputs")
    elif heal_mode.startswith("distill"):
        steps = h2.number_input("Steps", min_value=1, value=60, key=K + "distill_steps",
                                help="optimizer steps training every TN layer at once towards the original model's "
                                     "outputs on the calibration inputs (kept only if it improves them)")
    else:
        steps = h2.number_input("Epochs", min_value=1, value=2, key=K + "heal_epochs",
                                help="passes over the digits training split with its labels")
    if h3.button("Heal", key=K + "heal"):
        from tnviz.model.heal import heal_digits, heal_distill, heal_layerwise
        from tnviz.model.tensorize import functional

        with st.status("Healing…", expanded=True) as status:
            bar = st.progress(0.0)
            cb = lambda d, t, n: bar.progress(min(d / max(t, 1), 1.0), text=f"{d}/{t} {n}")  # noqa: E731
            if heal_mode == "layer-wise":
                heal_layerwise(result.model, subject.model, subject.calibration, steps=int(steps), progress=cb)
            elif heal_mode.startswith("distill"):
                heal_distill(result.model, subject.model, subject.calibration, steps=int(steps), progress=cb)
            else:
                heal_digits(result.model, epochs=int(steps), progress=cb)
            healed = functional(subject.kind, subject.model, result.model, subject.samples,
                                st.session_state[K + "reference"])
            st.session_state[K + "healed"] = (heal_mode, st.session_state[K + "after"], healed)
            st.session_state[K + "after"] = healed
            st.session_state.pop(K + "zip", None)
            status.update(label="Healed", state="complete", expanded=False)
    if st.session_state.get(K + "healed"):
        how, was, now = st.session_state[K + "healed"]
        st.success(f"{how}: {metric} {was[metric]:.4f} -> {now[metric]:.4f} (original {before[metric]:.4f})")

    if st.session_state.get(K + "zip") is None:
        st.session_state[K + "zip"] = _export_zip(result)
    st.download_button("Download compressed model (zip)", st.session_state[K + "zip"], file_name="tnviz-compressed.zip",
                       mime="application/zip", key=K + "download")

    if loaded["kind"] == "demo":
        with st.expander("Compare: method x plain/data-aware x healed (same parameters)"):
            rule_pattern = _rules([dict(r) for r in rows])[0].pattern if rows else default_pattern
            ratio = st.number_input("Ratio", min_value=1.1, value=2.0, key=K + "cmp_ratio")
            if st.button("Run comparison (svd, mpo)", key=K + "cmp"):
                with st.spinner("Compressing four ways and healing each…"):
                    st.session_state[K + "cmp_df"] = pd.DataFrame(_compare(subject_key, rule_pattern, float(ratio), 30))
            if st.session_state.get(K + "cmp_df") is not None:
                st.dataframe(st.session_state[K + "cmp_df"], hide_index=True, width="stretch")

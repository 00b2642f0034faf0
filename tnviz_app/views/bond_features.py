"""Bond features: the latent spaces on the bonds of a tensorized model, on held-out digits.

Pick a model (the digits MLP with one layer as an MPO, or the tensorized autoencoder) and a
bond: class x channel heatmap, most active digits per channel, the activation spectrum, the
diagram with the bond highlighted, the autoencoder's decoded channels, and a gauge move that
shows which statistics are properties of the layer and which only of the chosen gauge."""
from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

import tnviz
from tnviz_app.components.persist import remember, restore
from tnviz_app.components.formatting import md_escape
from tnviz_app.components.diagram import diagram
from tnviz.model.autoencoder import ENCODER_BONDS, LATENT_BOND, autoencoder_network, train_autoencoder
from tnviz.bonds import GAUGE_KINDS, REDUCTIONS, bond_cut
from tnviz.model.bonds import DIGITS_TN_LAYERS, inspect_bond, tensorized_digits_mlp
from tnviz.render.bond_charts import HEATMAP_VALUES, class_channel_heatmap, image_mosaic, spectrum_chart

AUTOENCODER = "Tensorized autoencoder (bottleneck = bond z)"
MODELS: dict[str, str | None] = {f"Digits MLP, {layer} as MPO": layer for layer in DIGITS_TN_LAYERS}
MODELS[AUTOENCODER] = None
RANKS = (4, 8, 16)
NO_GAUGE = "none"
K_MODEL, K_RANK, K_HEAL, K_BOND = "bonds.model", "bonds.rank", "bonds.heal", "bonds.bond"
K_REDUCE, K_VALUES, K_GAUGE, K_SEED = "bonds.reduce", "bonds.values", "bonds.gauge", "bonds.seed"
K_LATENT, K_RELATIVE, K_COMPARE_HEAL = "bonds.latent", "bonds.relative", "bonds.compare_heal"
TOP_K, MAX_CHANNEL_ROWS = 6, 16


@st.cache_resource(show_spinner=False, max_entries=8)
def mlp_model(layer: str, max_rank: int, heal_epochs: int):
    return tensorized_digits_mlp(layer, max_rank=max_rank, heal_epochs=heal_epochs)


@st.cache_resource(show_spinner=False, max_entries=4)
def autoencoder(latent: int):
    return train_autoencoder(latent)


@st.cache_data(show_spinner=False, max_entries=8)
def mlp_accuracy(layer: str, max_rank: int, heal_epochs: int) -> float:
    from tnviz.model.evaluate import digits_accuracy

    return digits_accuracy(mlp_model(layer, max_rank, heal_epochs))


@st.cache_data(show_spinner=False, max_entries=32)
def inspect(model_name: str, max_rank: int, heal_epochs: int, latent: int, bond: str, reduce: str,
            gauge: str, seed: int, at: tuple[tuple[str, int], ...] = ()):
    from tnviz.model.demos import digits_split

    data = digits_split()
    x = data.x_test.reshape(len(data.x_test), -1)
    layer = MODELS[model_name]
    if layer is None:
        model, _ = autoencoder(latent)
        return inspect_bond(model, "layer", bond, x, data.y_test, gauge=None if gauge == NO_GAUGE else gauge,
                            seed=seed, top_k=TOP_K,
                            activations=lambda m, xs: m.bond_activations(xs, bond, reduce, dict(at)))
    model = mlp_model(layer, max_rank, heal_epochs)
    return inspect_bond(model, layer, bond, x, data.y_test, reduce=reduce, at=dict(at), seed=seed, top_k=TOP_K,
                        gauge=None if gauge == NO_GAUGE else gauge)


def _next_seed() -> None:
    st.session_state[K_SEED] = int(st.session_state[K_SEED]) + 1


def _keep_valid(key: str, options: list[Any], default: Any) -> None:
    restore(key, default)
    if st.session_state[key] not in options:
        st.session_state[key] = default


def top_digits(result, images: np.ndarray) -> Any:
    channels = min(result.cut.size, MAX_CHANNEL_ROWS)
    tiles = images[result.top[:channels]]  # (channels, k, 8, 8)
    return image_mosaic(tiles, row_labels=[f"c{j}" for j in range(channels)],
                        col_labels=[f"#{k + 1}" for k in range(tiles.shape[1])],
                        title="most active held-out digits per channel")


def heal_rows(raw, healed, acc_raw: float, acc_healed: float) -> list[dict[str, Any]]:
    """Rows of the before/after healing table: one quantity, its raw and healed values."""
    def top(stats) -> str:
        return ", ".join(f"{c}:c{js[0]}" for c, js in stats.top_channels(1).items())

    rows = [
        ("model accuracy (held out)", f"{acc_raw:.1%}", f"{acc_healed:.1%}"),
        ("linear probe accuracy (held out)", f"{raw.probe_accuracy:.1%}", f"{healed.probe_accuracy:.1%}"),
        ("channels for 90% variance", str(raw.channels_for(0.9)), str(healed.channels_for(0.9))),
        ("participation ratio", f"{raw.participation_ratio:.2f}", f"{healed.participation_ratio:.2f}"),
        ("total variance", f"{raw.total_variance:.4g}", f"{healed.total_variance:.4g}"),
        ("largest class separation", f"{raw.separation[0]:.3g}" if len(raw.separation) else "—",
         f"{healed.separation[0]:.3g}" if len(healed.separation) else "—"),
        ("most selective channel per class", top(raw), top(healed)),
    ]
    return [{"quantity": q, "raw (TT-SVD only)": a, "healed (1 epoch)": b} for q, a, b in rows]


st.title("Bond features")
st.caption(
    "A bond is a latent space an ordinary layer does not have. Held-out digits run through the model; "
    "the bond's activation is the intermediate of the contraction at that bond (x through the tensors on "
    "one side), reduced over its other legs."
)

_keep_valid(K_MODEL, list(MODELS), next(iter(MODELS)))
c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
model_name = c1.selectbox("Model", list(MODELS), key=K_MODEL)
layer = MODELS[model_name]
max_rank, heal_epochs, latent = RANKS[-1], 0, 16
if layer is not None:
    _keep_valid(K_RANK, list(RANKS), RANKS[-1])
    max_rank = c2.selectbox("MPO max rank", RANKS, key=K_RANK, help="TT-SVD of the trained layer's weight")
    restore(K_HEAL, False)
    heal_epochs = 1 if c3.toggle("Heal", key=K_HEAL, help="fine-tune the tensorized MLP end to end for one epoch (tnviz.model.heal)") else 0
    bonds = list(mlp_model(layer, max_rank, heal_epochs).get_submodule(layer).network.bonds)
else:
    _keep_valid(K_LATENT, [8, 16], 16)
    latent = c2.selectbox("Latent size (bond z)", [8, 16], key=K_LATENT)
    bonds = list(ENCODER_BONDS)
_keep_valid(K_BOND, bonds, bonds[len(bonds) // 2] if layer is not None else LATENT_BOND)
bond = c4.selectbox("Bond", bonds, key=K_BOND)

_keep_valid(K_REDUCE, list(REDUCTIONS), "sum")
r1, r2 = st.columns([1, 2])
reduce = r1.selectbox("Other legs", list(REDUCTIONS), key=K_REDUCE, format_func=lambda k: k,
                      help="\n".join(f"{k}: {v}" for k, v in REDUCTIONS.items()))
r2.caption(REDUCTIONS[reduce])
if layer is not None:
    network = mlp_model(layer, max_rank, heal_epochs).get_submodule(layer).network
else:
    network = autoencoder_network(latent)
other_legs = bond_cut(network, bond).other
at: tuple[tuple[str, int], ...] = ()
if reduce == "index" and other_legs:
    sizes = network.sizes
    leg_cols = r2.columns(min(len(other_legs), 6))
    for k, leg in enumerate(other_legs):
        key = f"bonds.at.{leg}"
        restore(key, 0)
        if st.session_state[key] >= sizes[leg]:
            st.session_state[key] = 0
        value = leg_cols[k % len(leg_cols)].number_input(f"{leg} (size {sizes[leg]})", min_value=0,
                                                          max_value=sizes[leg] - 1, step=1, key=key)
        remember(key)
        at += ((leg, int(value)),)

gauge_options = [NO_GAUGE, *GAUGE_KINDS]
gauge_allowed = not (layer is None and bond == LATENT_BOND)
_keep_valid(K_GAUGE, gauge_options, NO_GAUGE)
restore(K_SEED, 0)
if not gauge_allowed:
    st.session_state[K_GAUGE] = NO_GAUGE
remember(K_MODEL, K_BOND, K_REDUCE, K_GAUGE, K_SEED, *([K_RANK, K_HEAL] if layer is not None else [K_LATENT]))

try:
    with st.spinner("Running held-out digits through the model and capturing the bond..."):
        # the gauge section below reads the same cached call with its gauge
        base = inspect(model_name, max_rank, heal_epochs, latent, bond, reduce, NO_GAUGE, 0, at)
except tnviz.TnvizError as exc:
    st.error(md_escape(exc), icon=":material/error:")
    st.stop()

stats, cut = base.stats, base.cut
m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("Channels", cut.size, border=True)
m2.metric("Rank of the activations", stats.rank, border=True,
          help="dimension of the subspace the bond activations span")
m3.metric("Channels for 90% variance", stats.channels_for(0.9), border=True,
          help=f"participation ratio {stats.participation_ratio:.2f}")
m4.metric("Linear probe accuracy (held out)", f"{stats.probe_accuracy:.1%}", border=True,
          help="least-squares read-out of the digit class from the bond alone, fit on half of the held-out "
               f"digits and scored on the other half ({stats.extra['probe_split'][1]} digits); on the half it was "
               f"fit on it scores {stats.extra['probe_fit_accuracy']:.1%}")
if layer is not None:
    m5.metric("Model accuracy (held out)", f"{mlp_accuracy(layer, max_rank, heal_epochs):.1%}", border=True)
else:
    _, report = autoencoder(latent)
    m5.metric("Reconstruction MSE", f"{report.test_mse:.4f}", border=True,
              delta=f"{report.improvement:.1f}x below the mean image", delta_color="off",
              help=f"held out; predicting the mean image gives {report.baseline_mse:.4f}")

left, right = st.columns([2, 3])
with left:
    diagram(cut.net, highlight_tensors=cut.left, highlight_indices=[bond],
            alt=f"Diagram of {cut.net.name} with bond {bond} highlighted")
    st.caption(cut.describe())
with right:
    _keep_valid(K_VALUES, list(HEATMAP_VALUES), next(iter(HEATMAP_VALUES)))
    what = st.radio("Heatmap", list(HEATMAP_VALUES), key=K_VALUES, horizontal=True)
    remember(K_VALUES)
    attr, bar = HEATMAP_VALUES[what]
    st.plotly_chart(class_channel_heatmap(getattr(stats, attr), stats.classes, colorbar=bar,
                                          title=f"{what} of bond {bond}, class x channel",
                                          highlight=stats.top_channels(1)), width="stretch", key="bonds.heatmap")
    top = stats.top_channels(2)
    st.caption("Most selective channels (circled: the first): " +
               " · ".join(f"{c}: {', '.join(f'c{j}' for j in js)}" for c, js in top.items()))

from tnviz.model.demos import digits_split  # noqa: E402  (light once the model is loaded)

images = digits_split().x_test.reshape(-1, 8, 8).numpy()
s1, s2 = st.columns(2)
s1.plotly_chart(spectrum_chart(stats.spectrum), width="stretch", key="bonds.spectrum")
s2.plotly_chart(top_digits(base, images), width="stretch", key="bonds.top")
if cut.size > MAX_CHANNEL_ROWS:
    s2.caption(f"first {MAX_CHANNEL_ROWS} of {cut.size} channels")

if layer is None:
    st.subheader("Decoded channels")
    model, report = autoencoder(latent)
    restore(K_RELATIVE, False)
    relative = st.toggle("Subtract decode(0)", key=K_RELATIVE,
                         help="show each channel's own effect: decode(e_k) − decode(0) (red adds ink, blue removes it)")
    remember(K_RELATIVE)
    pictures = model.channel_images(relative=relative).cpu().numpy()
    cols = 8
    rows = -(-len(pictures) // cols)
    grid = np.full((rows * cols, 8, 8), np.nan)
    grid[: len(pictures)] = pictures
    what_decoded = "decode(e_k) − decode(0)" if relative else "decode(one-hot code e_k)"
    st.plotly_chart(image_mosaic(grid.reshape(rows, cols, 8, 8), colorscale="RdBu_r" if relative else "Greys", symmetric=relative,
                                 col_labels=[str(c) for c in range(cols)], row_labels=[f"z{r * cols}.." for r in range(rows)],
                                 title=f"{what_decoded} for each channel k of bond z"),
                    width="stretch", key="bonds.decoded")
    st.caption(f"Trained in {report.seconds:.1f} s for {report.epochs} epochs (seeded) on the training split.")

if layer is not None:
    st.subheader("Before and after healing")
    restore(K_COMPARE_HEAL, False)
    compare = st.toggle("Compare this bond in the raw and the healed model", key=K_COMPARE_HEAL,
                        help="the same bond after TT-SVD alone and after one epoch of end-to-end healing "
                             "(tnviz.model.heal), on the same held-out digits")
    remember(K_COMPARE_HEAL)
    if compare:
        with st.spinner("Healing the tensorized MLP for one epoch (once) and capturing the bond..."):
            raw = inspect(model_name, max_rank, 0, latent, bond, reduce, NO_GAUGE, 0, at)
            healed = inspect(model_name, max_rank, 1, latent, bond, reduce, NO_GAUGE, 0, at)
        st.dataframe(heal_rows(raw.stats, healed.stats, mlp_accuracy(layer, max_rank, 0),
                               mlp_accuracy(layer, max_rank, 1)), hide_index=True, key="bonds.heal_table")
        h1, h2 = st.columns(2)
        h1.plotly_chart(spectrum_chart(raw.stats.spectrum, after=healed.stats.spectrum, after_name="healed",
                                       title=f"bond {bond} spectrum: raw (bars) vs healed (x)"),
                        width="stretch", key="bonds.heal_spectrum")
        h2.plotly_chart(class_channel_heatmap(healed.stats.centred_means - raw.stats.centred_means, raw.stats.classes,
                                              colorbar="healed − raw",
                                              title=f"change of the centred class means on bond {bond}"),
                        width="stretch", key="bonds.heal_heatmap")
        st.caption("Healing changes the tensors on both sides of the bond, so the channels themselves can move; "
                   "the gauge-invariant rows (spectrum shape, probe accuracy) say whether the latent space "
                   "itself got more useful.")

st.subheader("Gauge move on this bond")
if not gauge_allowed:
    st.info("Bond z of the autoencoder has a tanh between encoder and decoder: tanh(hX⁻¹) ≠ tanh(h)X⁻¹, so "
            "a gauge move there changes the model. Pick bond b1 to see the gauge freedom.", icon=":material/info:")
    st.stop()
g1, g2, g3 = st.columns([2, 1, 1])
gauge = g1.radio("Insert X X⁻¹ on the bond", gauge_options, key=K_GAUGE, horizontal=True,
                 format_func=lambda k: "none" if k == NO_GAUGE else GAUGE_KINDS[k])
seed = int(g2.number_input("Seed of X", min_value=0, max_value=2**31 - 1, step=1, key=K_SEED))
g3.button("New random X", icon=":material/casino:", on_click=_next_seed, disabled=gauge in (NO_GAUGE, "principal"))
remember(K_GAUGE, K_SEED)
if gauge == NO_GAUGE:
    st.caption("a -> aX⁻¹, b -> Xb changes the two tensors on the bond but not the layer; the bond channels "
               "are mixed by X. Choose a kind of X to see which statistics survive.")
    st.stop()

moved = inspect(model_name, max_rank, heal_epochs, latent, bond, reduce, gauge, seed, at)
ok = moved.output_change <= 1e-9 * max(1.0, moved.output_scale)
(st.success if ok else st.error)(
    f"Model outputs after the move differ by at most {moved.output_change:.1e} (largest output "
    f"{moved.output_scale:.3g}): the same model. cond(X) = {np.linalg.cond(moved.X):.2f}.",
    icon=":material/check_circle:" if ok else ":material/error:")
if reduce == "norm":
    st.warning("'norm' is not linear in the bond channels, so even the invariant quantities may change; "
               "use 'sum' or 'index' to see the exact behaviour.", icon=":material/warning:")
st.dataframe(
    [{"quantity": r["quantity"], "theory: unchanged": r["invariant"], "measured relative change": r["relative change"],
      "measured: unchanged": r["unchanged"], "agrees": r["agrees"], "why": r["why"]} for r in moved.gauge_rows],
    hide_index=True, key="bonds.gauge_table",
)
a1, a2 = st.columns(2)
a1.plotly_chart(class_channel_heatmap(getattr(moved.stats_after, attr), stats.classes, colorbar=bar,
                                      title=f"{what} after the gauge move", highlight=moved.stats_after.top_channels(1)),
                width="stretch", key="bonds.heatmap_after")
a2.plotly_chart(spectrum_chart(stats.spectrum, after=moved.stats_after.spectrum), width="stretch",
                key="bonds.spectrum_after")

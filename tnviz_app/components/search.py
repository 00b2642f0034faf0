"""The Tensorize page's view of a ``method="auto"`` run (every candidate per layer, the Pareto
front, the winner) and of the metrics beside the headline one (the top-5 neighbour overlap)."""
from __future__ import annotations

from typing import Any

import streamlit as st

from tnviz.model.auto import describe_choice
from tnviz.render.charts import search_chart
from tnviz_app.components.formatting import md_escape


def other_metrics(result: Any, metric: str | None) -> None:
    """One caption with the result's other metrics now and in the original (e.g. ``top-5
    neighbours 0.84 (original 1.00)``): the tiles show the headline metric only."""
    now, original = result.current, result.metrics.get("original", {})
    parts = [f"{k} {v:.4f} (original {original[k]:.4f})" for k, v in now.items()
             if k != metric and k in original and isinstance(v, (int, float))]
    if parts:
        st.caption("Also measured on the held-out inputs: " + "; ".join(parts))


def search_section(result: Any, key: str) -> None:
    """For a run where some rule had ``method="auto"``: a layer picker and the chart of its search."""
    searched = [r for r in result.layers if r.search is not None]
    if not searched:
        return
    st.subheader("Search (method auto)")
    total = sum(r.search["seconds"] for r in searched)
    st.caption(f"Per layer, every network tried at the layer's parameter budget (method x legs x leg placement x "
               f"neuron order); {len(searched)} layer{'s' * (len(searched) != 1)} searched in {total:.1f} s. "
               f"svd and MPOs with every input leg on the last core are scored exactly from singular values, "
               f"the others decomposed; the winner is then decomposed with its method's own refit. In a "
               f"feed-forward pair the candidates are also scored in a searched order of the hidden neurons "
               f"(open markers), adopted for both weights of the pair where it lowers their summed error.")
    names = [r.name for r in searched]
    pick = st.selectbox("Layer", names, key=key + "search_layer")
    layer = searched[names.index(pick) if pick in names else 0]
    chosen, runner = describe_choice(layer.search)
    st.plotly_chart(search_chart(layer.search, title=f"{layer.name}: candidates at its budget"),
                    key=key + "search_chart", width="stretch")
    st.markdown(f"**Chosen:** {md_escape(chosen)}  \n**Runner-up (best of another method):** {md_escape(runner)}"
                f"  \n**Neuron order:** {layer.search.get('order', 'stored')}")

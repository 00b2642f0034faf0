"""Page-wide layout rules every page shares (injected once per run by the router).

* Metric tiles never elide: labels and values wrap instead of ending in "…", and the value's
  font shrinks with the viewport (pages also format values to fit, see :mod:`.formatting`).
* Buttons wrap their label instead of cutting it ("Dow…").
* The main column uses the width it is given: 3 rem of padding instead of Streamlit's 6 rem on
  top and 5 rem at the sides, 1.25 rem at the sides below 1100 px.
* On a viewport narrower than :data:`NARROW_PX` the sidebar starts collapsed (once per browser
  tab: a user who opens it again keeps it open); Streamlit's own "auto" only collapses below 768 px.
"""
from __future__ import annotations

import streamlit as st

#: Below this viewport width the sidebar starts collapsed.
NARROW_PX = 1000
#: The sidebar's width when open (Streamlit's default is 300 px).
SIDEBAR_PX = 240

CSS = """
<style>
[data-testid="stMainBlockContainer"] { padding-top: 3rem; padding-left: 3rem; padding-right: 3rem; }
@media (max-width: 1100px) {
  [data-testid="stMainBlockContainer"] { padding-left: 1.25rem; padding-right: 1.25rem; }
}
[data-testid="stMetricLabel"], [data-testid="stMetricLabel"] * {
  white-space: normal !important; overflow: visible !important; text-overflow: clip !important;
}
[data-testid="stMetricLabel"] * { word-break: normal !important; overflow-wrap: normal !important; }
[data-testid="stMetricLabel"] { height: auto !important; min-height: 1.5rem; flex-wrap: wrap; }
[data-testid="stMetricValue"], [data-testid="stMetricValue"] * {
  white-space: normal !important; overflow: visible !important; text-overflow: clip !important;
  overflow-wrap: anywhere;
}
[data-testid="stMetricValue"] { font-size: clamp(1.35rem, 2.1vw, 2.25rem) !important; line-height: 1.2; }
.stButton button p, .stDownloadButton button p, .stFormSubmitButton button p,
[data-testid="stCheckbox"] label p, [data-testid="stWidgetLabel"] p {
  white-space: normal !important; overflow: visible !important; text-overflow: clip !important;
}
</style>
"""

COLLAPSE_JS = f"""
<script>
(() => {{
  const flag = "tnviz.sidebar.narrowCollapsed";
  if (window.innerWidth >= {NARROW_PX} || window.sessionStorage.getItem(flag)) return;
  let tries = 0;
  const timer = setInterval(() => {{
    const sidebar = document.querySelector('[data-testid="stSidebar"]');
    const button = document.querySelector('[data-testid="stSidebarCollapseButton"] button');
    if (sidebar && sidebar.getAttribute("data-collapsed") === "true") {{
      window.sessionStorage.setItem(flag, "1"); clearInterval(timer); return;
    }}
    if (button) {{ button.click(); window.sessionStorage.setItem(flag, "1"); clearInterval(timer); return; }}
    if (++tries > 50) clearInterval(timer);
  }}, 100);
}})();
</script>
"""


def apply_page_style() -> None:
    """Inject the shared CSS and the narrow-viewport sidebar rule (call once per run)."""
    st.html(CSS)
    st.sidebar.html(COLLAPSE_JS, unsafe_allow_javascript=True)

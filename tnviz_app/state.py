"""State shared by every page: the current network and the compute device.

Pages read the network with :func:`get_network` and replace it with :func:`set_network`; the
first visit loads a bundled example from ``tnviz_app/examples/`` (no download).  A failed edit or
upload never calls ``set_network``, so the previous network stays.

The Designer's canvas sends its edits as component state, which is there before the run starts:
:func:`get_network` takes a new valid edit first, so everything drawn in a run (the sidebar runs
before the page) shows the same, latest network.

>>> from tnviz_app.state import load_example, DEFAULT_EXAMPLE
>>> load_example(DEFAULT_EXAMPLE).name
'MPO 4096x4096'
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from tnviz_app.components.formatting import md_escape, times

import tnviz
from tnviz import TensorNetwork

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
DEFAULT_EXAMPLE = "mpo_4096x4096.json"

NETWORK_KEY = "tnviz.network"
SOURCE_KEY = "tnviz.network_source"
#: The name the user gave the current network (kept through canvas edits), if any.
USER_NAME_KEY = "tnviz.user_name"
#: The widget key of the Designer's canvas.
CANVAS_KEY = "designer.canvas"
#: Appended to a template's or example's name once its drawing is edited.
EDITED = " (edited)"

#: Largest network JSON accepted from an upload (a network spec is a few kB).
MAX_NETWORK_UPLOAD_BYTES = 1 << 20


def list_examples() -> dict[str, str]:
    """Bundled example networks: display name -> file name, sorted by file name."""
    out: dict[str, str] = {}
    for path in sorted(EXAMPLES_DIR.glob("*.json")):
        try:
            name = json.loads(path.read_text()).get("name") or path.stem
        except (OSError, ValueError, AttributeError):
            continue  # a broken example is reported by load_example when picked, not here
        out[name] = path.name
    return out


@st.cache_data(show_spinner=False)
def _example_text(filename: str) -> str:
    return (EXAMPLES_DIR / filename).read_text()


def load_example(filename: str) -> TensorNetwork:
    """A bundled example by file name (``tnviz.InvalidNetworkError`` if it is not one)."""
    if Path(filename).name != filename or not (EXAMPLES_DIR / filename).is_file():
        raise tnviz.InvalidNetworkError(
            f"examples are the files in {EXAMPLES_DIR.name}/; {filename!r} is not one of {sorted(list_examples().values())}"
        )
    return tnviz.load_network(_example_text(filename))


def get_network() -> TensorNetwork:
    """The current network of this session (the default example on first use), with the
    canvas's latest valid edit taken."""
    if NETWORK_KEY not in st.session_state:
        set_network(load_example(DEFAULT_EXAMPLE), f"example {DEFAULT_EXAMPLE}")
    _take_canvas_edit()
    return st.session_state[NETWORK_KEY]


def set_network(net: TensorNetwork, source: str = "", *, user_named: bool = False) -> None:
    """Make ``net`` the current network of this session; ``source`` says where it came from.
    ``user_named`` when the user gave it its name (kept through later canvas edits)."""
    if not isinstance(net, TensorNetwork):
        raise TypeError(f"set_network takes a TensorNetwork; got {type(net).__name__}")
    st.session_state[NETWORK_KEY] = net
    st.session_state[SOURCE_KEY] = source
    if user_named:
        st.session_state[USER_NAME_KEY] = net.name
    elif st.session_state.get(USER_NAME_KEY) != net.name:
        st.session_state.pop(USER_NAME_KEY, None)


def drawn_name(previous: TensorNetwork, drawn: TensorNetwork, user_name: str | None = None) -> str:
    """The name of a network edited on the canvas: the previous name while only positions
    change, or when the user gave it (``user_name``), or when it is already marked as edited;
    else the previous name marked as edited: a drawing is no longer the template it started from.

    >>> import tnviz
    >>> a = tnviz.mpo([4, 4], [4, 4], ranks=2, name="MPO 16x16")
    >>> drawn_name(a, a.with_sizes(b1=3)), drawn_name(a, a.with_layout({"A": (0, 0)}))
    ('MPO 16x16 (edited)', 'MPO 16x16')
    """
    if drawn.with_layout(None).with_name("") == previous.with_layout(None).with_name(""):
        return previous.name
    if previous.name and (previous.name == user_name or previous.name.endswith(EDITED)):
        return previous.name
    return f"{previous.name}{EDITED}" if previous.name else "drawn network"


def _take_canvas_edit() -> None:
    from tnviz_app.components.canvas import take_canvas_edit

    edited = take_canvas_edit(CANVAS_KEY)
    if edited is None:
        return
    previous = st.session_state[NETWORK_KEY]
    user_name = st.session_state.get(USER_NAME_KEY)
    name = drawn_name(previous, edited, user_name)
    set_network(edited.with_name(name), "canvas", user_named=name == user_name)


def network_source() -> str:
    """Where the current network came from (``'template MPO / tensor train'``, ``'upload x.json'``...)."""
    get_network()
    return st.session_state.get(SOURCE_KEY, "")


@dataclass(frozen=True)
class DeviceInfo:
    """The compute device pages should use: ``type`` is a torch device string."""

    type: str  # "cuda" or "cpu"
    name: str
    torch_version: str

    @property
    def label(self) -> str:
        return f"CUDA · {self.name}" if self.type == "cuda" else f"CPU · {self.name}"


#: Import torch with :func:`tnviz._runtime.import_torch` (collector paused, then the heap frozen)
#: when this process finds the device.  The app's server (:mod:`tnviz_app.serve`) turns it on:
#: Streamlit runs a full garbage collection after every script run, and torch's objects made each
#: one 0.12-0.18 s longer on the 2-core CPU.  Off elsewhere (tests, a plain ``streamlit run``), so a
#: caller's objects are not frozen behind its back.
FREEZE_TORCH_IMPORT = False


def _find_device() -> DeviceInfo:
    import platform

    try:
        if FREEZE_TORCH_IMPORT:
            import gc

            from tnviz._runtime import import_torch

            if not import_torch():  # a page's module imported torch first (Bond features' models do)
                gc.freeze()  # with whatever a concurrent script run holds: once per server
        import torch
    except ImportError:
        return DeviceInfo("cpu", platform.processor() or platform.machine(), "torch not installed")
    if torch.cuda.is_available():
        return DeviceInfo("cuda", torch.cuda.get_device_name(0), torch.__version__)
    import os

    return DeviceInfo("cpu", f"{platform.machine()}, {os.cpu_count()} cores", torch.__version__)


_DEVICE: list[DeviceInfo] = []  # found once per server process
_DEVICE_LOCK = threading.Lock()


def device_info() -> DeviceInfo:
    """CUDA (with its name) when torch sees a GPU, else the CPU.  Found once per server (importing
    torch: 1.5 s on a 2-core CPU); a caller while :func:`warm_device`'s thread imports waits for it."""
    if not _DEVICE:
        with _DEVICE_LOCK:
            if not _DEVICE:
                _DEVICE.append(_find_device())
    return _DEVICE[0]


def known_device() -> DeviceInfo | None:
    """The device if already found, without waiting (None while torch is still loading)."""
    return _DEVICE[0] if _DEVICE else None


#: Seconds between the end of the first page's run and the background import of torch: started at
#: once, it took the CPU the browser needed to draw that page (on 2 cores the canvas came 1-3 s later).
WARM_DELAY_S = 4.0
#: Seconds before the lighter :data:`WARM_MODULES`.
WARM_MODULES_DELAY_S = 1.0


def warm_device(delay: float = WARM_DELAY_S) -> None:
    """Find the device in a background thread (once per server) ``delay`` seconds from now, so
    that torch is loaded by the time a page needs it without holding up the page the user opened
    first (a page that needs it sooner imports it itself, see :func:`device_info`); the same
    thread imports :data:`WARM_MODULES` first, :data:`WARM_MODULES_DELAY_S` from now."""
    global _WARMING
    with _WARM_LOCK:
        if _WARMING or _DEVICE:
            return
        _WARMING = True
    timer = threading.Timer(min(delay, WARM_MODULES_DELAY_S), _warm, args=(max(0.0, delay - WARM_MODULES_DELAY_S),))
    timer.name, timer.daemon = "tnviz-device", True
    timer.start()


#: Modules that later pages import on their first visit and the first page does not, loaded by
#: :func:`warm_device`'s thread before torch: scipy.sparse (Stack view's layers, 0.2-0.4 s on the
#: 2-core machine), so that a first visit finds it loaded.  Not pandas (nor pyarrow): plotly looks
#: pandas up in ``sys.modules`` without importing it, and a script run that drew a chart while
#: this thread was importing pandas found it half initialised ("partially initialized module
#: 'pandas' has no attribute 'Series'", a CI failure of the Bond features page); a page that
#: needs pandas imports it on its own thread.
WARM_MODULES = ("scipy.sparse",)


def _warm(torch_after: float = 0.0) -> None:
    """Import :data:`WARM_MODULES`, then find the device (torch) ``torch_after`` seconds from the start."""
    import importlib
    import time

    start = time.monotonic()
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # optional for tnviz: the page that needs it says so itself
            pass
    time.sleep(max(0.0, torch_after - (time.monotonic() - start)))
    device_info()


_WARMING = False
_WARM_LOCK = threading.Lock()


def render_sidebar(slot=None) -> None:
    """The sidebar shown on every page: the current network and the device found.

    ``slot`` is a sidebar container made before the page ran: the router fills it after the page.
    On a fresh server the device is not known yet: finding it imports torch (1.5 s on a 2-core
    CPU, 3 s under load), which held the first page's run, canvas included, that long.  It is
    found in a background thread started here instead; the sidebar says so until the next run."""
    net = get_network()
    with slot if slot is not None else st.sidebar:
        st.markdown(f"**Network:** {md_escape(net.name or '(unnamed)')}")
        st.caption(
            f"{len(net.tensors)} tensors · {net.in_features:,} → {net.out_features:,} · "
            f"{net.params:,} params ({times(net.compression)} smaller than dense)"
        )
        dev = known_device()
        if dev is None:
            warm_device()
            st.markdown("**Device:** detecting…")
            st.caption("torch is loading in the background; the device shows on your next action")
            return
        st.markdown(f"**Device:** {md_escape(dev.label)}")
        st.caption(f"torch {dev.torch_version}")

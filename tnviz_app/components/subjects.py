"""What the Compress pages work on: the bundled demos and uploaded models, opened once per server
(``st.cache_resource``: a subject holds its model, its calibration statistics and its metric's
reference, which every page and rerun reuse), and uploads received so that a bad file says why
and keeps what was loaded.

A *source* is a small dict kept in a page's session state: ``{"kind": "demo" | "hf" | "file",
"ref": demo name or saved path, "name": what the user sees}``.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import streamlit as st

from tnviz.errors import TnvizError
from tnviz.model.io import MAX_UPLOAD_BYTES  # noqa: F401  (``tnviz app`` sets Streamlit's cap to the same)
#: Where uploads are kept while the server runs (one folder per upload).
UPLOAD_DIR = Path(tempfile.gettempdir()) / "tnviz-uploads"


def demo_label(name: str) -> str:
    from tnviz.model.demos import DEMOS

    return DEMOS[name].label or name


def demo_source(name: str) -> dict[str, str]:
    return {"kind": "demo", "ref": name, "name": demo_label(name)}


@st.cache_resource(show_spinner="Loading the model…", max_entries=8)
def subject(kind: str, ref: str, device: str):
    """The subject of a source, opened once per server and device (a demo is trained on first use)."""
    from tnviz.model.subject import demo_subject, file_subject, hf_subject

    if kind == "demo":
        return demo_subject(ref, device)
    if kind == "hf":
        return hf_subject(ref, device, max_bytes=MAX_UPLOAD_BYTES)
    return file_subject(ref, max_bytes=MAX_UPLOAD_BYTES)


def subject_of(source: dict[str, str], device: str):
    return subject(source["kind"], source["ref"], device if source["kind"] != "file" else "cpu")


def save_upload(upload: Any) -> Path:
    """The uploaded file saved in a folder of its own under :data:`UPLOAD_DIR` (size-checked first)."""
    if upload.size > MAX_UPLOAD_BYTES:
        raise TnvizError(f"an upload may be at most {MAX_UPLOAD_BYTES:,} bytes; {upload.name!r} has {upload.size:,}")
    UPLOAD_DIR.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=UPLOAD_DIR))
    path = folder / Path(upload.name).name
    path.write_bytes(upload.getvalue())
    return path


def receive_model_upload(upload: Any, device: str) -> dict[str, str]:
    """Save and open an uploaded model (weights file or Hugging Face zip) as a source; a bad one
    raises ``TnvizError`` with the reason and leaves nothing behind."""
    from tnviz.model.io import HFFolderWeights, open_weights

    path = save_upload(upload)
    try:
        with open_weights(path, max_bytes=MAX_UPLOAD_BYTES) as weights:
            kind = "hf" if isinstance(weights, HFFolderWeights) else "file"
        source = {"kind": kind, "ref": str(path), "name": upload.name}
        subject_of(source, device)  # built now: a config that cannot be built is refused here, not later
    except BaseException:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise
    return source

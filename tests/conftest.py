"""Suite-wide setup: the repository root on sys.path, so tests can import ``app.*`` (the Streamlit
pages' helpers) and ``tests.app.conftest`` helpers however pytest is started."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

"""What each page's first run imports, counted in a fresh process (issue 17: the page's own speed).

Timing-free guards: the Designer's first load imports none of the heavy modules (torch took
1.5-3 s, pandas 0.4-1 s of it on the 2-core machine), the Lesson does not import scikit-learn,
and the background warm-up loads what the later pages need."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.app.conftest import APP, ROOT

HEAVY = ("torch", "sklearn", "scipy", "pandas", "pyarrow", "transformers", "triton")


def _imported_after(code: str) -> list[str]:
    """The HEAVY modules in ``sys.modules`` after ``code`` runs in a fresh interpreter."""
    script = (f"import json, sys\nsys.path.insert(0, {str(ROOT)!r})\n{code}\n"
              f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _app_run(*pages: str) -> str:
    lines = ["from streamlit.testing.v1 import AppTest",
             f"at = AppTest.from_file({str(APP)!r}, default_timeout=240)", "at.run()"]
    lines += [f"at.switch_page({p!r}).run()" for p in pages]
    lines.append("assert not at.exception, [e.value for e in at.exception]")
    return "\n".join(lines)


def test_first_load_imports_no_heavy_module():
    assert _imported_after(_app_run()) == []


def test_gallery_and_stack_view_need_no_torch():
    assert "torch" not in _imported_after(_app_run("views/gallery.py", "views/stack_view.py"))


def test_lesson_does_not_import_sklearn():
    imported = _imported_after(_app_run("views/lesson.py"))
    assert "torch" in imported and "sklearn" not in imported


def test_the_warm_up_loads_what_later_pages_import():
    from tnviz_app.state import WARM_MODULES

    imported = _imported_after("from tnviz_app import state\nstate._warm()\nassert state.known_device() is not None")
    assert "torch" in imported
    assert {m.split(".")[0] for m in WARM_MODULES} <= set(imported)


def test_the_warm_up_never_imports_what_plotly_looks_up_without_importing():
    """plotly finds pandas through ``sys.modules`` (``get_module(..., should_load=False)``): imported
    by the warm-up thread while a page drew a chart, it was found half initialised (a CI failure of
    the Bond features page).  The warm-up leaves such modules to the pages' own thread."""
    from _plotly_utils.optional_imports import get_module

    from tnviz_app.state import WARM_MODULES

    assert get_module.__doc__ is None or "should_load" in (get_module.__code__.co_varnames)
    assert not {"pandas", "pyarrow", "numpy"} & set(WARM_MODULES), WARM_MODULES

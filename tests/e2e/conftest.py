"""Real-browser fixtures: a Streamlit server for the whole session and a headless Chromium page.

Reuse them in any ``tests/e2e/test_*.py`` (every test here is marked ``browser``)::

    def test_my_page(page, app_url, wait_idle, screenshot):
        page.goto(app_url + "/my_page")
        wait_idle(page)
        screenshot(page, "my_page")                 # artifacts/screenshots/my_page.png
        screenshot(page, "my_page", readme=True)    # ... and assets/screenshots/ when
                                                    # TNVIZ_UPDATE_SCREENSHOTS=1

``TNVIZ_CHROMIUM`` overrides the browser path (default ``/usr/bin/chromium``).  Without a browser
the tests skip, except with ``TNVIZ_REQUIRE_BROWSER=1`` (CI), where they fail.
"""
from __future__ import annotations

import os
import signal
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "tnviz_app" / "streamlit_app.py"
ARTIFACTS = ROOT / "artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
README_SCREENSHOTS = ROOT / "assets" / "screenshots"
UPDATE_ENV = "TNVIZ_UPDATE_SCREENSHOTS"
CHROMIUM = os.environ.get("TNVIZ_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]
SERVER_START_TIMEOUT_S = 90


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_REPORT_KEY] = report


_REPORT_KEY = pytest.StashKey()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as resp:
            return resp.status == 200 and resp.read().strip() == b"ok"
    except OSError:
        return False


def _tnviz() -> list[str]:
    """``tnviz`` (what the README starts) on this interpreter: the same ``tnviz app`` code path,
    bound to the tnviz under test rather than whichever ``tnviz`` is first on PATH."""
    return [sys.executable, "-m", "tnviz.cli"]


@pytest.fixture(scope="session")
def app_url() -> Iterator[str]:
    """Start the app as a user does, ``tnviz app --headless`` on a free port; yield its URL."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = ARTIFACTS / f"e2e-streamlit-{port}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [*_tnviz(), "app", "--headless", "--port", str(port), "--host", "127.0.0.1"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none"},
        start_new_session=True,  # its own group: ending it ends `tnviz app`'s streamlit child too
    )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}; log:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer within {SERVER_START_TIMEOUT_S}s; log:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        # terminating `tnviz app` alone left its `streamlit run` child serving after the session
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
        log.close()


@pytest.fixture(scope="session")
def browser():
    """A headless Debian Chromium driven by Playwright (skips when either is missing)."""
    required = os.environ.get("TNVIZ_REQUIRE_BROWSER") == "1"
    missing = None if Path(CHROMIUM).exists() else f"no Chromium at {CHROMIUM} (set TNVIZ_CHROMIUM)"
    try:
        from playwright import sync_api
    except ImportError:
        missing = missing or "the playwright package is not installed"
    if missing:
        (pytest.fail if required else pytest.skip)(missing)
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def expect(browser):
    """Playwright's auto-retrying assertions (``expect(locator).to_have_count(n)``): for what the
    frontend draws after a script run ends (plotly traces, data grids, typeset formulas)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


@pytest.fixture
def page(browser, request):
    """A fresh browser context and page (1400x1000); a failing test leaves a screenshot."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    report = request.node.stash.get(_REPORT_KEY, None)
    if report is not None and report.failed:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        try:
            pg.screenshot(path=str(SCREENSHOTS / f"FAILED-{request.node.name}.png"))
        except Exception:  # the page may be gone; the test failure is what matters
            pass
    context.close()


@pytest.fixture
def wait_idle() -> Callable:
    """``wait_idle(page)``: wait until the app is drawn and no script run is in progress."""

    def _wait(pg, settle_ms: int = 400, timeout_ms: int = 30_000) -> None:
        # Streamlit marks the app with data-test-script-state; a rerun may start a moment after a
        # click, so the app must stay 'notRunning' (and show no running indicator) for settle_ms
        # of consecutive polls, not just once.
        pg.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
        pg.wait_for_selector('[data-testid="stMainBlockContainer"]', timeout=timeout_ms)
        # the count of calm polls starts again at every call: one left by the previous wait would
        # let this one return on its first poll, before the rerun a click starts has begun
        pg.evaluate("() => { window.__tnvizCalm = 0; }")
        pg.wait_for_function(
            """needed => {
                const app = document.querySelector('[data-testid="stApp"]');
                const calm = app && app.getAttribute('data-test-script-state') === 'notRunning'
                    && !document.querySelector('[data-testid="stStatusWidget"]');
                window.__tnvizCalm = calm ? (window.__tnvizCalm || 0) + 1 : 0;
                return window.__tnvizCalm >= needed;
            }""",
            arg=max(2, settle_ms // 100), polling=100, timeout=timeout_ms,
        )

    return _wait


def update_readme_screenshots() -> bool:
    """Whether browser runs refresh the README's screenshots (``TNVIZ_UPDATE_SCREENSHOTS=1``)."""
    return os.environ.get(UPDATE_ENV) == "1"


def save_screenshot(pg, name: str, *, readme: bool = False, **kwargs) -> Path:
    """Save ``artifacts/screenshots/name.png`` (``kwargs`` go to ``page.screenshot``); with
    ``readme`` and ``TNVIZ_UPDATE_SCREENSHOTS=1``, also copy it to ``assets/screenshots/`` (the
    README's images), so an ordinary test run never changes tracked files."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    pg.screenshot(path=str(path), **kwargs)
    if readme and update_readme_screenshots():
        README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, README_SCREENSHOTS / f"{name}.png")
    return path


@pytest.fixture
def screenshot() -> Callable[..., Path]:
    """``screenshot(page, "name", readme=False, **kwargs)``: see :func:`save_screenshot`;
    returns the path under ``artifacts/screenshots/``."""
    return save_screenshot

"""The interactive workflow of issue 16, timed step by step as a user meets it, on the bundled models.

Each step is timed end to end in this process (a fresh subject where the page would open one on a
fresh server), the two CLI commands as whole subprocesses.  Steps that are page interactions time
the same library calls the page makes (tnviz_app/views/tensorize.py, spectra.py).  Every number is
the median of ``--repeats`` runs (default 3): the machine is shared with other jobs, so single
runs are noise.  Quality numbers (held-out cosine, digits accuracy) are printed beside the times.

    python benchmarks/bench_workflow.py [--repeats 3] [--out benchmarks/results/workflow-cpu.md]

The cost over model size (issue 16 item 5: MiniLM and tiny/small/medium random LLaMA shapes, time
per weight and calibration cost against tokens) is ``bench_model_size.py``.  ``--device cuda`` runs
these steps on the GPU (``gpu_check.py`` does, for issue 16 item 6).

Where the time went (profiled with cProfile on the 2-core development CPU, 2026-12-03, before the
changes of this benchmark's commit series):

* **Torch's OpenMP threads on a shared machine.**  With two intra-op threads, one MiniLM forward of
  the 236 calibration sentences took 7-9 s while another job held a core, against 0.75 s with one
  thread: libgomp's threads spin at every op's barrier and wait for the descheduled one.  The
  calibration pass (12.9 s of a 26.9 s data-aware compression), the metric (6.9 s) and healing
  were all dominated by it.  ``OMP_WAIT_POLICY=PASSIVE`` (set by ``import tnviz`` unless the user
  set it, before torch is loaded: :mod:`tnviz._runtime`) gives 0.77 s with two threads under the
  same load; on an idle machine it costs nothing measurable at these op sizes.
* **Calibration**: one forward pass (0.5-0.8 s) plus the float64 accumulation of ``X^T X`` for
  every chosen layer (1.2 s for the 12 FFN weights: six 1536x1536 second moments over 3,000 rows).
  It is collected once per subject (``Subject.input_stats``) and reused by every method, the
  preview, sensitivity and Spectra's data-aware toggle, which used to collect all 36 Linears.
* **Decompositions**: 0.23 s (384-input) and 0.62 s (1536-input) per weight on one thread, of which
  0.4 s was the covariance's Cholesky factor and triangular inverse, computed four times per weight
  (the bond split twice, the decomposition, its refit check); now once per covariance.
* **The metric**: the original model's held-out embeddings were computed twice (as the reference
  and again to "compare" the original with itself).
* **Healing** (layer-wise, 50 steps x 12 layers, 30.5 s wall / 26.7 s CPU under load): 8.6 s in the
  13 capture passes (one of the original, one of the compressed model per layer), 8.3 s in the TN
  layers' forward and 8.9 s in their backward over 600 Adam steps, 2 s importing torch.optim once.
  Profiled again 2026-12-03 (cProfile of one heal, 19.5 s wall / 27.9 s CPU under load): the
  teacher's outputs were already captured once per heal (one pass), not per layer or step; each
  layer's compressed inputs cost a forward from the model's start up to its layer (12 passes
  averaging half the model, 4.6 s); the first ``torch.optim.Adam`` imported ``torch._dynamo``
  (3.1 s).  Now each layer's capture replays the previous block's recorded output and runs its
  own block (tnviz/model/replay.py; the same numbers bit for bit), and Adam runs on
  ``torch._foreach`` ops (torch's update bit for bit, no torch.optim).  What remains is the
  arithmetic of 600 steps of 512 rows (forward, backward, update: 18 s CPU of 20 s under load).
  Fewer steps or rows cost quality (held-out cosine, 0.8812 at 50 steps, lr 1e-3, 512 rows):
  30 steps 0.8800, 100 steps 0.8823, 256 rows 0.8789, 128 rows 0.8759, lr 3e-3 for 20 steps
  0.8675, lr 3e-3 for 50 steps 0.8769 (a lower layer loss, 0.385 against 0.393, and a worse
  cosine), the teacher's own inputs for 50 steps no gain (0.8715, undone); a 10 % held-out split
  with early stopping (100 steps, patience 2) stopped 7 of 12 layers at step 20 and gave 0.8754.
* **Spectra's trade-off**: the weight is read as float64 (exact numbers for the page); the sweep
  already reuses one SVD / HOSVD / TT-SVD per method.  Profiled 2026-12-03: CP's ALS spent 0.7 of
  its 0.94 s in opt_einsum's path search (a three-operand ``torch.einsum`` per factor update, now
  one two-operand contraction); and with two intra-op threads the small LAPACK calls of the
  TT-rounding took 0.63 s CPU against 0.05 s on one thread.  The points now run as independent
  tasks (one per tr/cp point, one per other method) on single-threaded workers.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

FFN = r"layer\.[0-9]+\.(intermediate|output)\.dense"
SPECTRA_LAYER = "encoder.layer.0.attention.output.dense.weight"  # the page's default: the first Linear of the file
TRADEOFF_METHODS = ("mpo", "tr", "tucker", "cp", "svd")

#: step -> (the issue's measurement on its quiet 2-core CPU, the target), in seconds.
TARGETS: dict[str, tuple[str, float | None]] = {
    "Tensorize: MiniLM Run compression (data-aware, FFN at 2x)": ("12.1", 3.0),
    "Tensorize: MiniLM Download click (the zip, written when clicked)": ("-", None),
    "CLI: tnviz compress minilm --method mpo --ratio 2 --layers FFN (whole process)": ("10.3", 4.0),
    "CLI: the same with --no-data-aware (whole process)": ("4.4", 2.5),
    "Tensorize: Measure sensitivity (12 layers)": ("4.2", 1.5),
    "Tensorize: Heal, layer-wise default": ("28.4", 10.0),
    "Spectra: data-aware toggle (fresh server)": ("4.0", 1.0),
    "Spectra: Compute the trade-off (5 methods)": ("4.5", 1.5),
    "Tensorize: digits-mlp Run compression (defaults)": ("-", None),
    "Tensorize: digits-cnn Run compression (defaults)": ("-", None),
    "Tensorize: digits-mlp Heal, end-to-end default": ("-", None),
}


def machine() -> str:
    """The CPU model, its cores, torch and the load when the run started."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{model}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}, load average {load:.2f} at start, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")


#: CPU seconds (this process, all threads) of each timed run, beside its wall time: on a shared
#: machine the wall time includes waiting for a core, the CPU time is closer to the arithmetic.
CPU: list[float] = []


def timed(fn: Callable[[], Any], repeats: int, setup: Callable[[], Any] | None = None) -> tuple[float, list[float], Any]:
    """Median seconds of ``fn(setup())`` over ``repeats`` runs (setup untimed), all times, the last value."""
    times, value = [], None
    CPU.clear()
    for _ in range(repeats):
        arg = setup() if setup else None
        start, cpu = time.perf_counter(), time.process_time()
        value = fn(arg) if setup else fn()
        times.append(time.perf_counter() - start)
        CPU.append(time.process_time() - cpu)
    return statistics.median(times), times, value


def cli(args: list[str]) -> float:
    import resource

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tnviz.cli", *args], check=True, env=env, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return time.perf_counter() - start


# ---------------------------------------------------------------------- steps
#: Where the steps run (``--device``): the CPU for the table in benchmarks/README.md, ``cuda`` in
#: benchmarks/gpu_check.sh (issue 16 item 6: the same workflow on the GPU).
DEVICE = "cpu"


def fresh_subject(name: str):
    from tnviz.model.subject import demo_subject

    return demo_subject(name, DEVICE)


def page_compress(subject, layers: str | None = None, ratio: float | None = None):
    """What the Tensorize page's Run compression does: its plan's rules and compress (the zip is
    written when the download is clicked: the row after it)."""
    from tnviz.model.compress import compress, rules_from
    from tnviz.model.demos import DEMOS

    demo = DEMOS[subject.name]
    rules = rules_from(layers=layers or demo.layers, method="mpo", truncation={"ratio": ratio or demo.ratio})
    return compress(subject, rules=rules, data_aware=True, device=DEVICE, progress=lambda *a: None)


def steps(repeats: int) -> list[dict[str, Any]]:
    import torch

    rows = []

    def add(step: str, med: float, times: list[float], quality: str = "") -> None:
        measured, target = TARGETS.get(step, ("-", None))
        cpu = statistics.median(CPU) if CPU else float("nan")
        rows.append({"step": step, "seconds": med, "times": times, "issue": measured, "target": target,
                     "quality": quality, "cpu": cpu, "load": os.getloadavg()[0]})
        print(f"{step}: {med:.2f} s (runs {', '.join(f'{t:.2f}' for t in times)}; CPU {cpu:.2f} s; "
              f"load {rows[-1]['load']:.1f}) {quality}", flush=True)

    # Tensorize: MiniLM run on a subject opened as the page does on its first visit (not timed)
    med, times, result = timed(lambda s: page_compress(s), repeats, lambda: fresh_subject("minilm"))
    add("Tensorize: MiniLM Run compression (data-aware, FFN at 2x)", med, times,
        f"cosine {result.metrics['compressed']['cosine']:.4f}")
    med, times, data = timed(result.zip, repeats)
    add("Tensorize: MiniLM Download click (the zip, written when clicked)", med, times, f"{len(data) / 2**20:.0f} MiB")

    with tempfile.TemporaryDirectory(prefix="bench-workflow-") as tmp:
        base = ["compress", "minilm", "-o", str(Path(tmp) / "out"), "--method", "mpo", "--ratio", "2",
                "--layers", FFN, "--overwrite", "--device", DEVICE]
        CPU.clear()
        t = [cli(base) for _ in range(repeats)]
        add("CLI: tnviz compress minilm --method mpo --ratio 2 --layers FFN (whole process)", statistics.median(t), t)
        CPU.clear()
        t = [cli(base + ["--no-data-aware"]) for _ in range(repeats)]
        add("CLI: the same with --no-data-aware (whole process)", statistics.median(t), t)

    from tnviz.model.analysis import sensitivity

    med, times, rows_ = timed(lambda: sensitivity(result, progress=lambda *a: None), repeats)
    add("Tensorize: Measure sensitivity (12 layers)", med, times,
        f"cosine alone {min(r['cosine'] for r in rows_):.4f}..{max(r['cosine'] for r in rows_):.4f}")

    subject = result.subject
    med, times, outcome = timed(lambda r: r.heal("layer-wise", progress=lambda *a: None), repeats,
                                lambda: page_compress(subject))
    add("Tensorize: Heal, layer-wise default", med, times, outcome.report_line("cosine"))

    # Spectra, fresh server: the subject, its calibration statistics, the data-aware spectra of the default layer
    from tnviz.decompose import spectra as sp
    from tnviz.model.demos import minilm_dir
    from tnviz.model.io import open_weights
    from tnviz.model.spectra import input_covariances

    weights = open_weights(minilm_dir() / "model.safetensors")
    weight = weights.get(SPECTRA_LAYER, device=DEVICE, dtype=torch.float64)  # the page reads weights as float64

    def toggle():
        covs = input_covariances(fresh_subject("minilm"), DEVICE, layers=[SPECTRA_LAYER])
        return sp.layer_spectra(weight, "mpo", setting="rank", value=8, name=SPECTRA_LAYER,
                                input_cov=covs[SPECTRA_LAYER])

    med, times, res = timed(toggle, repeats)
    add("Spectra: data-aware toggle (fresh server)", med, times, f"data error {res.data_error:.4f} at rank 8")

    med, times, (points, front) = timed(lambda: sp.layer_tradeoff(weight, methods=TRADEOFF_METHODS), repeats)
    add("Spectra: Compute the trade-off (5 methods)", med, times, f"{len(points)} points, front of {len(front)}")
    weights.close()

    for name in ("digits-mlp", "digits-cnn"):
        med, times, r = timed(lambda s: page_compress(s), repeats, lambda name=name: fresh_subject(name))
        add(f"Tensorize: {name} Run compression (defaults)", med, times,
            f"accuracy {r.metrics['original']['accuracy']:.4f} -> {r.metrics['compressed']['accuracy']:.4f}")
    subject = fresh_subject("digits-mlp")
    med, times, outcome = timed(lambda r: r.heal("end-to-end", progress=lambda *a: None), repeats,
                                lambda: page_compress(subject))
    add("Tensorize: digits-mlp Heal, end-to-end default", med, times, outcome.report_line("accuracy"))
    return rows


# ---------------------------------------------------------------------- the app itself in a browser
CHROMIUM = os.environ.get("TNVIZ_CHROMIUM", "/usr/bin/chromium")
CANVAS_NODE = "[data-testid=tn-canvas] .react-flow__node"
#: The canvas's first tensor laid out and visible, checked on every animation frame: Playwright's
#: ``wait_for_selector`` polls with a back-off of up to 500 ms between checks, which rounded the first
#: load up (1.97 s by it against 1.63 s on every frame, the same build and machine).
_CANVAS_DRAWN = """(sel) => {
    const node = document.querySelector(sel);
    return !!node && node.getBoundingClientRect().width > 0
        && node.checkVisibility({visibilityProperty: true, opacityProperty: true});
}"""
#: The pages visited after the first load, in order, by their navigation link (the title each shows).
NAVIGATION = (("Costs", "Costs"), ("Gallery", "Gallery"), ("Teach", "Teach"), ("Stack view", "Stack view"),
              ("Designer", "Designer"), ("Costs", "Costs"), ("Lesson", "Lesson: compress a layer"),
              ("Tensorize", "Tensorize a model"), ("Spectra", "Spectra"), ("Bond features", "Bond features"),
              ("Designer", "Designer"))
ORDINALS = {1: "first", 2: "second", 3: "third"}
APP_TARGETS = {"server ready": None, "first load: canvas drawn": 1.5, "first load: script idle": None}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve() -> tuple[subprocess.Popen, str, float]:
    """A fresh ``tnviz app --headless`` (what a user starts), once it answers its health check; with
    the seconds from the command to that answer (what ``tnviz app`` waits before it opens a browser)."""
    import urllib.request

    port = _free_port()
    began = time.perf_counter()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "tnviz.cli", "app", "--headless", "--port", str(port),
                             "--host", "127.0.0.1"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True,  # its own group: stop() ends the streamlit child too
                            env={**os.environ, "PYTHONPATH": str(ROOT), "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none"})
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as resp:
                if resp.read().strip() == b"ok":
                    return proc, url, time.perf_counter() - began
        except OSError:
            time.sleep(0.2)
    stop(proc)
    raise RuntimeError("the app did not answer within 90 s")


def stop(proc: subprocess.Popen) -> None:
    """End a server of :func:`_serve` and its ``streamlit run`` child (``tnviz app`` waits on it:
    terminating the parent alone left the server running, its CPU taken from the next runs)."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


_SHOWN = """([title]) => {
    const app = document.querySelector('[data-testid="stApp"]');
    const h1 = document.querySelector('[data-testid="stMainBlockContainer"] h1');
    return app && app.getAttribute('data-test-script-state') === 'notRunning'
        && !document.querySelector('[data-testid="stStatusWidget"]') && h1 && h1.textContent.trim() === title;
}"""


_IDLE = "() => new Promise(done => requestIdleCallback(() => done(true), {timeout: 3000}))"


def settle(page) -> None:
    """Wait until the browser has drawn what the page sent: no request in flight and the main
    thread idle (a page's Plotly charts are drawn after its script finished; the next click
    timed that drawing as its own before)."""
    page.wait_for_timeout(300)
    page.wait_for_load_state("networkidle")
    for _ in range(3):
        page.evaluate(_IDLE)
        page.wait_for_timeout(100)


def app_load_once(browser) -> dict[str, float]:
    """One fresh server: seconds from ``tnviz app`` to the server answering, from the first request
    to the Designer's canvas drawn (checked every frame) and to the script idle, then each navigation of :data:`NAVIGATION` (click to the page's title shown with
    its script idle)."""
    proc, url, ready = _serve()
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        out: dict[str, float] = {"server ready": ready}
        start = time.perf_counter()
        page.goto(url, wait_until="commit")
        page.wait_for_function(_CANVAS_DRAWN, arg=CANVAS_NODE, polling="raf", timeout=90_000)
        out["first load: canvas drawn"] = time.perf_counter() - start
        page.wait_for_function(_SHOWN, arg=["Designer"], polling="raf", timeout=90_000)
        out["first load: script idle"] = time.perf_counter() - start
        # torch is imported in the background WARM_DELAY_S after the first page (1.2-1.5 s of CPU on
        # 2 cores, holding the GIL in its imports): wait it out, so each navigation times its page; one
        # made during that import took up to 1.35 s (Gallery, 0.52 s after it; README, Speed)
        from tnviz_app.state import WARM_DELAY_S

        page.wait_for_timeout(int((WARM_DELAY_S + 3.0) * 1000))
        seen: dict[str, int] = {"Designer": 1}  # the first load was its first visit
        for link, title in NAVIGATION:
            seen[link] = seen.get(link, 0) + 1
            start = time.perf_counter()
            page.get_by_role("link", name=link, exact=True).click()
            page.wait_for_function(_SHOWN, arg=[title], polling="raf", timeout=120_000)
            visit = ORDINALS.get(seen[link], f"{seen[link]}th")
            out[f"navigate: {link} ({visit} visit)"] = time.perf_counter() - start
            settle(page)  # the page's charts are drawn before the next click, not charged to it
        return out
    finally:
        context.close()
        stop(proc)


def app_steps(repeats: int) -> list[dict[str, Any]]:
    """Medians over ``repeats`` fresh servers of :func:`app_load_once`."""
    from playwright.sync_api import sync_playwright

    runs = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            for k in range(repeats):
                runs.append(app_load_once(browser))
                print(f"app run {k + 1}: " + ", ".join(f"{name} {t:.2f} s" for name, t in runs[-1].items()), flush=True)
        finally:
            browser.close()
    rows = []
    for name in runs[0]:
        times = [r[name] for r in runs]
        target = APP_TARGETS.get(name, 0.5 if name.startswith("navigate") else None)
        rows.append({"step": name, "seconds": statistics.median(times), "times": times, "target": target,
                     "load": os.getloadavg()[0]})
    return rows


def app_markdown(rows: list[dict[str, Any]], header: str, repeats: int) -> str:
    lines = [f"Machine: {header}. Median of {repeats} fresh servers (`tnviz app --headless`), headless Chromium "
             "1400x1000; the server from `tnviz app` to its health check answering, a first load from the request "
             "to the canvas's first tensor drawn (checked every animation frame), a navigation from the click to "
             "the new page's title shown with its script finished.", "",
             "| step | measured | runs | target | met |", "|---|---:|---|---:|:-:|"]
    for r in rows:
        target = f"< {r['target']:g} s" if r["target"] is not None else "-"
        met = "-" if r["target"] is None else ("yes" if r["seconds"] < r["target"] else "no")
        lines.append(f"| {r['step']} | {r['seconds']:.2f} s | {', '.join(f'{t:.2f}' for t in r['times'])} | {target} "
                     f"| {met} |")
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict[str, Any]], header: str, repeats: int) -> str:
    lines = [f"Machine: {header}. Median of {repeats} runs each (the machine is shared with other jobs).", "",
             "CPU: the median CPU seconds of the same runs (all threads; for the CLI, the child process). "
             "load: the 1-minute load average after the step (2 cores: above 2, other jobs were waiting too).", "",
             "| step | issue (quiet) | measured | CPU | load | target | met | quality |",
             "|---|---:|---:|---:|---:|---:|:-:|---|"]
    for r in rows:
        target = f"< {r['target']:g} s" if r["target"] is not None else "-"
        met = "-" if r["target"] is None else ("yes" if r["seconds"] < r["target"] else "no")
        issue = f"{r['issue']} s" if r["issue"] != "-" else "-"
        lines.append(f"| {r['step']} | {issue} | {r['seconds']:.2f} s | {r['cpu']:.2f} s | {r['load']:.1f} | {target} "
                     f"| {met} | {r['quality']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    parser.add_argument("--device", default="cpu", help="where the workflow steps run (cpu, cuda); the app's "
                        "rows run on whatever the server finds")
    parser.add_argument("--only", choices=("all", "workflow", "app"), default="all",
                        help="app: only the page loads in a browser (fresh servers); workflow: only the library steps")
    args = parser.parse_args(argv)
    import tnviz  # noqa: F401  (sets the OpenMP wait policy before torch loads)
    from tnviz.model.device import resolve_device

    global DEVICE
    DEVICE = str(resolve_device(args.device))
    header = machine()
    print(header, flush=True)
    text = ""
    if args.only in ("all", "workflow"):
        text += "## Workflow steps\n\n" + markdown(steps(args.repeats), header, args.repeats)
    if args.only in ("all", "app"):
        text += ("\n" if text else "") + "## The app in a browser\n\n" + app_markdown(app_steps(args.repeats), header,
                                                                                      args.repeats)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"# Workflow benchmark (benchmarks/bench_workflow.py)\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

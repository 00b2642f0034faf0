"""AppTest of the Tensorize page: demo run with results and download, refused uploads keep the
loaded model, a good .safetensors upload compresses weights-only, bad settings say why."""
from __future__ import annotations

import io
import json
import os
import re
import zipfile

import pytest
import torch

PAGE = "views/tensorize.py"


pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


def _table(at, column):
    """The first dataframe on the page with ``column`` (the settings editor is one too)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _button(at, key):
    return next(b for b in at.button if b.key == key)


def test_demo_run_shows_results_and_heals(open_page):
    at = open_page(PAGE)
    assert at.session_state["tensorize.loaded"]["ref"] == "digits-mlp"
    table = _table(at, "params")
    assert list(table["layer"]) == ["fc1", "fc2", "fc3"]
    assert [s != "dense" for s in table["setting"]] == [True, True, False]  # plain text, not inert checkboxes
    assert table["params after (preview)"][0] < table["params"][0]
    _button(at, "tensorize.run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    result = at.session_state["tensorize.result"]
    assert [r.name for r in result.layers] == ["fc1", "fc2"]
    assert result.totals["params_after"] < result.totals["params_before"]
    labels = [m.label for m in at.metric]
    assert "Accuracy" in labels and "Ratio (compressed layers)" in labels
    _button(at, "tensorize.sens").click().run()
    assert not at.exception, [e.value for e in at.exception]
    sens = at.session_state["tensorize.sens_df"]
    assert list(sens["layer"]) == ["fc1", "fc2"] and sens["accuracy"].between(0, 1).all()
    before = result.current["accuracy"]
    at.radio(key="tensorize.heal_mode").set_value("end-to-end").run()
    assert at.number_input(key="tensorize.heal_steps.end-to-end").value == 2  # epochs, not the 50 steps per layer
    at.number_input(key="tensorize.heal_steps.end-to-end").set_value(1).run()
    _button(at, "tensorize.heal").click().run()
    assert not at.exception, [e.value for e in at.exception]
    outcome = at.session_state["tensorize.healed"]
    assert outcome.before["accuracy"] == before and outcome.after["accuracy"] > before and outcome.improved
    # (issue 13 item 6) the tile shows the healed model right away, and the message is a success
    tile = next(m for m in at.metric if m.label == "Accuracy")
    assert tile.value == f"{outcome.after['accuracy']:.4f}"
    assert any("end-to-end healing" in s.value for s in at.success)
    # the healing's loss curve is drawn from its report: one point per epoch
    (curve,) = [c for c in at.get("plotly_chart") if "Healing loss" in c.proto.spec]
    import json as _json
    spec = _json.loads(curve.proto.spec)
    assert [t["y"] for t in spec["data"]] == [outcome.report.curve["model"]] and len(outcome.report.curve["model"]) == 1
    # joint distillation to the original's outputs: its own step count, the result recorded
    at.radio(key="tensorize.heal_mode").set_value("distill").run()
    assert at.number_input(key="tensorize.heal_steps.distill").value == 60
    at.number_input(key="tensorize.heal_steps.distill").set_value(5).run()
    _button(at, "tensorize.heal").click().run()
    assert not at.exception, [e.value for e in at.exception]
    again = at.session_state["tensorize.healed"]
    assert again.mode == "distill" and again.before == outcome.after and 0 <= again.after["accuracy"] <= 1
    if not again.improved:  # a healing that did not help says so and keeps the better model
        assert any("did not help" in w.value for w in at.warning)
        assert next(m for m in at.metric if m.label == "Accuracy").value == f"{outcome.after['accuracy']:.4f}"
    data = at.session_state["tensorize.zip"]()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert sorted(names) == ["model.safetensors", "tnviz.json"]


def test_global_target_shows_allocation(open_page):
    at = open_page(PAGE)
    at.radio(key="tensorize.mode").set_value("one global target").run()
    assert not at.exception, [e.value for e in at.exception]
    alloc = _table(at, "kept fraction")
    assert set(alloc.columns) >= {"layer", "kept fraction", "params", "predicted error"}
    assert alloc["params"].sum() <= _table(at, "params").loc[lambda d: d["layer"].isin(alloc["layer"]), "params"].sum() / 2 + 1


REFUSED = {
    "model.pt2": (b"PK\x03\x04" + b"\0" * 40, "pt2"),
    "empty.safetensors": (b"", "must not be empty"),
    "junk.safetensors": (b"this is not a weights file at all", "none of these"),
    "model.onnx": (b"\x08\x01", "must end in one of"),
}


def _pickled_module() -> bytes:
    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(4, 4), buffer)
    return buffer.getvalue()


def _torchscript() -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 4)), buffer)
    return buffer.getvalue()


def test_refused_uploads_keep_the_loaded_model(open_page):
    at = open_page(PAGE)
    cases = dict(REFUSED)
    cases["module.pt"] = (_pickled_module(), "must hold only tensors")
    cases["script.pt"] = (_torchscript(), "TorchScript")
    notes = io.BytesIO()
    with zipfile.ZipFile(notes, "w") as archive:
        archive.writestr("notes.txt", "hello")
    cases["notes.zip"] = (notes.getvalue(), "Hugging Face")
    for name, (content, message) in cases.items():
        at.file_uploader(key="tensorize.upload").set_value((name, content, "application/octet-stream")).run()
        assert not at.exception, (name, [e.value for e in at.exception])
        errors = [e.value for e in at.error]
        assert errors and message.lower() in errors[0].lower() and "loaded model is kept" in errors[0], (name, errors)
        # one plain line of our own words: no terminal escapes, no torch advice to unpickle anyway
        assert "\x1b" not in errors[0] and "\n" not in errors[0] and "two options" not in errors[0], (name, errors)
        assert at.session_state["tensorize.loaded"]["ref"] == "digits-mlp", name


def test_safetensors_upload_compresses_weights_only(open_page, tmp_path):
    from tnviz.model.io import save_safetensors

    path = save_safetensors({"enc.weight": torch.randn(64, 48), "enc.bias": torch.zeros(64),
                             "head.weight": torch.randn(10, 64)}, tmp_path / "w.safetensors")
    at = open_page(PAGE)
    at.file_uploader(key="tensorize.upload").set_value(("w.safetensors", path.read_bytes(), "application/octet-stream")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["tensorize.loaded"]["kind"] == "file"
    assert list(_table(at, "params")["layer"]) == ["enc.weight", "head.weight"]
    # (issue 17) the source radio says an upload is loaded, not a demo
    assert at.radio(key="tensorize.source").value == "upload"
    _button(at, "tensorize.run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    report = at.session_state["tensorize.result"].report()
    assert "enc.weight" in [layer["name"] for layer in report["layers"]]
    names = zipfile.ZipFile(io.BytesIO(at.session_state["tensorize.zip"]())).namelist()
    assert sorted(names) == ["model.safetensors", "tnviz.json"]
    # back to a demo and to the upload again, by the radio
    at.radio(key="tensorize.source").set_value("digits-cnn").run()
    assert at.session_state["tensorize.loaded"]["ref"] == "digits-cnn" and "tensorize.result" not in at.session_state
    at.radio(key="tensorize.source").set_value("upload").run()
    assert at.session_state["tensorize.loaded"]["kind"] == "file"


def _bert_zip(tmp_path) -> bytes:
    import json

    from tnviz.model.bert import Bert
    from tnviz.model.io import save_safetensors

    config = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 64, "vocab_size": 100, "max_position_embeddings": 32, "type_vocab_size": 2,
              "hidden_act": "gelu", "layer_norm_eps": 1e-12, "pad_token_id": 0}
    torch.manual_seed(0)
    save_safetensors(Bert(config).state_dict(), tmp_path / "model.safetensors")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tiny-bert/config.json", json.dumps(config))
        archive.write(tmp_path / "model.safetensors", "tiny-bert/model.safetensors")
    return buffer.getvalue()


def test_hf_zip_upload_is_built_compressed_and_measured(open_page, tmp_path):
    at = open_page(PAGE)
    at.file_uploader(key="tensorize.upload").set_value(("tiny-bert.zip", _bert_zip(tmp_path), "application/zip")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["tensorize.loaded"]["kind"] == "hf"
    layers = list(_table(at, "params")["layer"])
    assert "encoder.layer.0.intermediate.dense" in layers
    _button(at, "tensorize.run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    after = at.session_state["tensorize.result"].current
    assert 0 < after["output cosine"] < 1
    assert "Output cosine" in [m.label for m in at.metric]


def test_a_fresh_server_downloads_the_compressed_demo(open_page, tmp_path, monkeypatch):
    """(issue 13 item 5) the download works before any upload ever created the upload folder."""
    import tnviz_app.components.subjects as subjects

    monkeypatch.setattr(subjects, "UPLOAD_DIR", tmp_path / "never-created")
    at = open_page(PAGE)
    _button(at, "tensorize.run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    data = at.session_state["tensorize.zip"]()
    assert sorted(zipfile.ZipFile(io.BytesIO(data)).namelist()) == ["model.safetensors", "tnviz.json"]
    assert not (tmp_path / "never-created").exists()


@pytest.mark.parametrize("method, order_search", [("mpo", False), ("mpo", True), ("auto", False)])
def test_the_page_writes_the_bytes_the_cli_and_the_library_write(open_page, tmp_path, method, order_search):
    """(issue 14) one pipeline: the Tensorize page's download, ``tnviz compress`` and ``tnviz.compress``
    give byte-identical folders for the same input and settings (this module runs on one thread);
    (issue 19) also with the neuron-order search (the page's checkbox, ``--order-search``) and with
    ``method="auto"``, whose search decides the neuron order per feed-forward pair."""
    import subprocess
    import sys

    import tnviz

    at = open_page(PAGE)
    if method == "auto":
        import pandas as pd

        at.session_state["tensorize.rules"] = pd.DataFrame([{
            "pattern": r"fc[12]$", "method": "auto", "truncation": "ratio", "value": 8.0, "in_dims": "auto",
            "out_dims": "auto"}])
        at.run()
    if order_search:
        at.checkbox(key="tensorize.order_search").check().run()
    _button(at, "tensorize.run").click().run()  # the demo's defaults: fc[12]$, mpo, ratio 8, data-aware
    assert not at.exception, [e.value for e in at.exception]
    page = zipfile.ZipFile(io.BytesIO(at.session_state["tensorize.zip"]()))
    tnviz.compress("digits-mlp", tmp_path / "lib", layers="fc[12]$", method=method, ratio=8, device="cpu",
                   order_search=order_search)
    cli = subprocess.run([sys.executable, "-m", "tnviz.cli", "compress", "digits-mlp", "--layers", "fc[12]$",
                          "--method", method, "--ratio", "8", "--device", "cpu", "-o", str(tmp_path / "cli")]
                         + (["--order-search"] if order_search else []),
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert cli.returncode == 0, cli.stderr
    for name in ("model.safetensors", "tnviz.json"):
        lib = (tmp_path / "lib" / name).read_bytes()
        assert page.read(name) == lib == (tmp_path / "cli" / name).read_bytes(), name
    assert ("order_search" in json.loads(page.read("tnviz.json"))["settings"]) == order_search


class Net(torch.nn.Module):  # pickled as __main__.Net when this file runs as a script, else tests.app...
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)


def test_a_refusal_naming_a_class_renders_literally(open_page):
    """Issue 17: `__main__.Net` in a refusal rendered as bold "main"; every user-provided text goes
    through md_escape, so the markdown source carries no live underscore or asterisk."""
    Net.__module__ = "__main__"  # what a user's own script pickles
    buffer = io.BytesIO()
    try:
        import __main__
        __main__.Net = Net
        torch.save(Net(), buffer)
    finally:
        del __main__.Net
    at = open_page(PAGE)
    at.file_uploader(key="tensorize.upload").set_value(("__my_model__.pt", buffer.getvalue(), "application/octet-stream")).run()
    error = at.error[0].value
    assert "(\\_\\_main\\_\\_.Net)" in error, error
    assert "\\_\\_my\\_model\\_\\_.pt" in error  # the file name, escaped
    assert not re.search(r"(?<!\\)__", error), f"a live markdown underscore pair: {error}"


def test_md_escape_round_trips_through_markdown():
    """The escaped text renders back to the original under CommonMark (markdown-it, as Streamlit's
    renderer follows CommonMark): every character shown literally."""
    import html as _html

    from tnviz_app.components.formatting import md_escape

    markdown_it = pytest.importorskip("markdown_it")
    for text in ("__main__.Net refused: *not* [a](b) `x` #1 <b>y</b> 2_3 $a$ :smile: ~~s~~ a|b",
                 "1. not a list", "- nor this", "# nor a heading", "> nor a quote"):
        rendered = markdown_it.MarkdownIt().render(md_escape(text))
        assert _html.unescape(re.sub(r"</?p>\n?", "", rendered)) == text, (text, rendered)


def test_auto_run_shows_the_choice_and_the_search_chart(open_page):
    import json

    import pandas as pd

    at = open_page(PAGE)
    at.session_state["tensorize.rules"] = pd.DataFrame([{
        "pattern": r"fc[12]$", "method": "auto", "truncation": "ratio", "value": 4.0, "in_dims": "auto",
        "out_dims": "auto"}])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    table = _table(at, "setting")
    assert list(table["setting"][:2]) == ["auto (target_params=4096)", "auto (target_params=16384)"]
    _button(at, "tensorize.run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    result = at.session_state["tensorize.result"]
    assert all(r.search is not None and r.method == r.search["chosen"]["method"] for r in result.layers)
    rows = _table(at, "runner-up")
    assert list(rows["chosen"]) == [r.row()["chosen"] for r in result.layers]
    assert all(isinstance(v, str) and "error" in v for v in rows["runner-up"])

    def chart(name):
        (spec,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if "candidates at its budget" in c.proto.spec]
        assert spec["layout"]["title"]["text"].startswith(f"{name}: candidates")
        star = next(t for t in spec["data"] if t["name"].startswith("chosen"))
        layer = next(r for r in result.layers if r.name == name)
        assert (star["x"], star["y"]) == ([layer.search["chosen"]["params"]], [layer.search["chosen"]["error"]])
        assert any(t["name"] == "Pareto front" for t in spec["data"])
        assert "parameters" in spec["layout"]["xaxis"]["title"]["text"]
        assert "data error" in spec["layout"]["yaxis"]["title"]["text"]
        return spec

    chart("fc1")
    assert any("Chosen:" in m.value and "Runner-up" in m.value for m in at.markdown)
    at.selectbox(key="tensorize.search_layer").set_value("fc2").run()
    assert not at.exception, [e.value for e in at.exception]
    chart("fc2")
    # the other metrics of the subject beside the headline tile (digits: accuracy only, so none)
    assert not any("Also measured" in c.value for c in at.caption)

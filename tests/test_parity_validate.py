"""`edgefuse validate` end to end on the session's exported artifact and a deliberately damaged copy.

The damaged copy has noise added to its ONNX weight initializers (and its manifest re-hashed, like
a bad build would be): its gates must fail (exit 1) while the good artifact's pass (exit 0).
Every bad input is a typed error (exit 2) that says what was found instead.
"""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from edgefuse.artifacts import read_manifest, sha256_file, write_manifest
from edgefuse.errors import ValidationError

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
N = "6"  # museum test images: ~90 questions, 24 caption pairs, ~25 phrases: enough to separate good from damaged
FAST = ["--n", N, "--resamples", "200", "--threads", "1"]


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    from edgefuse.cli import main

    with pytest.raises(SystemExit) as ei:
        main(args)
    out = capsys.readouterr()
    return int(ei.value.code or 0), out.out + out.err


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def damaged_artifact(fp32_artifact: Path, tmp_path_factory) -> Path:
    """The FP32 artifact with noise (0.5 x each weight's std) on every weight matrix; manifest re-hashed."""
    import onnx
    from onnx import numpy_helper

    folder = _copy(fp32_artifact, tmp_path_factory.mktemp("damaged") / "museum-dual-damaged")
    model = onnx.load(str(folder / "model.onnx"))
    rng = np.random.default_rng(0)
    touched = 0
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.ndim >= 2 and w.size >= 64:
            noisy = (w + rng.normal(scale=0.5 * float(w.std()) + 1e-8, size=w.shape)).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
            touched += 1
    assert touched > 10
    onnx.save(model, str(folder / "model.onnx"))
    manifest = read_manifest(folder)
    manifest["files"]["model.onnx"] = sha256_file(folder / "model.onnx")
    write_manifest(folder, manifest)
    return folder


@pytest.fixture(scope="module")
def validated(fp32_artifact: Path, damaged_artifact: Path, tmp_path_factory):
    """One validate run over the good and the damaged artifact (CLI, default gates)."""
    from edgefuse.cli import main

    out = tmp_path_factory.mktemp("validate") / "report"
    with pytest.raises(SystemExit) as ei:
        main(["validate", str(fp32_artifact), str(damaged_artifact), "-o", str(out), *FAST])
    return int(ei.value.code or 0), out


def test_damaged_artifact_fails_gates_good_one_passes(validated):
    code, out = validated
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    assert report["exit_code"] == 1 and report["passed"] is False
    good, bad = report["artifacts"]
    assert good["status"] == "passed" and all(g["status"] == "passed" for g in good["gates"])
    assert bad["status"] == "failed"
    failed = {g["metric"] for g in bad["gates"] if g["status"] == "failed"}
    assert "vqa_agreement" in failed
    # measured, not asserted constants: the good export matches PyTorch closely, the damaged one does not
    assert good["metrics"]["tensor.vqa_logits.cosine"]["value"] > 0.9999
    assert bad["metrics"]["tensor.vqa_logits.cosine"]["value"] < good["metrics"]["tensor.vqa_logits.cosine"]["value"]
    assert bad["metrics"]["vqa_agreement"]["value"] < 0.95
    # where to look first: the questions the damaged artifact answers differently
    assert good["disagreements"] == [] and 0 < len(bad["disagreements"]) <= 10
    d = bad["disagreements"][0]
    assert set(d) == {"image_id", "question", "label", "reference", "artifact"} and d["reference"] != d["artifact"]
    m = good["metrics"]["vqa_accuracy"]
    assert m["drop_ci"][0] <= m["drop"] <= m["drop_ci"][1]
    assert report["eval_set"]["images"] == int(N) and report["eval_set"]["items"]["questions"] > 0


def test_all_four_reports_and_junit_cases(validated):
    _, out = validated
    assert sorted(p.name for p in out.iterdir()) == ["junit.xml", "report.html", "report.json", "report.md"]
    root = ET.parse(out / "junit.xml").getroot()
    suites = root.findall("testsuite")
    assert len(suites) == 2
    n_gates = len(json.loads((out / "report.json").read_text())["gates"])
    assert all(len(s.findall("testcase")) == n_gates for s in suites)
    assert int(root.get("failures")) >= 1 and suites[0].get("failures") == "0"
    md = (out / "report.md").read_text()
    assert "❌" in md and "museum-dual-damaged" in md


def test_good_artifact_alone_passes(fp32_artifact: Path, tmp_path, capsys):
    code, text = run_cli(["validate", str(fp32_artifact), "-o", str(tmp_path / "r"), *FAST], capsys)
    assert code == 0, text
    assert "gates passed" in text


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed at /usr/bin/chromium")
def test_real_report_renders_plots_in_chromium(validated):
    from playwright.sync_api import sync_playwright

    _, out = validated
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((out / "report.html").as_uri())
            for sel in ("#drop-plots svg", "#histograms svg", "#samples svg"):
                boxes = [e.bounding_box() for e in page.query_selector_all(sel)]
                assert boxes and all(b and b["width"] > 50 and b["height"] > 50 for b in boxes), sel
            assert page.locator("#gates td.failed").count() >= 1
            assert page.locator("#disagreements tr").count() >= 2
        finally:
            browser.close()
    assert errors == []


# ------------------------------------------------------------------------------- bad input


def test_unknown_gate_metric_is_an_error_before_running(fp32_artifact, tmp_path, capsys):
    cfg = tmp_path / "edge_config.yaml"
    cfg.write_text("gates:\n  - {metric: vqa_acc, max_drop: 1.0}\n")
    code, text = run_cli(["validate", str(fp32_artifact), "--config", str(cfg), *FAST], capsys)
    assert code == 2 and "EF902" in text and "vqa_accuracy" in text


def test_missing_artifact_lists_what_is_there(fp32_artifact, capsys):
    code, text = run_cli(["validate", str(fp32_artifact.parent / "museum-dual-int8"), *FAST], capsys)
    assert code == 2 and "EF908" in text and fp32_artifact.name in text


def test_folder_without_manifest_is_refused(tmp_path, capsys):
    (tmp_path / "model.onnx").write_bytes(b"not really")
    code, text = run_cli(["validate", str(tmp_path), "--model", "museum-dual", *FAST], capsys)
    assert code == 2 and "EF908" in text and "model.onnx" in text


def test_artifact_of_another_model_is_refused(fp32_artifact, capsys):
    code, text = run_cli(["validate", str(fp32_artifact), "--model", "museum-single", *FAST], capsys)
    assert code == 2 and "EF909" in text and "museum-dual" in text


def test_artifact_from_other_weights_is_refused(fp32_artifact, tmp_path, capsys):
    folder = _copy(fp32_artifact, tmp_path / "other-weights")
    manifest = read_manifest(folder)
    manifest["weights_sha256"] = "0" * 64
    write_manifest(folder, manifest)
    code, text = run_cli(["validate", str(folder), *FAST], capsys)
    assert code == 2 and "EF910" in text and "000000000000" in text


def test_modified_model_file_is_refused(fp32_artifact, tmp_path, capsys):
    folder = _copy(fp32_artifact, tmp_path / "tampered")
    with open(folder / "model.onnx", "ab") as f:
        f.write(b"\0")
    code, text = run_cli(["validate", str(folder), *FAST], capsys)
    assert code == 2 and "EF916" in text


def test_eval_set_without_usable_items(fp32_artifact, tmp_path, capsys):
    empty = tmp_path / "empty-set"
    (empty / "images").mkdir(parents=True)
    (empty / "annotations.jsonl").write_text("")
    code, text = run_cli(["validate", str(fp32_artifact), "--eval-set", str(empty), *FAST], capsys)
    assert code == 2 and "EF907" in text and "no items" in text
    code, text = run_cli(["validate", str(fp32_artifact), "--eval-set", str(tmp_path / "nope"), *FAST], capsys)
    assert code == 2 and "EF907" in text


def test_eval_set_with_nothing_for_the_tasks(tmp_path):
    """A captioning model on a set that has questions only: nothing to score."""
    from edgefuse.data.dataset import write_dataset
    from edgefuse.data.museum import QA, MuseumItem
    from edgefuse.parity.evalset import build_eval_set

    item = MuseumItem("x", np.zeros((8, 8, 3), np.uint8), questions=[QA("what colour is the vase?", "red", "colour")])
    write_dataset([item], tmp_path / "qa-only")
    with pytest.raises(ValidationError) as ei:
        build_eval_set(tmp_path / "qa-only", None, ["captioning"], [])
    assert ei.value.code == "EF907" and "1 questions" in ei.value.message and "0 captions" in ei.value.message


def test_captioning_artifact_is_validated_with_caption_metrics(caption_artifact, tmp_path, capsys):
    """Greedy captions from the ONNX encoder + KV-cache decoder against PyTorch's; VQA gates do not apply."""
    code, text = run_cli(["validate", str(caption_artifact), "-o", str(tmp_path / "r"), "--n", "3", "--resamples", "100"], capsys)
    assert code == 0, text
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    (art,) = report["artifacts"]
    assert {"caption_bleu4", "caption_exact_match", "caption_agreement", "tensor.image_tokens.cosine"} <= set(art["metrics"])
    assert art["metrics"]["caption_agreement"]["value"] == 1.0  # the FP32 export generates PyTorch's captions
    assert all(g["status"] == "skipped" for g in art["gates"]) and "no captioning" not in text
    assert "no gate applies" in text


def test_users_folder_eval_set_and_confidence_gate(fp32_artifact, tmp_path, capsys):
    """Images + annotations.jsonl (the format users bring), a gate judged on the 95 % bootstrap bound."""
    from edgefuse.data.dataset import write_dataset
    from edgefuse.data.museum import generate

    write_dataset(generate("val", n=3), tmp_path / "mine")
    cfg = tmp_path / "edge_config.yaml"
    cfg.write_text("gates:\n  - {metric: vqa_accuracy, max_drop: 0.5, confidence: 0.95}\n"
                   "  - {metric: tensor.box.sqnr_db, min_value: 40}\n")
    code, text = run_cli(["validate", str(fp32_artifact), "--eval-set", str(tmp_path / "mine"), "--config", str(cfg),
                          "-o", str(tmp_path / "r"), "--resamples", "200"], capsys)
    assert code == 0, text
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert str(tmp_path / "mine") in report["eval_set"]["source"] and report["eval_set"]["images"] == 3
    gates = report["artifacts"][0]["gates"]
    assert gates[0]["checks"][0]["basis"] == "upper 95% bound" and gates[0]["status"] == "passed"
    assert gates[1]["checks"][0]["observed"] > 40


def test_bad_options_are_errors(fp32_artifact, capsys):
    code, text = run_cli(["validate", str(fp32_artifact), "--qdq", "simulate", *FAST], capsys)
    assert code == 2 and "EF914" in text and "simulated" in text
    code, text = run_cli(["validate", str(fp32_artifact), "--model", "museum-duel", *FAST], capsys)
    assert code == 2 and "EF915" in text and "museum-dual" in text

"""Report writers on a synthetic validation result: JSON, Markdown, JUnit XML, HTML in Chromium."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from edgefuse.config import GateConfig
from edgefuse.parity.gates import check_gates, evaluate_gates
from edgefuse.parity.metrics import error_histogram
from edgefuse.parity.reports import REPORT_FILES, ArtifactReport, GroundingSample, ValidationReport, write_reports
from edgefuse.parity.scoring import EvalLabels, TaskOutputs, reference_scores, score

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _report() -> ValidationReport:
    rng = np.random.default_rng(0)
    n = 60
    ans = rng.integers(0, 4, n)
    ref_logits = rng.normal(size=(n, 4))
    ref_logits[np.arange(n), ans] += 3
    gt = rng.uniform(0.1, 0.4, (n, 4))
    att = rng.dirichlet(np.ones(16), n)
    labels = EvalLabels(vqa_answer=ans, boxes=gt)
    ref = TaskOutputs({"vqa_logits": ref_logits, "box": gt + 0.01, "grounding_attention": att})
    gates = [GateConfig("vqa_accuracy", max_drop=1.0), GateConfig("vqa_agreement", min_value=0.95),
             GateConfig("grounding_miou", max_drop=2.0, confidence=0.95), GateConfig("itm_accuracy", max_drop=1.0)]
    check_gates(gates)
    arts = []
    for name, noise in (("good<&>", 1e-4), ("damaged", 2.0)):
        art = TaskOutputs({k: v + rng.normal(scale=noise, size=v.shape) for k, v in ref.tensors.items()})
        res = score(labels, ref, art, resamples=200)
        arts.append(ArtifactReport(
            name=name, path=f"/tmp/{name}", precision="int8", provider="cpu", manifest={"precision": "int8"}, metrics=res,
            gates=evaluate_gates(gates, name, res, ["vqa", "grounding"], list(ref.tensors)),
            histograms={k: error_histogram(ref.tensors[k], art.tensors[k]) for k in ref.tensors},
            sample_boxes=[list(art.tensors["box"][0])], sample_attention=[art.tensors["grounding_attention"][0]],
            sensitivity=[("/fusion.0/cross/MatMul", 31.5), ("/head/Gemm", 44.0)], sensitivity_source="sensitivity.json",
            seconds=0.5))
    img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    return ValidationReport(
        model={"name": "museum-dual", "weights_sha256": "ab" * 32, "tasks": ["vqa", "grounding"]},
        eval_set={"source": "synthetic", "images": n, "items": {"questions": n, "phrases": n}},
        reference=reference_scores(labels, ref), artifacts=arts, gates=gates,
        bootstrap={"resamples": 200, "seed": 0, "confidence": 0.95},
        samples=[GroundingSample(img, "the <red> vase", list(gt[0]), list(ref.tensors["box"][0]), att[0])],
        created="2026-01-01T00:00:00Z", seconds=1.0, tool_versions={"edgefuse": "0.1.0"})


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[ValidationReport, Path]:
    rep = _report()
    folder = tmp_path_factory.mktemp("rep") / "report"
    write_reports(rep, folder)
    return rep, folder


def test_all_four_reports_written_and_verdict(written):
    rep, folder = written
    assert sorted(p.name for p in folder.iterdir()) == sorted(REPORT_FILES)
    assert rep.exit_code == 1  # the damaged artifact fails
    good, bad = rep.artifacts
    assert good.status == "passed" and bad.status == "failed"
    assert {g.metric: g.status for g in good.gates}["itm_accuracy"] == "skipped"
    data = json.loads((folder / "report.json").read_text())
    assert data["exit_code"] == 1 and data["passed"] is False
    assert data["gate_counts"] == {"passed": 3, "failed": 3, "skipped": 2}
    m = data["artifacts"][1]["metrics"]["vqa_accuracy"]
    assert m["drop"] == pytest.approx(m["reference"] - m["value"])
    assert m["drop_ci"][0] <= m["drop"] <= m["drop_ci"][1]
    md = (folder / "report.md").read_text()
    assert "❌ 3 of 6 gates failed, 2 skipped" in md and "| vqa_accuracy |" in md


def test_junit_parses_with_one_case_per_gate_per_artifact(written):
    rep, folder = written
    root = ET.parse(folder / "junit.xml").getroot()
    assert root.tag == "testsuites" and root.get("failures") == "3" and root.get("skipped") == "2"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["edgefuse.validate.good<&>", "edgefuse.validate.damaged"]
    for s in suites:
        assert len(s.findall("testcase")) == len(rep.gates)
    bad = suites[1]
    failures = [c for c in bad.findall("testcase") if c.find("failure") is not None]
    assert {c.get("name").split(" ")[0] for c in failures} == {"vqa_accuracy", "vqa_agreement", "grounding_miou"}


def test_rewriting_a_report_folder_replaces_it(written, tmp_path):
    rep, _ = written
    folder = tmp_path / "r"
    write_reports(rep, folder)
    write_reports(rep, folder)  # a folder holding only reports is swapped whole
    assert sorted(p.name for p in folder.iterdir()) == sorted(REPORT_FILES)
    (tmp_path / "keep.txt").write_text("user file")
    write_reports(rep, tmp_path)  # a folder with other files: reports written beside them
    assert (tmp_path / "keep.txt").read_text() == "user file" and (tmp_path / "report.html").exists()


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed at /usr/bin/chromium")
def test_html_opens_in_headless_chromium_without_errors(written):
    from playwright.sync_api import sync_playwright

    _, folder = written
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto((folder / "report.html").as_uri())
            page.wait_for_load_state("load")
            assert "gates failed" in page.inner_text("#verdict")
            # every plot is drawn with a real size
            for sel in ("#drop-plots svg", "#histograms svg", "#sensitivity svg", "#samples svg"):
                boxes = [e.bounding_box() for e in page.query_selector_all(sel)]
                assert boxes and all(b and b["width"] > 50 and b["height"] > 50 for b in boxes), sel
            assert page.locator("#drop-plots svg rect").count() >= 4
            # the embedded sample image decoded
            img_ok = page.evaluate("""() => Array.from(document.querySelectorAll('#samples svg image')).length""")
            assert img_ok >= 2
            assert page.locator("#gates td.failed").count() == 3
        finally:
            browser.close()
    assert errors == []

"""`edgefuse pipeline`: export -> quantize -> validate from one config, reports and exit code."""

from __future__ import annotations

import json
import pytest

REPORTS = ["junit.xml", "report.html", "report.json", "report.md"]


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    from edgefuse.cli import main

    with pytest.raises(SystemExit) as ei:
        main(args)
    out = capsys.readouterr()
    return int(ei.value.code or 0), out.out + out.err


def test_bad_gate_fails_before_any_export(tmp_path, capsys):
    cfg = tmp_path / "edge_config.yaml"
    cfg.write_text("gates:\n  - {metric: grounding_mio, max_drop: 2.0}\n")
    code, text = run_cli(["pipeline", "--config", str(cfg), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "EF902" in text and "grounding_miou" in text
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_pipeline_small_config_end_to_end(tmp_path, capsys):
    """The whole chain on a small config (16 calibration pairs, FP16 only, 4 validation images; the
    export's own verification is tested in test_export.py and skipped here to keep this short)."""
    cfg = tmp_path / "edge_config.yaml"
    cfg.write_text(
        "export: {verify: false}\n"
        "calibration: {num_samples: 16, cache_dir: " + json.dumps(str(tmp_path / "cache")) + "}\n"
        "quantize: {precisions: [fp16], budget_metric: null, budget_max_drop: null}\n"
        "gates:\n  - {metric: vqa_agreement, min_value: 0.9}\n  - {metric: tensor.vqa_logits.cosine, min_value: 0.999}\n")
    out = tmp_path / "out"
    code, text = run_cli(["pipeline", "--config", str(cfg), "--out", str(out), "--n", "4"], capsys)
    assert code == 0, text
    summary = json.loads((out / "pipeline.json").read_text())
    assert set(summary["artifacts"]) == {"fp32", "fp16"}
    assert summary["gate_counts"] == {"passed": 4, "failed": 0, "skipped": 0}
    assert all(summary["seconds"][k] > 0 for k in ("export", "quantize", "validate"))
    assert sorted(p.name for p in (out / "report").iterdir()) == REPORTS
    report = json.loads((out / "report" / "report.json").read_text())
    assert [a["precision"] for a in report["artifacts"]] == ["fp32", "fp16"]
    fp16 = report["artifacts"][1]
    assert fp16["metrics"]["tensor.vqa_logits.cosine"]["value"] > 0.999
    assert fp16["sensitivity_source"] == "sensitivity.json"  # the quantize stage's per-layer sensitivity is in the report
    flat = text.replace("\n", "")  # rich wraps long paths at the terminal width
    assert "pipeline stages" in flat and "report.html" in flat

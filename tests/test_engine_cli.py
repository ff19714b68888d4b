"""`edgefuse build` and `edgefuse doctor` through the CLI (real TensorRT-RTX builds, no GPU here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX not installed: pip install 'edgefuse[tensorrt-rtx]'")

from edgefuse.cli import app  # noqa: E402
from edgefuse.runtime.engines import cuda  # noqa: E402
from edgefuse.runtime.engines.probe import write_probe_artifact  # noqa: E402


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_probe_artifact(tmp_path_factory.mktemp("cli") / "probe-fp16", "fp16")


def test_build_command_writes_engine_and_manifest(artifact: Path, tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["build", str(artifact), "--target", "desktop-rtx", "--out", str(tmp_path / "e")])
    assert out.exit_code == 0, out.output
    m = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert m["kind"] == "engine" and (tmp_path / "e" / "model.engine").stat().st_size == m["engines"][0]["bytes"]
    assert "edgefuse doctor --target desktop-rtx" in out.output


def test_build_command_unknown_target_is_one_typed_line(artifact: Path) -> None:
    from edgefuse.errors import TargetError

    out = CliRunner().invoke(app, ["build", str(artifact), "--target", "desktop"])
    assert isinstance(out.exception, TargetError) and out.exception.code == "EF811"


@pytest.mark.skipif(cuda.device_count() > 0, reason="this machine has a GPU")
def test_doctor_without_gpu_builds_then_reports_why_it_cannot_run(artifact: Path, tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["doctor", "--target", "desktop-rtx", str(artifact), "--report-dir", str(tmp_path / "r")])
    assert out.exit_code == 1, out.output
    rep = json.loads((tmp_path / "r" / "doctor.json").read_text())
    status = {c["name"]: c["status"] for c in rep["checks"]}
    assert status == {"library": "pass", "gpu": "fail", "build": "pass", "activate": "fail", "parity": "skip"}
    assert rep["ok"] is False and "EF842" in next(c["detail"] for c in rep["checks"] if c["name"] == "activate")
    assert (tmp_path / "r" / "engine" / "model.engine").is_file()
    assert "| build | pass |" in (tmp_path / "r" / "doctor.md").read_text()

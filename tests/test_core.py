"""Errors, config schema, atomic artifacts, CLI error handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgefuse.artifacts import atomic_write_json, read_manifest, sha256_file, staged_dir, write_manifest
from edgefuse.config import load_config, parse_config
from edgefuse.errors import ArtifactError, ConfigError, EdgeFuseError

ROOT = Path(__file__).resolve().parents[1]


def test_error_line_has_code_message_hint():
    e = ConfigError("bad thing\nsecond line", "do this")
    assert e.line() == "error EF100: bad thing (hint: do this)"
    assert isinstance(e, EdgeFuseError)


def test_repo_config_parses_and_matches_defaults():
    cfg = load_config(ROOT / "edge_config.yaml")
    assert cfg.model.name == "museum-dual"
    assert cfg.targets["desktop-rtx"].profiles["batch"].max == 8
    assert cfg.to_dict() == parse_config({}).to_dict()


def test_unknown_key_suggests_near_miss():
    with pytest.raises(ConfigError) as ei:
        parse_config({"quantize": {"precision": ["int8"]}})
    assert ei.value.code == "EF101"
    assert "precisions" in ei.value.hint


def test_wrong_type_and_bad_profile_rejected():
    with pytest.raises(ConfigError, match="calibration.num_samples"):
        parse_config({"calibration": {"num_samples": "many"}})
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        parse_config({"targets": {"t": {"flavour": "tensorrt-rtx", "profiles": {"batch": {"min": 4, "opt": 2, "max": 8}}}}})


def test_atomic_json_and_manifest_roundtrip(tmp_path):
    p = atomic_write_json(tmp_path / "a" / "x.json", {"b": 1})
    assert json.loads(p.read_text()) == {"b": 1}
    assert len(sha256_file(p)) == 64
    write_manifest(tmp_path, {"kind": "test"})
    assert read_manifest(tmp_path) == {"kind": "test"}
    assert not [f for f in (tmp_path / "a").iterdir() if f.name.endswith(".tmp")]


def test_staged_dir_publishes_only_on_success(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_dir(out) as d:
            (d / "model.onnx").write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    with staged_dir(out) as d:
        (d / "model.onnx").write_bytes(b"whole")
    assert (out / "model.onnx").read_bytes() == b"whole"
    with pytest.raises(ArtifactError, match="already exists"):
        with staged_dir(out):
            pass
    with staged_dir(out, overwrite=True) as d:
        (d / "model.onnx").write_bytes(b"new")
    assert (out / "model.onnx").read_bytes() == b"new"


def test_cli_prints_one_line_for_typed_errors(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("version: 1\nmodle: {}\n")
    r = subprocess.run([sys.executable, "-c", "from edgefuse.config import load_config; from edgefuse.cli import main; "
                        "import sys; sys.argv=['edgefuse','version']; main()"], capture_output=True, text=True)
    assert r.returncode == 0 and "edgefuse" in r.stdout
    r = subprocess.run([sys.executable, "-m", "edgefuse", "no-such-verb"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr

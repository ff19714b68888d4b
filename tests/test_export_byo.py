"""Bring your own model: the worked example in examples/byo_model, and bad factories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgefuse.errors import ExportError
from edgefuse.export.byo import load_factory

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "examples.byo_model.model:build"


def not_a_tuple():
    return "model"


def wrong_model_type():
    from edgefuse.export.spec import TensorSpec, image_text_spec

    return object(), image_text_spec("x", 16, 10, 8, [TensorSpec("vqa_logits", "float32", ("batch", 2))])


def wrong_spec_type():
    from torch import nn

    return nn.Linear(2, 2), {"inputs": []}


def raises():
    raise RuntimeError("weights file missing")


@pytest.mark.parametrize("ref, code, words", [
    ("no_such_package.model:build", "EF431", "cannot import 'no_such_package.model'"),
    ("examples.byo_model.model:no_such_factory", "EF432", "has no attribute 'no_such_factory'"),
    ("not a factory", "EF430", "package.module:factory"),
    ("test_export_byo:not_a_tuple", "EF433", "returned str"),
    ("test_export_byo:wrong_model_type", "EF433", "expected torch.nn.Module"),
    ("test_export_byo:wrong_spec_type", "EF433", "expected edgefuse.export.ExportSpec"),
    ("test_export_byo:raises", "EF434", "RuntimeError: weights file missing"),
])
def test_bad_factories_give_one_line_errors(ref, code, words):
    with pytest.raises(ExportError) as ei:
        load_factory(ref, search_path=ROOT)
    assert ei.value.code == code and words in ei.value.message
    assert "\n" not in ei.value.line()


def test_byo_example_exports_verifies_and_runs(tmp_path, capsys, monkeypatch):
    """`edgefuse export examples.byo_model.model:build` through the CLI, then the torch-free runner."""
    import torch

    from edgefuse.cli import main
    from edgefuse.runtime.runners import open_runner

    torch.set_num_threads(1)
    monkeypatch.chdir(ROOT)
    out = tmp_path / "byo-fp32"
    with pytest.raises(SystemExit) as ei:
        main(["export", "--model", EXAMPLE, "--out", str(out)])
    assert ei.value.code == 0, capsys.readouterr().err
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"] == EXAMPLE and m["family"] == "byo-multimodal-transformer" and m["weights_source"] == f"factory:{EXAMPLE}"
    ver = m["verification"]["model.onnx"]
    assert ver["passed"] and ver["outputs"]["vqa_logits"]["min_agreement"] == 1.0
    assert ver["outputs"]["vqa_logits"]["max_abs"] < 1e-4
    assert any(c.startswith("museum") for c in ver["cases"])
    assert {"model.onnx", "tokenizer.json", "answers.json"} == set(m["files"])
    rng = np.random.default_rng(0)
    with open_runner(out, threads=1) as r:
        res = r.infer({"pixel_values": rng.uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32),
                       "input_ids": np.array([[2, 7, 9, 3, 0], [2, 8, 3, 0, 0]], np.int64),
                       "attention_mask": np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], np.int64)})
    assert res["vqa_logits"].shape == (2, len(json.loads((out / "answers.json").read_text())))

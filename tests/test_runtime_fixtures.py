"""A tiny artifact folder with the zoo's input/output contract, built with onnx.helper.

Kiosk and server plumbing tests (validation, batching, queueing, errors) run on it in
milliseconds; tests that need the right answer use the exported museum model instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

IMAGE_SIZE = 64
PATCHES = 16


def build_tiny_artifact(folder: Path, seed: int = 0) -> Path:
    """model.onnx (vqa, itm, grounding heads over mean colour + token count) + manifest + tokenizer + answers."""
    from edgefuse.data.museum import answer_vocabulary
    from edgefuse.data.tokenizer import default_tokenizer

    answers = answer_vocabulary()
    rng = np.random.default_rng(seed)
    a = len(answers)
    inits = {
        "Wv": rng.standard_normal((4, a)).astype(np.float32) * 3,
        "Wi": rng.standard_normal((4, 2)).astype(np.float32),
        "Wb": rng.standard_normal((4, 4)).astype(np.float32),
        "Wg": rng.standard_normal((4, PATCHES)).astype(np.float32),
        "axes23": np.array([2, 3], np.int64),
        "axes1": np.array([1], np.int64),
        "hundred": np.array(100.0, np.float32),
    }
    nodes = [
        helper.make_node("ReduceMean", ["pixel_values", "axes23"], ["rgb"], keepdims=0),
        helper.make_node("Mul", ["input_ids", "attention_mask"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axes1"], ["tok"], keepdims=1),
        helper.make_node("Cast", ["tok"], ["tokf"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["tokf", "hundred"], ["tokn"]),
        helper.make_node("Concat", ["rgb", "tokn"], ["feat"], axis=1),
        helper.make_node("MatMul", ["feat", "Wv"], ["vqa_logits"]),
        helper.make_node("MatMul", ["feat", "Wi"], ["itm_logits"]),
        helper.make_node("MatMul", ["feat", "Wb"], ["box_raw"]),
        helper.make_node("Sigmoid", ["box_raw"], ["box"]),
        helper.make_node("MatMul", ["feat", "Wg"], ["att_raw"]),
        helper.make_node("Softmax", ["att_raw"], ["grounding_attention"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_fusion",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, IMAGE_SIZE, IMAGE_SIZE]),
         helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "text_length"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "text_length"])],
        [helper.make_tensor_value_info("vqa_logits", TensorProto.FLOAT, ["batch", a]),
         helper.make_tensor_value_info("itm_logits", TensorProto.FLOAT, ["batch", 2]),
         helper.make_tensor_value_info("box", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("grounding_attention", TensorProto.FLOAT, ["batch", PATCHES])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    default_tokenizer().save(folder / "tokenizer.json")
    (folder / "answers.json").write_text(json.dumps(answers))
    manifest = {
        "kind": "onnx", "model": "tiny-test", "family": "test", "tasks": ["vqa", "itm", "grounding"], "precision": "fp32",
        "image_size": IMAGE_SIZE, "max_text_length": 32, "opset": 18,
        "inputs": [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, IMAGE_SIZE, IMAGE_SIZE]},
                   {"name": "input_ids", "dtype": "int64", "shape": ["batch", "text_length"]},
                   {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "text_length"]}],
        "outputs": [{"name": "vqa_logits", "dtype": "float32", "shape": ["batch", a]}],
        "created_by": "tests/test_runtime_fixtures.py",
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def test_tiny_artifact_opens(tmp_path: Path) -> None:
    from edgefuse.runtime.runners import open_runner

    folder = build_tiny_artifact(tmp_path / "tiny")
    with open_runner(folder, threads=1) as r:
        out = r.infer({"pixel_values": np.zeros((2, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32),
                       "input_ids": np.ones((2, 5), np.int64), "attention_mask": np.ones((2, 5), np.int64)})
    assert out["grounding_attention"].sum(axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    assert ((out["box"] > 0) & (out["box"] < 1)).all()

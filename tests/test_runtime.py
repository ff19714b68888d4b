"""Runners: feed checks in the base class, ONNX Runtime CPU runner, TensorRT EP options, torch-free import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgefuse.errors import InputError, RunnerError  # noqa: E402
from edgefuse.runtime.runners import OrtRunner, Runner, TensorSpec, check_feed, open_runner, tensorrt_provider_options  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _fusion_like_graph(path: Path, fp16: bool = False) -> np.ndarray:
    """A tiny graph with the zoo's input contract: logits = mean(pixels) * W + sum(ids * mask)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1, 5)).astype(np.float16 if fp16 else np.float32)
    ft = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    nodes = [
        helper.make_node("ReduceMean", ["pixel_values", "axes123"], ["pm"], keepdims=0),
        helper.make_node("Unsqueeze", ["pm", "axes1"], ["pm2"]),
        helper.make_node("Cast", ["pm2"], ["pmc"], to=ft),
        helper.make_node("MatMul", ["pmc", "W"], ["img"]),
        helper.make_node("Cast", ["img"], ["img32"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["input_ids", "attention_mask"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axes1"], ["tok"], keepdims=1),
        helper.make_node("Cast", ["tok"], ["tokf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["img32", "tokf"], ["vqa_logits"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 8, 8]),
         helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "text_length"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "text_length"])],
        [helper.make_tensor_value_info("vqa_logits", TensorProto.FLOAT, ["batch", 5])],
        initializer=[numpy_helper.from_array(w, "W"),
                     numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes123"),
                     numpy_helper.from_array(np.array([1], np.int64), "axes1")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return w.astype(np.float32)


def _reference(w: np.ndarray, feed: dict[str, np.ndarray]) -> np.ndarray:
    img = feed["pixel_values"].mean(axis=(1, 2, 3))[:, None] @ w
    tok = (feed["input_ids"] * feed["attention_mask"]).sum(axis=1, keepdims=True)
    return img + tok


def _feed(batch: int = 2, length: int = 6, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "pixel_values": rng.standard_normal((batch, 3, 8, 8)).astype(np.float32),
        "input_ids": rng.integers(0, 50, (batch, length)).astype(np.int64),
        "attention_mask": np.ones((batch, length), np.int64),
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("tiny")
    w = _fusion_like_graph(folder / "model.onnx")
    return folder / "model.onnx", w


def test_ort_cpu_runner_matches_numpy(tiny: tuple[Path, np.ndarray]) -> None:
    path, w = tiny
    with OrtRunner(path, threads=1) as r:
        assert [s.name for s in r.input_specs] == ["pixel_values", "input_ids", "attention_mask"]
        assert r.input_specs[0].shape == ("batch", 3, 8, 8)
        assert r.output_names == ["vqa_logits"]
        for batch, length in [(1, 3), (4, 9)]:
            feed = _feed(batch, length)
            out = r.infer(feed)
            err = np.abs(out["vqa_logits"] - _reference(w, feed)).max()
            assert err < 1e-4, err
        assert r.last_inference_time is not None and r.last_inference_time > 0
    assert not r.is_active


@pytest.mark.parametrize(
    "mutate, code, needle",
    [
        (lambda f: f.pop("attention_mask"), "EF713", "attention_mask"),
        (lambda f: f.update(extra=np.zeros(1)), "EF712", "extra"),
        (lambda f: f.update(input_ids=f["input_ids"].astype(np.int32)), "EF715", "input_ids"),
        (lambda f: f.update(pixel_values=f["pixel_values"][0]), "EF716", "pixel_values"),
        (lambda f: f.update(pixel_values=np.zeros((2, 3, 9, 8), np.float32)), "EF717", "pixel_values"),
        (lambda f: f.update(attention_mask=np.ones((3, 6), np.int64)), "EF719", "batch"),
        (lambda f: f.update(attention_mask=np.ones((2, 5), np.int64)), "EF719", "text_length"),
        (lambda f: f.update(input_ids=[[1, 2]]), "EF714", "input_ids"),
    ],
)
def test_feed_checks_name_the_input(tiny: tuple[Path, np.ndarray], mutate, code: str, needle: str) -> None:
    path, _ = tiny
    with OrtRunner(path, threads=1) as r:
        feed = _feed()
        mutate(feed)
        with pytest.raises(InputError) as e:
            r.infer(feed)
        assert e.value.code == code and needle in e.value.message


def test_runner_lifecycle_errors(tiny: tuple[Path, np.ndarray]) -> None:
    path, _ = tiny
    r = OrtRunner(path)
    with pytest.raises(RunnerError, match="active"):
        r.infer(_feed())
    with pytest.raises(RunnerError, match="active"):
        _ = r.input_specs
    r.activate()
    with pytest.raises(RunnerError, match="already active"):
        r.activate()
    r.deactivate()
    r.deactivate()  # idempotent
    with pytest.raises(RunnerError) as e:
        OrtRunner(path, provider="cdua")
    assert "cuda" in e.value.hint
    with pytest.raises(RunnerError) as e:
        OrtRunner(path.parent / "nope.onnx")
    assert e.value.code == "EF705"


def test_cuda_provider_refused_cleanly_without_gpu(tiny: tuple[Path, np.ndarray]) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(RunnerError) as e:
        OrtRunner(tiny[0], provider="cuda").activate()
    assert e.value.code == "EF706"


def test_fp16_model_runs_on_cpu_with_nchwc_disabled(tmp_path: Path) -> None:
    w = _fusion_like_graph(tmp_path / "model.onnx", fp16=True)
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "onnx", "precision": "fp16"}))
    runner = open_runner(tmp_path, threads=1)
    assert isinstance(runner, OrtRunner)
    with runner as r:
        feed = _feed(3, 4)
        err = np.abs(r.infer(feed)["vqa_logits"] - _reference(w, feed)).max()
    assert err < 0.05, err  # fp16 weights and activations


def test_open_runner_uses_manifest_axis_names(tmp_path: Path) -> None:
    _fusion_like_graph(tmp_path / "model.onnx")
    manifest = {"kind": "onnx", "precision": "fp32", "inputs": [
        {"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, 8, 8]},
        {"name": "input_ids", "dtype": "int64", "shape": ["batch", "text_length"]},
        {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "text_length"]}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with open_runner(tmp_path) as r:
        assert r.input_specs[1].shape == ("batch", "text_length")
    with pytest.raises(RunnerError) as e:
        open_runner(tmp_path, file="decoder.onnx")
    assert "model.onnx" in e.value.hint


def test_tensorrt_provider_options_spell_out_profiles(tmp_path: Path) -> None:
    specs = [TensorSpec("pixel_values", np.dtype(np.float32), ("batch", 3, 64, 64)),
             TensorSpec("input_ids", np.dtype(np.int64), ("batch", "text_length"))]
    opts = tensorrt_provider_options(specs, {"batch": (1, 4, 32), "text_length": (2, 16, 32)}, tmp_path / "cache", fp16=True,
                                     workspace_mb=512)
    assert opts["trt_profile_min_shapes"] == "pixel_values:1x3x64x64,input_ids:1x2"
    assert opts["trt_profile_opt_shapes"] == "pixel_values:4x3x64x64,input_ids:4x16"
    assert opts["trt_profile_max_shapes"] == "pixel_values:32x3x64x64,input_ids:32x32"
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_timing_cache_path"] == str(tmp_path / "cache")
    assert opts["trt_fp16_enable"] == "True" and opts["trt_max_workspace_size"] == str(512 << 20)
    with pytest.raises(RunnerError, match="text_length"):
        tensorrt_provider_options(specs, {"batch": (1, 1, 8)})
    with pytest.raises(RunnerError, match="min <= opt <= max"):
        tensorrt_provider_options(specs, {"batch": (4, 1, 8), "text_length": (1, 1, 1)})


def test_check_feed_is_backend_neutral() -> None:
    class Echo(Runner):
        name = "echo"

        def _activate(self) -> None:
            self._input_specs = [TensorSpec("x", np.dtype(np.float32), ("batch", 2))]
            self._output_names = ["x"]

        def _infer(self, feed):
            return {"x": feed["x"] * 2}

        def _deactivate(self) -> None:
            pass

    with Echo() as r:
        assert r.infer({"x": np.ones((3, 2), np.float32)})["x"].sum() == 12
        with pytest.raises(InputError, match="dim 1"):
            r.infer({"x": np.ones((3, 3), np.float32)})
    specs = [TensorSpec("a", np.dtype(np.int64), ("batch",)), TensorSpec("kv", np.dtype(np.float32), ("batch", "past_length"))]
    with pytest.raises(InputError, match="empty"):
        check_feed(specs, {"a": np.zeros((0,), np.int64), "kv": np.zeros((0, 0), np.float32)})
    assert check_feed(specs, {"a": np.zeros((2,), np.int64), "kv": np.zeros((2, 0), np.float32)})["kv"].shape == (2, 0)


def test_runtime_imports_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import importlib\n"
        "for m in ['edgefuse.runtime', 'edgefuse.runtime.runners', 'edgefuse.runtime.kiosk', 'edgefuse.runtime.server', 'edgefuse.runtime.commands']:\n"
        "    importlib.import_module(m)\n"
        "import edgefuse.runtime as r; r.open_runner; r.KioskPipeline\n"
        "assert 'torch' not in [k for k, v in sys.modules.items() if v is not None]\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "ok"

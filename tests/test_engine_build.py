"""Real TensorRT-RTX engine builds on the CPU machine, manifests, and the checks made before loading.

TensorRT-RTX (`pip install 'edgefuse[tensorrt-rtx]'`) builds engines without a GPU; running
them needs compute capability 8.x/12.x, which no machine here has (docs/hardware.md), so the
runner's GPU path is in test_engine_runner.py behind `gpu`/`tensorrt` skip conditions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX not installed: pip install 'edgefuse[tensorrt-rtx]'")

from edgefuse.artifacts import sha256_file  # noqa: E402
from edgefuse.config import ProfileShape, TargetConfig, parse_config  # noqa: E402
from edgefuse.errors import EngineError, InputError, TargetError  # noqa: E402
from edgefuse.runtime.engines import cuda  # noqa: E402
from edgefuse.runtime.engines.build import build_engines  # noqa: E402
from edgefuse.runtime.engines.flavours import capture, get_logger  # noqa: E402
from edgefuse.runtime.engines.manifest import check_gpu, read_engine_manifest  # noqa: E402
from edgefuse.runtime.engines.probe import build_fusion_onnx, probe_feed, write_probe_artifact  # noqa: E402
from edgefuse.runtime.engines.profiles import EngineShapeError, profile_shapes  # noqa: E402
from edgefuse.runtime.engines.runner import EngineRunner  # noqa: E402


@pytest.fixture(scope="session")
def probe_artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("engine_probe")
    return {p: write_probe_artifact(root / f"probe-{p}", p) for p in ("fp32", "fp16", "int8")}


@pytest.fixture(scope="session")
def cfg():
    return parse_config({})


@pytest.fixture(scope="session")
def built(probe_artifacts: dict[str, Path], cfg, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("engines")
    return {p: build_engines(a, "desktop-rtx", cfg, out=out / p) for p, a in probe_artifacts.items()}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_rtx_builds_engine_for_each_precision(built, precision: str) -> None:
    res = built[precision]
    m = res.manifest
    (entry,) = m["engines"]
    path = res.folder / entry["file"]
    assert path.stat().st_size == entry["bytes"] > 100_000
    assert sha256_file(path) == entry["sha256"] == m["files"]["model.engine"]
    assert m["flavour"] == "tensorrt-rtx" and m["tensorrt_version"] == trt.__version__
    assert m["compute_capability"] == ["8.6", "8.9", "12.0"]
    assert m["precision"] == precision and m["build"]["precision_flags"] == [] and m["build"]["strongly_typed"]
    assert m["source"]["onnx"]["model.onnx"] == m["parent"]["files"]["model.onnx"]
    # profiles come from the target's named axes: consistent across inputs sharing an axis
    prof = entry["profile_shapes"]
    assert prof["pixel_values"] == {"min": [1, 3, 32, 32], "opt": [1, 3, 32, 32], "max": [8, 3, 32, 32]}
    assert prof["input_ids"] == prof["attention_mask"] == {"min": [1, 4], "opt": [1, 16], "max": [8, 32]}
    assert not [w for w in res.warnings if "self-consistent" in w]


def test_engine_sizes_follow_precision(built) -> None:
    size = {p: r.manifest["engines"][0]["bytes"] for p, r in built.items()}
    assert size["fp16"] < size["fp32"]  # FP16 weights are half the bytes of FP32 ones


def test_inconsistent_profile_is_caught_by_the_log_capture(probe_artifacts: dict[str, Path]) -> None:
    """The check the build relies on: TensorRT reports a profile whose shared axis disagrees."""
    builder = trt.Builder(get_logger(trt))
    net = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(net, get_logger(trt))
    assert parser.parse(build_fusion_onnx("fp32").SerializeToString())
    conf = builder.create_builder_config()
    prof = builder.create_optimization_profile()
    prof.set_shape("pixel_values", (1, 3, 32, 32), (2, 3, 32, 32), (8, 3, 32, 32))  # batch opt 2 ...
    prof.set_shape("input_ids", (1, 4), (1, 16), (8, 32))  # ... but 1 here
    prof.set_shape("attention_mask", (1, 4), (1, 16), (8, 32))
    conf.add_optimization_profile(prof)
    with capture(trt) as cap:
        blob = builder.build_serialized_network(net, conf)
    assert blob is None
    assert any("not self-consistent" in m for m in cap.errors())


def test_manifest_round_trip(built) -> None:
    res = built["fp16"]
    folder, m = read_engine_manifest(res.folder)
    assert folder == res.folder
    assert m == json.loads(json.dumps(res.manifest, default=str))
    again, _ = read_engine_manifest(res.folder / "model.engine")
    assert again == res.folder
    runner = EngineRunner(res.folder)
    assert set(runner.profile_shapes) == {"pixel_values", "input_ids", "attention_mask"}


def _copy(res, tmp_path: Path) -> Path:
    dst = tmp_path / "engine"
    shutil.copytree(res.folder, dst)
    return dst


def test_truncated_engine_is_refused_before_deserializing(built, tmp_path: Path) -> None:
    dst = _copy(built["fp32"], tmp_path)
    data = (dst / "model.engine").read_bytes()
    (dst / "model.engine").write_bytes(data[: len(data) // 2])
    with pytest.raises(EngineError) as e:
        EngineRunner(dst).activate()
    assert e.value.code == "EF823" and "truncated" in e.value.message


def test_library_version_mismatch_is_refused(built, tmp_path: Path) -> None:
    dst = _copy(built["fp32"], tmp_path)
    m = json.loads((dst / "manifest.json").read_text())
    m["tensorrt_version"] = "1.0.0.1"
    (dst / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(EngineError) as e:
        EngineRunner(dst).activate()
    assert e.value.code == "EF821" and "1.0.0.1" in e.value.message


def test_gpu_compute_capability_mismatch_is_refused(built) -> None:
    m = built["fp32"].manifest
    check_gpu(m, "8.9")
    with pytest.raises(EngineError) as e:
        check_gpu(m, "9.0")  # the lent H100/H200: TensorRT-RTX engines do not run there
    assert e.value.code == "EF822" and "9.0" in e.value.message


@pytest.mark.skipif(cuda.device_count() > 0, reason="this machine has a GPU")
def test_no_gpu_is_a_typed_error(built) -> None:
    with pytest.raises(EngineError) as e:
        EngineRunner(built["fp16"].folder).activate()
    assert e.value.code == "EF842"


def test_shapes_outside_profile_are_typed_input_errors(built) -> None:
    runner = EngineRunner(built["fp16"].folder)
    assert runner.max_batch == 8
    runner.check_shapes(probe_feed(8, 32))
    runner.check_shapes(probe_feed(20, 8))  # above max batch: infer runs it in chunks of 8
    for feed in (probe_feed(1, 33), probe_feed(1, 3), probe_feed(20, 40)):
        with pytest.raises(EngineShapeError) as e:
            runner.check_shapes(feed)
        assert isinstance(e.value, InputError) and e.value.code == "EF831"
    strict = EngineRunner(built["fp16"].folder, chunk_batches=False)
    for feed in (probe_feed(9, 8), probe_feed(1, 33)):
        with pytest.raises(EngineShapeError) as e:
            strict.check_shapes(feed)
        assert isinstance(e.value, InputError) and e.value.code == "EF831"


def test_unknown_target_suggests_the_near_miss(probe_artifacts, cfg) -> None:
    with pytest.raises(TargetError) as e:
        build_engines(probe_artifacts["fp16"], "desktop-rxt", cfg)
    assert e.value.code == "EF811" and "desktop-rtx" in e.value.hint


def test_missing_flavour_names_the_package(probe_artifacts, cfg) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("full TensorRT is installed here")
    with pytest.raises(TargetError) as e:
        build_engines(probe_artifacts["fp16"], "jetson-orin-jp6", cfg)
    assert e.value.code == "EF813" and "tensorrt" in e.value.hint


def test_text_profile_beyond_the_model_is_refused(probe_artifacts) -> None:
    cfg = parse_config({"targets": {"rtx-long": {"flavour": "tensorrt-rtx", "compute_capability": ["8.9"],
                                                 "profiles": {"batch": {"min": 1, "opt": 1, "max": 4},
                                                              "text_length": {"min": 4, "opt": 16, "max": 64}}}}})
    with pytest.raises(TargetError) as e:
        build_engines(probe_artifacts["fp16"], "rtx-long", cfg)
    assert e.value.code == "EF816"


def test_dla_refuses_dynamic_shapes_and_takes_static_ones() -> None:
    specs = [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "text_length"]}]
    with pytest.raises(TargetError) as e:
        profile_shapes(specs, {"batch": (1, 1, 8), "text_length": (16, 16, 16)}, "jetson-dla", dla=True)
    assert e.value.code == "EF817" and "min = opt = max" in e.value.hint
    static = profile_shapes(specs, {"batch": (1, 1, 1), "text_length": (16, 16, 16)}, "jetson-dla", dla=True)
    assert static["input_ids"] == {"min": [1, 16], "opt": [1, 16], "max": [1, 16]}


def test_unsupported_compute_capability_for_rtx(probe_artifacts) -> None:
    cfg = parse_config({"targets": {"rtx-orin": {"flavour": "tensorrt-rtx", "compute_capability": ["8.7"],
                                                 "profiles": {"batch": {"min": 1, "opt": 1, "max": 2},
                                                              "text_length": {"min": 4, "opt": 8, "max": 16}}}}})
    with pytest.raises(TargetError) as e:
        build_engines(probe_artifacts["fp16"], "rtx-orin", cfg)
    assert e.value.code == "EF818" and "8.7" in e.value.message


def test_rtx_timing_cache_is_reported_unused(probe_artifacts, cfg, tmp_path: Path) -> None:
    cache = tmp_path / "timing.cache"
    res = build_engines(probe_artifacts["fp32"], "desktop-rtx", cfg, out=tmp_path / "e", timing_cache=cache)
    assert not cache.exists()  # TensorRT-RTX's timing-cache calls are no-ops: nothing written, and the manifest says so
    assert "no timing cache" in res.manifest["build"]["timing_cache_note"]


def test_split_build_makes_three_engines_that_chain(probe_artifacts, cfg, tmp_path: Path) -> None:
    res = build_engines(probe_artifacts["fp16"], "desktop-rtx", cfg, out=tmp_path / "split", split=True)
    m = res.manifest
    assert m["split"] is True
    names = [e["name"] for e in m["engines"]]
    assert names == ["vision", "text", "fusion"]
    vision, text, fusion = m["engines"]
    assert [s["name"] for s in vision["inputs"]] == ["pixel_values"]
    assert {s["name"] for s in text["inputs"]} == {"input_ids", "attention_mask"}
    produced = {s["name"] for s in vision["outputs"]} | {s["name"] for s in text["outputs"]}
    assert {s["name"] for s in fusion["inputs"]} <= produced | {"pixel_values", "input_ids", "attention_mask"}
    assert [s["name"] for s in fusion["outputs"]] == ["vqa_logits"]
    for e in m["engines"]:
        assert (res.folder / e["file"]).stat().st_size == e["bytes"]
        for shapes in e["profile_shapes"].values():  # measured boundary shapes follow the batch/text ranges
            assert all(lo <= o <= hi for lo, o, hi in zip(shapes["min"], shapes["opt"], shapes["max"], strict=True))


def test_split_refuses_a_model_without_towers(tmp_path: Path, cfg) -> None:
    """Single-stream style: image and text meet before any MatMul, so there is no tower to split off."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    emb = numpy_helper.from_array(np.ones((16, 4), np.float32), "emb")
    nodes = [
        helper.make_node("ReduceMean", ["pixel_values", "axes"], ["pooled"], keepdims=0),  # [B, 3] -> no MatMul in vision
        helper.make_node("Gather", ["emb", "input_ids"], ["tok"]),
        helper.make_node("ReduceMean", ["tok", "ax1"], ["tpool"], keepdims=0),
        helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["tpool", "w"], ["tw"]),
        helper.make_node("Add", ["tw", "pooled"], ["sum"]),
        helper.make_node("ReduceSum", ["mf", "ax1"], ["cnt"], keepdims=1),
        helper.make_node("Mul", ["sum", "cnt"], ["vqa_logits"]),
    ]
    inits = [w, emb, numpy_helper.from_array(np.array([2, 3], np.int64), "axes"), numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    graph = helper.make_graph(nodes, "single", [
        helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 32, 32]),
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "text_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "text_length"])],
        [helper.make_tensor_value_info("vqa_logits", TensorProto.FLOAT, ["batch", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = tmp_path / "single.onnx"
    onnx.save(model, str(path))
    with pytest.raises(EngineError) as e:
        build_engines(path, "desktop-rtx", cfg, out=tmp_path / "e", split=True)
    assert e.value.code == "EF851" and "vision" in e.value.message
    res = build_engines(path, "desktop-rtx", cfg, out=tmp_path / "e2", split=False)  # whole-model build still works
    assert res.manifest["engines"][0]["bytes"] > 0


def test_build_refuses_existing_output_without_overwrite(built, probe_artifacts, cfg) -> None:
    from edgefuse.errors import ArtifactError

    with pytest.raises(ArtifactError) as e:
        build_engines(probe_artifacts["fp32"], "desktop-rtx", cfg, out=built["fp32"].folder)
    assert e.value.code == "EF601"


def test_target_config_dataclass_used_by_build_is_the_schema() -> None:
    t = TargetConfig(flavour="tensorrt-rtx", profiles={"batch": ProfileShape(1, 2, 4)})
    assert t.strongly_typed and t.optimization_level == 3


def test_open_runner_dispatches_engine_folders(built) -> None:
    from edgefuse.runtime.runners import open_runner

    folder = built["fp16"].folder
    for path in (folder, folder / "model.engine"):
        r = open_runner(path, threads=2)  # ONNX Runtime-only options are ignored for engines
        assert isinstance(r, EngineRunner) and r.folder == folder
    with pytest.raises(EngineError) as e:
        open_runner(folder, workspace=1)
    assert e.value.code == "EF832"


def test_kv_cache_decoder_axes_are_coupled() -> None:
    """past + new <= total: the decoder engine is built for one-token steps over the whole cache."""
    from edgefuse.runtime.engines.build import _ranges

    target = parse_config({}).targets["desktop-rtx"]
    manifest = {"dynamic_axes": {"batch": {"min": 1, "max": 64}, "new_length": {"min": 1, "max": 32},
                                 "past_length": {"min": 0, "max": 31}, "total_length": {"min": 1, "max": 32}}}
    r = _ranges(manifest, target)
    assert r["batch"] == (1, 1, 8)  # the target wins over the artifact's range
    assert r["new_length"] == (1, 1, 1) and r["past_length"] == (0, 15, 31)
    assert r["past_length"][2] + r["new_length"][2] <= 32


def test_independent_engines_open_one_at_a_time(tmp_path: Path, cfg) -> None:
    """Two graphs in one artifact (like image_encoder + decoder) give two engines; a runner takes one."""
    import onnx

    art = tmp_path / "two"
    art.mkdir()
    for name in ("image_encoder.onnx", "decoder.onnx"):
        onnx.save(build_fusion_onnx("fp16"), str(art / name))
    (art / "manifest.json").write_text(json.dumps({"kind": "onnx", "model": "probe-pair", "precision": "fp16",
                                                   "max_text_length": 32, "files": {}}))
    res = build_engines(art, "desktop-rtx", cfg, out=tmp_path / "e")
    assert [e["file"] for e in res.manifest["engines"]] == ["image_encoder.engine", "decoder.engine"]
    with pytest.raises(EngineError) as e:
        EngineRunner(res.folder)
    assert e.value.code == "EF833" and "decoder.engine" in e.value.hint
    one = EngineRunner(res.folder / "decoder.engine")
    assert [x["name"] for x in one.entries] == ["decoder"] and "input_ids" in one.profile_shapes
    assert one.name.endswith("/decoder.engine")


def test_fp32_build_turns_tf32_off(built) -> None:
    assert built["fp32"].manifest["build"]["tf32"] is False  # no silent FP32 -> TF32 downgrade
    assert "tf32" not in built["fp16"].manifest["build"]


def test_onnxruntime_target_builds_no_engine(probe_artifacts, cfg) -> None:
    with pytest.raises(TargetError) as e:
        build_engines(probe_artifacts["fp16"], "x86-cpu", cfg)
    assert e.value.code == "EF812" and "ONNX" in e.value.message


def test_fp8_qdq_builds_for_ada_and_blackwell_and_is_refused_early_for_ampere(tmp_path: Path, cfg) -> None:
    """TensorRT-RTX compiles FP8 (E4M3) Q/DQ for sm89/sm120 and refuses sm86 ("HW-specific datatypes: fp8_e4m3")."""
    art = write_probe_artifact(tmp_path / "probe-fp8", "fp8")
    ada = parse_config({"targets": {"rtx-ada": {"flavour": "tensorrt-rtx", "compute_capability": ["8.9", "12.0"],
                                                "profiles": {"batch": {"min": 1, "opt": 1, "max": 4},
                                                             "text_length": {"min": 4, "opt": 8, "max": 16}}}}})
    res = build_engines(art, "rtx-ada", ada, out=tmp_path / "e")
    assert res.manifest["precision"] == "fp8" and res.manifest["engines"][0]["bytes"] > 100_000
    with pytest.raises(TargetError) as e:
        build_engines(art, "desktop-rtx", cfg, out=tmp_path / "e2")  # lists 8.6
    assert e.value.code == "EF818" and "8.6" in e.value.message

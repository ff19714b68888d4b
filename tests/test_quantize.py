"""Quantization: recipes, FP16 keep-list, TensorRT-style INT8 QDQ (ORT and NNCF), sensitivity,
accuracy budget, determinism, artifact folders and bad input. Runs on a tiny fusion graph
(tests/test_quantize_fixtures.py) so the whole file takes seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgefuse.errors import ArtifactError, QuantizeError
from edgefuse.quantize.api import CalibrationOptions, QuantizeOptions, quantize_artifact
from edgefuse.quantize.configs import Fp16Config, Int8NncfConfig, Int8OrtConfig, config_from_dict, config_to_dict, make_config
from edgefuse.quantize.evaluate import make_session, output_sqnr, run_model
from test_quantize_fixtures import build_tiny_artifact

ROOT = Path(__file__).resolve().parents[1]
CAL = CalibrationOptions(num_samples=24, cache_dir=None)
FAST = QuantizeOptions(eval_samples=48, sensitivity_samples=6, overwrite=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_artifact(tmp_path_factory.mktemp("q") / "tiny-fp32")


@pytest.fixture(scope="module")
def int8(tiny: Path, tmp_path_factory: pytest.TempPathFactory):
    return quantize_artifact(tiny, Int8OrtConfig(), tmp_path_factory.mktemp("o") / "tiny-int8", CAL, FAST)


@pytest.fixture(scope="module")
def feeds():
    from edgefuse.calibration import build_calibration

    return build_calibration("museum", 8, seed=5).feeds


def _producers(m: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {t: n for n in m.graph.node for t in n.output}


def test_configs_are_versioned_json_round_trips() -> None:
    for cfg in (Fp16Config(data_max=256.0), Int8OrtConfig(method="percentile", exclude_nodes=["a"]), Int8NncfConfig()):
        d = json.loads(json.dumps(config_to_dict(cfg)))
        assert config_from_dict(d) == cfg
    with pytest.raises(QuantizeError, match="version"):
        config_from_dict({**config_to_dict(Int8OrtConfig()), "version": 99})
    with pytest.raises(QuantizeError, match="did you mean 'method'"):
        config_from_dict({**config_to_dict(Int8OrtConfig()), "methd": "minmax"})
    with pytest.raises(QuantizeError, match="entropy"):
        make_config("int8", "nncf", "entropy")
    with pytest.raises(QuantizeError, match="did you mean 'int8'"):
        make_config("int9")


def test_int8_follows_tensorrt_qdq_rules(tiny: Path, int8) -> None:
    m = onnx.load(str(int8.folder / "model.onnx"))
    prod = _producers(m)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    quantized = {n.name: n for n in m.graph.node if any(prod.get(t) is not None and prod[t].op_type == "DequantizeLinear" for t in n.input)}
    assert quantized and {n.op_type for n in quantized.values()} <= {"MatMul", "Gemm", "Conv"}
    # transformer-aware defaults: attention-score MatMuls and final heads carry no Q/DQ
    for name in ("attn_scores_MatMul", "attn_context_MatMul", "vqa_Gemm", "itm_Gemm", "box_Gemm"):
        assert name not in quantized
    assert "fusion.0.attn.q_MatMul" in quantized and "patch_Conv" in quantized
    for n in m.graph.node:
        if n.op_type == "QuantizeLinear":  # activations: per-tensor, symmetric INT8
            assert inits[n.input[1]].size == 1 and inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any()
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:  # weights: stored INT8, per channel
            assert inits[n.input[0]].dtype == np.int8 and inits[n.input[1]].size > 1 and not inits[n.input[2]].any()
    dq_out = {t for n in m.graph.node if n.op_type == "DequantizeLinear" for t in n.output}
    readers = {n.op_type for n in m.graph.node if dq_out & set(n.input)}
    assert readers <= {"MatMul", "Gemm", "Conv"}  # Q/DQ only in front of MatMul/Gemm/Conv, nothing else reads them
    kept = {k["node"]: k["reasons"][0] for k in int8.report["kept_in_higher_precision"]}
    assert "attention-score" in kept["attn_scores_MatMul"] and "final head" in kept["vqa_Gemm"]
    assert "LayerNormalization" in int8.report["details"]["not_quantized_ops"]


def test_int8_artifact_folder_manifest_and_reports(tiny: Path, int8) -> None:
    from edgefuse.artifacts import read_manifest, sha256_file

    man = read_manifest(int8.folder)
    assert man["precision"] == "int8" and man["parent"]["precision"] == "fp32"
    assert man["quantization"]["recipe"]["type"] == "int8-ort"
    for name, sha in man["files"].items():
        assert sha256_file(int8.folder / name) == sha
    assert {"model.onnx", "tokenizer.json", "answers.json", "quantize_report.json", "sensitivity.json"} <= set(man["files"])
    sens = json.loads((int8.folder / "sensitivity.json").read_text())
    assert sens["groups"] == sorted(sens["groups"], key=lambda r: (r["sqnr_db"], r["group"]))
    assert {r["group"] for r in sens["groups"]} >= {"fusion.0.attn.q", "heads.vqa", "fusion.0.attn#attention"}
    assert int8.report["size_bytes"]["quantized"] < 0.6 * int8.report["size_bytes"]["fp32"]
    assert not list(int8.folder.parent.glob(".*partial"))


def test_int8_defaults_hold_accuracy_where_naive_int8_does_not(tiny: Path, int8, feeds) -> None:
    fp32 = onnx.load(str(tiny / "model.onnx"))
    ref = run_model(make_session(fp32), feeds)
    ours = min(output_sqnr(ref, run_model(make_session(onnx.load(str(int8.folder / "model.onnx"))), feeds)).values())
    from edgefuse.quantize.backends import Context, prepare_int8_ort
    from edgefuse.calibration import StatsCache, build_calibration

    ctx = Context(fp32, "x", build_calibration("museum", 24, 0), StatsCache(None))
    plan = prepare_int8_ort(ctx, Int8OrtConfig(quantize_attention=True, quantize_head=True, quantize_embedding=True))
    naive = min(output_sqnr(ref, run_model(make_session(plan.build(plan.default)), feeds)).values())
    assert ours > 25.0, ours
    assert ours > naive, (ours, naive)


def test_int8_is_byte_identical_across_runs_and_cache(tiny: Path, int8, tmp_path: Path) -> None:
    cached = CalibrationOptions(num_samples=24, cache_dir=str(tmp_path / "cache"))
    a = quantize_artifact(tiny, Int8OrtConfig(), tmp_path / "a", cached, QuantizeOptions(eval_samples=0, sensitivity=False))
    b = quantize_artifact(tiny, Int8OrtConfig(), tmp_path / "b", cached, QuantizeOptions(eval_samples=0, sensitivity=False))
    assert a.report["details"]["calibration_cache_hit"] is False and b.report["details"]["calibration_cache_hit"] is True
    data = (a.folder / "model.onnx").read_bytes()
    assert data == (b.folder / "model.onnx").read_bytes() == (int8.folder / "model.onnx").read_bytes()


def test_calibration_methods_give_different_ranges(tiny: Path) -> None:
    from edgefuse.calibration import StatsCache, build_calibration
    from edgefuse.quantize.backends import Context, int8_ranges

    ctx = Context(onnx.load(str(tiny / "model.onnx")), "x", build_calibration("museum", 8, 0), StatsCache(None))
    mm, _ = int8_ranges(ctx, Int8OrtConfig(method="minmax"))
    pc, _ = int8_ranges(ctx, Int8OrtConfig(method="percentile", percentile=99.0, num_bins=256))
    en, _ = int8_ranges(ctx, Int8OrtConfig(method="entropy", num_bins=512))  # KL search is pure Python: few bins here
    t = "ffn_act"  # ReLU output feeding fc2
    assert max(abs(v) for v in pc[t]) < max(abs(v) for v in mm[t])
    assert 0 < en[t][1] < mm[t][1]  # KL clips the long ReLU tail


def test_fp16_keeps_io_fp32_and_risky_nodes_with_reasons(tmp_path: Path, feeds) -> None:
    art = build_tiny_artifact(tmp_path / "big-fp32", big_activation=1.0e5)
    res = quantize_artifact(art, Fp16Config(), tmp_path / "big-fp16", CAL, FAST)
    m = onnx.load(str(res.folder / "model.onnx"))
    assert all(i.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16 for i in [*m.graph.input, *m.graph.output])
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer)
    kept = {k["node"]: " ".join(k["reasons"]) for k in res.report["kept_in_higher_precision"]}
    assert "data_max" in kept["ffn_big_Mul"] and "data_max" in kept["ffn_back_Div"]
    ref = run_model(make_session(onnx.load(str(art / "model.onnx"))), feeds)
    out = run_model(make_session(m, "cpu"), feeds)
    assert min(output_sqnr(ref, out).values()) > 40.0
    dtypes = {i.name: i.data_type for i in m.graph.initializer}
    assert dtypes["big"] == dtypes["big2"] == onnx.TensorProto.FLOAT  # kept nodes keep FP32 constants
    assert dtypes["fusion.0.attn.q.weight"] == onnx.TensorProto.FLOAT16


def test_budget_reverts_the_harmful_groups(tmp_path: Path) -> None:
    art = build_tiny_artifact(tmp_path / "outlier-fp32", outliers={"fusion.0.ffn.fc2": 1000.0, "fusion.0.attn.o": 1000.0})
    opts = QuantizeOptions(eval_samples=64, sensitivity_samples=6, budget_metric="vqa_agreement", max_drop=5.0)
    res = quantize_artifact(art, Int8OrtConfig(), tmp_path / "outlier-int8", CAL, opts)
    b = res.report["budget"]
    assert b["initial_drop"] > 5.0, "plain INT8 must miss the budget on this model"
    assert b["met"] and b["final_drop"] <= 5.0
    assert set(b["reverted"]) >= {"fusion.0.ffn.fc2"} and len(b["reverted"]) < res.report["groups"]["total"]
    assert res.sensitivity[0]["group"] in ("fusion.0.ffn.fc2", "fusion.0.attn.o")
    kept = {k["node"]: k["reasons"][0] for k in res.report["kept_in_higher_precision"]}
    assert "accuracy budget" in kept["fusion.0.ffn.fc2_MatMul"]
    assert res.report["metrics"]["simulated"]["drops"]["vqa_agreement"] == b["final_drop"]


def test_budget_works_for_fp16(tiny: Path, tmp_path: Path) -> None:
    opts = QuantizeOptions(eval_samples=32, sensitivity_samples=4, budget_metric="vqa_accuracy", max_drop=0.0)
    res = quantize_artifact(tiny, Fp16Config(), tmp_path / "f16", CAL, opts)
    b = res.report["budget"]
    assert b["met"] and b["final_drop"] <= 0.0 and b["steps"][0]["lowered_groups"] == len(res.report["groups"]["lowered"]) + len(b["reverted"])
    with pytest.raises(QuantizeError, match="not measurable"):
        quantize_artifact(tiny, Fp16Config(), tmp_path / "f16b", CAL,
                          QuantizeOptions(eval_samples=16, sensitivity=False, budget_metric="bleu4", max_drop=1.0))


def test_nncf_backend_produces_tensorrt_style_int8(tiny: Path, tmp_path: Path, feeds) -> None:
    res = quantize_artifact(tiny, Int8NncfConfig(), tmp_path / "nncf", CalibrationOptions(num_samples=12, cache_dir=None),
                            QuantizeOptions(eval_samples=0, sensitivity=False))
    m = onnx.load(str(res.folder / "model.onnx"))
    prod = _producers(m)
    quantized = {n.op_type for n in m.graph.node if any(prod.get(t) is not None and prod[t].op_type == "DequantizeLinear" for t in n.input)}
    assert quantized and quantized <= {"MatMul", "Gemm", "Conv"}
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    assert any(v.dtype == np.int8 and v.ndim == 2 for v in inits.values())  # weights stored as INT8
    ref = run_model(make_session(onnx.load(str(tiny / "model.onnx"))), feeds)
    assert min(output_sqnr(ref, run_model(make_session(m), feeds)).values()) > 20.0
    again = quantize_artifact(tiny, Int8NncfConfig(), tmp_path / "nncf2", CalibrationOptions(num_samples=12, cache_dir=None),
                              QuantizeOptions(eval_samples=0, sensitivity=False))
    assert (again.folder / "model.onnx").read_bytes() == (res.folder / "model.onnx").read_bytes()  # deterministic too


def test_bad_input_is_typed_and_leaves_nothing(tiny: Path, int8, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(QuantizeError) as e:
        quantize_artifact(int8.folder, Int8OrtConfig(), tmp_path / "again", CAL, FAST)
    assert e.value.code == "EF512"
    with pytest.raises(QuantizeError) as e:
        quantize_artifact(tmp_path / "nope", Int8OrtConfig(), tmp_path / "x", CAL, FAST)
    assert e.value.code == "EF511"
    with pytest.raises(ArtifactError):
        quantize_artifact(tiny, Int8OrtConfig(), int8.folder, CAL, QuantizeOptions(eval_samples=0, sensitivity=False))
    import edgefuse.quantize.api as api

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "atomic_write_json", boom)
    with pytest.raises(KeyboardInterrupt):
        quantize_artifact(tiny, Int8OrtConfig(), tmp_path / "cut", CAL, QuantizeOptions(eval_samples=0, sensitivity=False))
    assert not (tmp_path / "cut").exists() and not list(tmp_path.glob(".cut*"))


def test_cli_quantize_and_error_line(tiny: Path, int8, tmp_path: Path) -> None:
    out = tmp_path / "cli-int8"
    r = subprocess.run([sys.executable, "-m", "edgefuse", "quantize", str(tiny), "--precision", "int8", "--out", str(out),
                        "--num-samples", "12", "--eval-samples", "16", "--no-cache", "--budget-metric", "vqa_agreement",
                        "--max-drop", "50"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "groups lowered" in r.stdout and "budget vqa_agreement" in r.stdout and "next: edgefuse validate" in r.stdout
    assert json.loads((out / "manifest.json").read_text())["precision"] == "int8"
    r = subprocess.run([sys.executable, "-m", "edgefuse", "quantize", str(int8.folder), "-p", "fp16", "--out", str(tmp_path / "z")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().startswith("error EF512") and "Traceback" not in r.stderr


def test_default_model_int8_and_fp16_run_on_ort_cpu(fp32_artifact: Path, tmp_path: Path) -> None:
    """The real default model (engineer D's session export): both precisions run on ORT CPU,
    the drops are measured and reported, and the INT8 file is well under half the FP32 one."""
    cal = CalibrationOptions(num_samples=16, cache_dir=None)
    opts = QuantizeOptions(eval_samples=24, sensitivity=False)
    for cfg in (Int8OrtConfig(), Fp16Config()):
        res = quantize_artifact(fp32_artifact, cfg, tmp_path / cfg.precision, cal, opts)
        rep = res.report
        mode = "simulated" if cfg.precision == "int8" else "cpu"
        assert set(rep["metrics"][mode]["drops"]) >= {"vqa_accuracy", "vqa_agreement", "itm_accuracy", "grounding_miou"}
        assert min(rep["output_sqnr_db"].values()) > (20.0 if cfg.precision == "int8" else 40.0), rep["output_sqnr_db"]
        if cfg.precision == "int8":
            assert "cpu_kernels" in rep["metrics"]
            assert rep["size_bytes"]["quantized"] < 0.35 * rep["size_bytes"]["fp32"]
            assert any(k["reasons"][0].startswith("attention-score") for k in rep["kept_in_higher_precision"])
            ours = min(rep["output_sqnr_db"].values())
    # naive all-op INT8 (ORT quantize_static defaults) on the same model and data collapses
    from onnxruntime.quantization import QuantFormat, quantize_static

    from edgefuse.calibration import build_calibration
    from edgefuse.calibration.reader import FeedReader
    from edgefuse.data.preprocess import Preprocessor
    from edgefuse.data.tokenizer import Tokenizer

    pre = Preprocessor(None, Tokenizer.load(fp32_artifact / "tokenizer.json"))
    pairs = build_calibration("museum", 16, 0).pairs
    padded = [pre([p.image], [p.text], pad_to=32) for p in pairs]
    quantize_static(str(fp32_artifact / "model.onnx"), str(tmp_path / "naive.onnx"), FeedReader(padded), quant_format=QuantFormat.QDQ)
    fp32 = onnx.load(str(fp32_artifact / "model.onnx"))
    feeds = build_calibration("museum", 16, 0).feeds
    naive = min(output_sqnr(run_model(make_session(fp32), feeds), run_model(make_session(onnx.load(str(tmp_path / "naive.onnx"))), feeds)).values())
    assert naive < ours - 15.0, (naive, ours)


def test_caption_artifact_both_graphs_quantized(caption_artifact: Path, tmp_path: Path) -> None:
    """Captioning (image_encoder.onnx + KV-cache decoder.onnx): the decoder is calibrated on the
    steps of real FP32 generation; both graphs are lowered and generation still runs."""
    cal = CalibrationOptions(num_samples=16, cache_dir=None)
    opts = QuantizeOptions(eval_samples=16, sensitivity=False)
    res = quantize_artifact(caption_artifact, Int8OrtConfig(), tmp_path / "cap-int8", cal, opts)
    rep = res.report
    assert rep["calibration"]["feeds_per_graph"]["decoder.onnx"] > rep["calibration"]["feeds_per_graph"]["image_encoder.onnx"]
    assert any(g.startswith("decoder.onnx:") for g in rep["groups"]["lowered"])
    assert any(g.startswith("image_encoder.onnx:") for g in rep["groups"]["lowered"])
    assert set(rep["metrics"]["simulated"]["values"]) == {"caption_bleu4", "caption_agreement"}
    for f in ("image_encoder.onnx", "decoder.onnx"):
        m = onnx.load(str(res.folder / f))
        assert any(n.op_type == "DequantizeLinear" for n in m.graph.node)
    with pytest.raises(QuantizeError) as e:
        quantize_artifact(caption_artifact, Fp16Config(), tmp_path / "cap-b", cal,
                          QuantizeOptions(eval_samples=0, sensitivity=False, budget_metric="vqa_accuracy", max_drop=1.0))
    assert e.value.code == "EF540"


def test_kept_groups_are_lowered_only_when_measurement_says_so(tiny: Path, tmp_path: Path) -> None:
    res = quantize_artifact(tiny, Int8OrtConfig(promote_min_sqnr=-1000.0, exclude_nodes=["vqa_Gemm"]), tmp_path / "promo", CAL,
                            QuantizeOptions(eval_samples=0, sensitivity_samples=4))
    assert "fusion.0.attn#attention" in res.report["promoted"] and "heads.itm" in res.report["promoted"]
    assert "heads.vqa" not in res.report["promoted"]  # a user exclusion stays
    none = quantize_artifact(tiny, Int8OrtConfig(promote_min_sqnr=1000.0), tmp_path / "promo2", CAL,
                             QuantizeOptions(eval_samples=0, sensitivity_samples=4))
    assert none.report["promoted"] == []


def test_cpu_recipe_uses_per_tensor_weights(tiny: Path) -> None:
    from edgefuse.calibration import StatsCache, build_calibration
    from edgefuse.quantize.backends import Context, prepare_int8_ort

    ctx = Context(onnx.load(str(tiny / "model.onnx")), "x", build_calibration("museum", 8, 0), StatsCache(None))
    cpu = make_config("int8", "ort", "minmax", per_channel=False, reduce_range=True)
    plan = prepare_int8_ort(ctx, cpu)
    m = plan.build(plan.default)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    weights = [n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert weights and all(inits[n.input[1]].size == 1 for n in weights)
    assert all(np.abs(inits[n.input[0]]).max() <= 64 for n in weights)  # 7-bit weights

"""`edgefuse build --target desktop-rtx` on the zoo's exported artifacts (real TensorRT-RTX builds on the CPU).

Uses the export room's session fixtures (tests/conftest.py) and the quantize room's API for
FP16 / INT8 QDQ. What TensorRT-RTX refuses would fail these builds with EF820/EF825.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX not installed: pip install 'edgefuse[tensorrt-rtx]'")

from edgefuse.artifacts import read_manifest, sha256_file  # noqa: E402
from edgefuse.config import parse_config  # noqa: E402
from edgefuse.runtime.engines.build import build_engines  # noqa: E402
from edgefuse.runtime.engines.manifest import read_engine_manifest  # noqa: E402
from edgefuse.runtime.engines.runner import EngineRunner  # noqa: E402


def _quantized(fp32: Path, precision: str, out: Path, **cfg_overrides) -> Path:
    from edgefuse.quantize.api import CalibrationOptions, QuantizeOptions, quantize_artifact
    from edgefuse.quantize.configs import make_config

    res = quantize_artifact(fp32, make_config(precision, **cfg_overrides), out,
                            CalibrationOptions(num_samples=16, cache_dir=None),
                            QuantizeOptions(eval_samples=0, sensitivity=False, created_by="tests/test_engine_zoo.py"))
    return res.folder


def _check(res, artifact: Path, precision: str) -> None:
    m = res.manifest
    parent = read_manifest(artifact)
    assert m["precision"] == precision and m["model"] == parent["model"] and m["weights_sha256"] == parent["weights_sha256"]
    assert [o["name"] for o in m["outputs"]] == [o["name"] for o in parent["outputs"]]
    for e in m["engines"]:
        assert sha256_file(res.folder / e["file"]) == e["sha256"] and e["bytes"] > 100_000
    assert read_engine_manifest(res.folder)[1] == m
    assert not [w for w in res.warnings if "self-consistent" in w]
    # the kiosk needs the tokenizer and answers beside the engine
    assert (res.folder / "tokenizer.json").is_file()


@pytest.fixture(scope="module")
def cfg():
    return parse_config({})


def test_zoo_fp32_builds(fp32_artifact: Path, cfg, tmp_path: Path) -> None:
    res = build_engines(fp32_artifact, "desktop-rtx", cfg, out=tmp_path / "rtx")
    _check(res, fp32_artifact, "fp32")
    assert (res.folder / "answers.json").is_file()
    runner = EngineRunner(res.folder)
    assert runner.profile_shapes["input_ids"]["max"] == [8, 32]


def test_zoo_fp16_builds(fp32_artifact: Path, cfg, tmp_path: Path) -> None:
    fp16 = _quantized(fp32_artifact, "fp16", tmp_path / "fp16")
    res = build_engines(fp16, "desktop-rtx", cfg, out=tmp_path / "rtx")
    _check(res, fp16, "fp16")


@pytest.mark.slow
def test_zoo_int8_qdq_builds(fp32_artifact: Path, cfg, tmp_path: Path) -> None:
    int8 = _quantized(fp32_artifact, "int8", tmp_path / "int8")
    res = build_engines(int8, "desktop-rtx", cfg, out=tmp_path / "rtx")
    _check(res, int8, "int8")


def test_zoo_caption_builds_encoder_and_decoder_step(caption_artifact: Path, cfg, tmp_path: Path) -> None:
    res = build_engines(caption_artifact, "desktop-rtx", cfg, out=tmp_path / "rtx")
    _check(res, caption_artifact, "fp32")
    enc, dec = res.manifest["engines"]
    assert (enc["file"], dec["file"]) == ("image_encoder.engine", "decoder.engine")
    past = dec["profile_shapes"]["past_keys"]
    new = dec["profile_shapes"]["input_ids"]
    assert new["min"][1] == new["max"][1] == 1  # one token per generation step
    assert past["max"][3] + new["max"][1] <= read_manifest(caption_artifact)["dynamic_axes"]["total_length"]["max"]


@pytest.mark.slow
def test_zoo_split_build(fp32_artifact: Path, cfg, tmp_path: Path) -> None:
    res = build_engines(fp32_artifact, "desktop-rtx", cfg, out=tmp_path / "split", split=True)
    assert [e["name"] for e in res.manifest["engines"]] == ["vision", "text", "fusion"]
    fusion_out = {o["name"] for o in res.manifest["engines"][2]["outputs"]}
    assert fusion_out == {"vqa_logits", "itm_logits", "box", "grounding_attention"}


def test_doctor_eval_feeds_are_museum_questions_inside_the_profile(fp32_artifact: Path) -> None:
    from edgefuse.runtime.engines.doctor import eval_feeds
    from edgefuse.runtime.engines.profiles import check_in_profile

    profile = {"pixel_values": {"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [8, 3, 64, 64]},
               "input_ids": {"min": [1, 4], "opt": [1, 16], "max": [8, 32]},
               "attention_mask": {"min": [1, 4], "opt": [1, 16], "max": [8, 32]}}
    what, feeds = eval_feeds(fp32_artifact, read_manifest(fp32_artifact), 4, profile)
    assert what.startswith("museum test split") and len(feeds) == 4
    for feed in feeds:
        check_in_profile({k: v.shape for k, v in feed.items()}, profile)
        assert feed["attention_mask"].sum() >= 3  # [CLS] question [SEP]

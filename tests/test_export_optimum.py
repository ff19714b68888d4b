"""Hugging Face route through Optimum: a tiny random CLIP built locally (no hub downloads).

optimum-onnx pins transformers < 4.58 and downgrades tokenizers / huggingface_hub, which
clashes with the `[pretrained]` extra (sentence-transformers needs transformers >= 5), so it
lives in its own `[optimum]` extra, outside CI's install line: these tests skip without it.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from edgefuse.errors import ExportError
from edgefuse.export.exporter import export_model

HAS_OPTIMUM = importlib.util.find_spec("optimum") is not None and importlib.util.find_spec("optimum.exporters") is not None
needs_optimum = pytest.mark.skipif(not HAS_OPTIMUM, reason="optimum-onnx not installed (pip install 'edgefuse[optimum]')")


@pytest.fixture()
def tiny_clip(tmp_path):
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config={"vocab_size": 99, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 24, "bos_token_id": 0, "eos_token_id": 2,
                     "pad_token_id": 1},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
                       "num_hidden_layers": 2, "num_attention_heads": 4},
        projection_dim=16,
    )
    folder = tmp_path / "tiny-clip"
    transformers.CLIPModel(config).eval().save_pretrained(folder)
    return folder


@needs_optimum
def test_tiny_clip_exports_via_optimum_and_verifies(tiny_clip, tmp_path):
    import torch

    torch.set_num_threads(1)
    res = export_model(f"hf:{tiny_clip}", tmp_path / "clip-fp32")
    m = json.loads((res.folder / "manifest.json").read_text())
    assert m["exporter"] == "optimum" and m["family"] == "hf-clip" and m["precision"] == "fp32"
    ver = m["verification"]["model.onnx"]
    assert ver["passed"] and len(ver["cases"]) == 3
    names = {o["name"] for o in m["outputs"]}
    assert {"logits_per_image", "text_embeds", "image_embeds"} <= names
    for s in ver["outputs"].values():
        assert s["max_abs"] < 1e-3 and s["min_cosine"] > 0.9999


@needs_optimum
def test_model_type_without_optimum_config_points_to_factories(tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "museum-fusion-nonexistent"}))
    with pytest.raises(ExportError) as ei:
        export_model(f"hf:{folder}", tmp_path / "out")
    assert ei.value.code == "EF442" and "package.module:factory" in ei.value.hint
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(HAS_OPTIMUM, reason="checks the message shown when optimum is missing")
def test_hf_route_without_optimum_says_how_to_install(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(ExportError) as ei:
        export_model(f"hf:{folder}", tmp_path / "out")
    assert ei.value.code == "EF441" and "edgefuse[optimum]" in ei.value.hint


def test_hf_ref_to_a_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ExportError) as ei:
        export_model(f"hf:{tmp_path / 'missing'}", tmp_path / "out")
    assert ei.value.code == "EF440" and "no config.json" in ei.value.message

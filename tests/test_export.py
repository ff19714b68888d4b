"""Every zoo family exports and verifies; artifact contract; graph hygiene; captioning; CLI.

Exports are shared per session through tests/conftest.py (museum-dual, museum-caption).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgefuse.artifacts import sha256_file
from edgefuse.export.families import registered_families
from edgefuse.models import zoo

ROOT = Path(__file__).resolve().parents[1]

# family -> the zoo model its export test uses; a registered family missing here fails the suite
FAMILY_TESTS = {"dual-stream": "museum-dual", "single-stream": "museum-single", "gated": "museum-gated",
                "caption": "museum-caption"}
SHARED = {"museum-dual": "fp32_export", "museum-caption": "caption_export"}


def test_every_registered_family_has_an_export_test():
    assert set(registered_families()) == set(FAMILY_TESTS), "add the new family to FAMILY_TESTS"


def test_every_zoo_model_has_a_registered_family():
    for name in zoo.list_models():
        assert zoo.get_entry(name).family in registered_families(), name


@pytest.mark.parametrize("family", [pytest.param(f, marks=[] if FAMILY_TESTS[f] in SHARED else [pytest.mark.slow])
                                    for f in sorted(FAMILY_TESTS)])
def test_family_exports_and_verifies(family, request, tmp_path):
    model = FAMILY_TESTS[family]
    if model in SHARED:
        res = request.getfixturevalue(SHARED[model])
    else:
        import torch

        from edgefuse.export.exporter import export_model

        torch.set_num_threads(1)
        # --weights FILE: other weights than the shipped ones (seed 1), recorded by sha256
        weights = zoo.save_weights(zoo.build_model(model, seed=1), tmp_path / "w" / "model.safetensors")
        res = export_model(model, tmp_path / f"{model}-fp32", weights=weights)
        assert res.manifest["weights_sha256"] == sha256_file(weights)
        assert res.manifest["weights_source"] == str(weights)
    m = res.manifest
    assert m["family"] == family and m["precision"] == "fp32" and m["kind"] == "onnx"
    ver = m["verification"]
    graphs = [g for g in ver if g.endswith(".onnx")]
    assert graphs and all(ver[g]["passed"] for g in graphs)
    # measured, not assumed: every output was compared on several shapes
    for g in graphs:
        for name, s in ver[g]["outputs"].items():
            assert s["max_abs"] < 1e-3 and s["min_cosine"] > 0.9999, (g, name, s)
            if s["min_agreement"] is not None:
                assert s["min_agreement"] == 1.0
            if s["min_iou"] is not None:
                assert s["min_iou"] >= 0.99
    if family == "caption":
        agree = ver["captions"]["agreement"]
        assert agree["greedy"] == 1.0  # fatal in export; beam search is measured (ties may reorder beams)
        assert agree["beam3"] >= 0.8
        assert set(res.files) == {"decoder.onnx", "image_encoder.onnx", "tokenizer.json"}
    else:
        cases = ver["model.onnx"]["cases"]
        assert any(c.startswith("museum") for c in cases)  # real museum images, not only random tensors
        batches = {int(c.split("batch=")[1].split()[0]) for c in cases}
        assert {1, 3, 8} <= batches
        assert "answers.json" in res.files


def test_manifest_contract(fp32_export):
    folder, m = fp32_export.folder, fp32_export.manifest
    on_disk = json.loads((folder / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(m, default=str))
    for key in ("kind", "model", "family", "tasks", "precision", "weights_sha256", "files", "opset", "inputs", "outputs",
                "image_size", "max_text_length", "tool_versions", "parent", "created_by"):
        assert key in m, key
    assert m["model"] == "museum-dual" and m["tasks"] == ["vqa", "itm", "grounding"] and m["parent"] is None
    assert set(m["files"]) == {"model.onnx", "tokenizer.json", "answers.json"}
    for name, digest in m["files"].items():
        assert sha256_file(folder / name) == digest
    assert len(m["weights_sha256"]) == 64
    assert m["inputs"][1] == {"name": "input_ids", "dtype": "int64", "shape": ["batch", "text_length"]}
    assert [o["name"] for o in m["outputs"]] == ["vqa_logits", "itm_logits", "box", "grounding_attention"]
    assert m["image_size"] == 64 and m["opset"] >= 17
    assert {"torch", "onnx", "onnxruntime"} <= set(m["tool_versions"])
    answers = json.loads((folder / "answers.json").read_text())
    assert len(answers) == m["outputs"][0]["shape"][1]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_graph_is_clean(fp32_export):
    import onnx

    from edgefuse.export.inspect import constant_shape_values, graph_summary

    path = fp32_export.folder / "model.onnx"
    g = graph_summary(path)
    n_layernorm = sum(1 for mod in zoo.build_model("museum-dual").modules() if type(mod).__name__ == "LayerNorm")
    assert g["opset"] >= 17
    assert g["layer_norm_nodes"] == n_layernorm > 0  # one LayerNormalization node per nn.LayerNorm
    assert not g["decomposed_layer_norm"]
    assert g["op_histogram"].get("Softmax", 0) > 0 and g["op_histogram"].get("MatMul", 0) > 0
    assert not {"If", "Loop", "Scan"} & set(g["op_histogram"])  # no control flow left in the graph
    # no dead nodes: every node output is used by another node or is a graph output
    model = onnx.load(str(path))
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}  # standard ONNX ops only (ORT and TensorRT)
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    assert all(any(o in used for o in n.output) for n in model.graph.node)
    # no shape constant holds the traced text length (what the legacy exporter bakes)
    trace_len = fp32_export.manifest["export_specs"]["model.onnx"]["trace_shape"]["text_length"]
    assert all(trace_len not in values for _, values in constant_shape_values(path))
    for t in g["inputs"]:
        assert t["shape"][0] == "batch"


def test_artifact_runs_in_the_torch_free_runtime(fp32_artifact):
    from edgefuse.runtime.runners import open_runner

    rng = np.random.default_rng(5)
    feed = {"pixel_values": rng.uniform(-1, 1, (5, 3, 64, 64)).astype(np.float32),
            "input_ids": rng.integers(5, 100, (5, 9)).astype(np.int64), "attention_mask": np.ones((5, 9), np.int64)}
    with open_runner(fp32_artifact, threads=1) as r:
        out = r.infer(feed)
    assert out["vqa_logits"].shape[0] == 5 and np.allclose(out["grounding_attention"].sum(1), 1.0, atol=1e-4)


def test_caption_generation_in_ort_matches_pytorch(caption_export):
    """The torch-free loop over the artifact's two sessions gives PyTorch's greedy captions."""
    import torch

    from edgefuse.data.museum import generate
    from edgefuse.data.preprocess import preprocess_images
    from edgefuse.data.tokenizer import Tokenizer
    from edgefuse.export.generation import CaptionGenerator, GenerationConfig, strip_special
    from edgefuse.export.verify import ort_session

    folder, m = caption_export.folder, caption_export.manifest
    model = zoo.load_model("museum-caption", pretrained=not m["weights_source"].startswith("random-init"))
    pixels = preprocess_images([it.image for it in generate("test", n=5)], m["image_size"])
    gen = CaptionGenerator(ort_session(folder / "image_encoder.onnx"), ort_session(folder / "decoder.onnx"),
                           GenerationConfig.from_dict(m["generation"]))
    got = gen.generate(pixels)
    with torch.inference_mode():
        ref = model.generate(torch.from_numpy(pixels)).numpy()
    assert np.array_equal(got, ref)
    tok = Tokenizer.load(folder / "tokenizer.json")
    texts = [tok.decode(ids) for ids in strip_special(got, gen.config)]
    assert len(texts) == 5
    from edgefuse.export.inspect import graph_summary

    g = graph_summary(folder / "decoder.onnx")
    past = next(t for t in g["inputs"] if t["name"] == "past_keys")
    assert past["shape"][1] == "batch" and past["shape"][3] == "past_length"  # dynamic KV cache in the graph itself
    assert g["layer_norm_nodes"] == 3 * m["generation"]["num_layers"] + 1
    dec = m["components"]["decoder.onnx"]["inputs"]
    assert [t["name"] for t in dec] == ["input_ids", "image_tokens", "past_keys", "past_values"]
    assert dec[2]["shape"][3] == "past_length"


def test_generation_module_does_not_import_torch():
    code = "import sys, edgefuse.export.generation; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def _cli(args, capsys):
    from edgefuse.cli import main

    with pytest.raises(SystemExit) as ei:
        main(args)
    cap = capsys.readouterr()
    return ei.value.code, cap.out, cap.err


def test_cli_refuses_existing_and_unwritable_output(fp32_artifact, tmp_path, capsys):
    rc, _, err = _cli(["export", "museum-dual", "--out", str(fp32_artifact)], capsys)
    assert rc == 2 and "already exists" in err and "--overwrite" in err and "Traceback" not in err
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rc, _, err = _cli(["export", "museum-dual", "--out", str(blocker / "sub" / "out")], capsys)
    assert rc == 2 and "cannot write" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _cli(["export", "museum-duel"], capsys)
    assert rc == 2 and "did you mean 'museum-dual'" in err


def test_cli_inspect(fp32_artifact, capsys):
    rc, out, _ = _cli(["inspect", str(fp32_artifact), "--json"], capsys)
    assert rc == 0
    info = json.loads(out)
    g = info["graphs"]["model.onnx"]
    assert g["parameters"] > 100_000 and g["op_histogram"]["LayerNormalization"] == g["layer_norm_nodes"]
    assert g["suspect_baked_shapes"] == []
    assert info["manifest"]["model"] == "museum-dual"
    rc, out, _ = _cli(["inspect", str(fp32_artifact)], capsys)
    assert rc == 0 and "op histogram" in out and "[batch, text_length]" in out
    rc, out, _ = _cli(["inspect", str(fp32_artifact / "model.onnx"), "--json"], capsys)  # one file: manifest beside it
    assert rc == 0 and json.loads(out)["manifest"]["model"] == "museum-dual"
    rc, _, err = _cli(["inspect", str(fp32_artifact / "nope")], capsys)
    assert rc == 2 and "does not exist" in err


def test_caption_mismatch_is_fatal(caption_export):
    """ORT captions from the artifact against a PyTorch model with other weights: EF415, naming the image."""
    from edgefuse.data.museum import generate
    from edgefuse.data.preprocess import preprocess_images
    from edgefuse.errors import VerificationError
    from edgefuse.export.caption import verify_generation
    from edgefuse.export.generation import GenerationConfig

    other = zoo.build_model("museum-caption", seed=7)
    pixels = preprocess_images([it.image for it in generate("test", n=3)], caption_export.manifest["image_size"])
    with pytest.raises(VerificationError) as ei:
        verify_generation(other, caption_export.folder, GenerationConfig.from_dict(caption_export.manifest["generation"]),
                          pixels, num_beams=1)
    assert ei.value.code == "EF415" and "output 'caption' (greedy)" in ei.value.message

"""Model zoo: layer math, padding invariance, every zoo model's outputs, weights I/O, decoding."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from edgefuse.errors import ModelError, WeightsError  # noqa: E402
from edgefuse.models import zoo  # noqa: E402
from edgefuse.models.layers import MASK_BIAS, CrossAttention, FusionLayer, GatedFusion  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def models() -> dict[str, torch.nn.Module]:
    return {name: zoo.build_model(name) for name in zoo.list_models()}


def _inputs(batch: int, length: int, seed: int = 0, vocab: int = 100) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(batch, 3, 64, 64, generator=g) * 2 - 1
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    ids[:, 0] = 2
    mask = torch.ones(batch, length, dtype=torch.long)
    return pixels, ids, mask


# --- layer math -----------------------------------------------------------------------------
def test_cross_attention_matches_hand_computation():
    torch.manual_seed(0)
    attn = CrossAttention(16, 4).eval()
    q_in, kv_in = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    out, weights = attn(q_in, kv_in, mask)
    q, k, v = attn.q(q_in), attn.k(kv_in), attn.v(kv_in)
    expected = torch.zeros(2, 3, 16)
    for b in range(2):
        keep = mask[b].bool()
        for h in range(4):
            sl = slice(4 * h, 4 * h + 4)
            s = q[b, :, sl] @ k[b, keep, sl].T / math.sqrt(4)
            w = torch.softmax(s, dim=-1)
            expected[b, :, sl] = w @ v[b, keep, sl]
            assert torch.allclose(weights[b, h][:, keep], w, atol=1e-6)
    expected = attn.o(expected)
    assert torch.allclose(out, expected, atol=1e-5)
    assert weights.shape == (2, 4, 3, 5)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 3), atol=1e-6)
    assert weights[1, :, :, 3:].abs().max().item() < 1e-6
    assert torch.isfinite(weights).all()


def test_mask_bias_is_finite():
    assert math.isfinite(MASK_BIAS) and MASK_BIAS <= -1e4 + 1


def test_gated_fusion_matches_formula():
    torch.manual_seed(0)
    gate = GatedFusion(8)
    v, t = torch.randn(3, 8), torch.randn(3, 8)
    m, alpha = gate(v, t)
    expected_alpha = torch.sigmoid(torch.cat([v, t], -1) @ gate.gate.weight.T + gate.gate.bias)
    assert torch.allclose(alpha, expected_alpha, atol=1e-6)
    assert torch.allclose(m, expected_alpha * v + (1 - expected_alpha) * t, atol=1e-6)


def test_fusion_layer_returns_both_streams_and_maps():
    torch.manual_seed(0)
    layer = FusionLayer(16, 4, 32).eval()
    t, v = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    t2, v2, t2v, v2t = layer(t, v, torch.ones(2, 5, dtype=torch.long))
    assert t2.shape == t.shape and v2.shape == v.shape
    assert t2v.shape == (2, 4, 5, 7) and v2t.shape == (2, 4, 7, 5)


# --- zoo models -------------------------------------------------------------------------------
def test_zoo_names_and_errors():
    assert zoo.list_models() == ["museum-dual", "museum-single", "museum-gated", "museum-caption"]
    with pytest.raises(ModelError) as e:
        zoo.get_entry("museum-dul")
    assert "museum-dual" in e.value.line() and e.value.code == "EF306"
    with pytest.raises(ModelError):
        zoo.get_entry("museum-dual", no_such_key=1)


@pytest.mark.parametrize("name", ["museum-dual", "museum-single", "museum-gated"])
def test_fusion_models_outputs(models, name):
    model, entry = models[name], zoo.get_entry(name)
    params = zoo.count_parameters(model)
    assert params <= 8_000_000 and params * 4 <= 32 * 2**20
    for batch, length in ((1, 7), (3, 12)):
        pixels, ids, mask = _inputs(batch, length)
        with torch.no_grad():
            out = model(pixels, ids, mask)
        assert tuple(out) == entry.output_names
        spec = {s["name"]: s["shape"] for s in entry.graph_specs()["model"]["outputs"]}
        for k, v in out.items():
            assert v.dtype == torch.float32
            assert list(v.shape) == [batch if d == "batch" else d for d in spec[k]]
            assert torch.isfinite(v).all()
        if "box" in out:
            assert ((out["box"] >= 0) & (out["box"] <= 1)).all()
            assert torch.allclose(out["grounding_attention"].sum(-1), torch.ones(batch), atol=1e-5)
        feats = model.forward_features(pixels, ids, mask)
        assert feats["text_tokens"].shape[:2] == (batch, length)
        assert feats["cls"].shape == (batch, entry.config["dim"])


@pytest.mark.parametrize("name", ["museum-dual", "museum-single", "museum-gated", "museum-caption"])
def test_padding_does_not_change_outputs(models, name):
    model = models[name]
    pixels, ids, mask = _inputs(2, 6, seed=1)
    padded = torch.cat([ids, torch.zeros(2, 5, dtype=torch.long)], 1)
    padded_mask = torch.cat([mask, torch.zeros(2, 5, dtype=torch.long)], 1)
    with torch.no_grad():
        a = model(pixels, ids, mask)
        b = model(pixels, padded, padded_mask)
    for k in a:
        ref = a[k] if k != "caption_logits" else a[k]
        got = b[k] if k != "caption_logits" else b[k][:, :6]
        assert (ref - got).abs().max().item() < 1e-5, k


def test_caption_outputs_and_kv_cache_equals_teacher_forcing(models):
    model = models["museum-caption"]
    pixels, ids, mask = _inputs(2, 9, seed=2)
    with torch.no_grad():
        full = model(pixels, ids, mask)["caption_logits"]
        assert full.shape == (2, 9, model.config["vocab_size"])
        image = model.encode_image(pixels)
        pk, pv = model.empty_cache(2, image)
        steps = []
        for chunk in (ids[:, :1], ids[:, 1:4], ids[:, 4:5], ids[:, 5:]):  # one token and several at a time
            logits, pk, pv = model.decode_step(chunk, image, pk, pv)
            steps.append(logits)
    cached = torch.cat(steps, 1)
    assert pk.shape == (model.num_layers, 2, model.num_heads, 9, model.head_dim)
    assert (cached - full).abs().max().item() < 1e-5


def test_beam_one_equals_greedy_and_beams_score_at_least_greedy(models):
    model = models["museum-caption"]
    pixels, _, _ = _inputs(3, 2, seed=3)
    greedy = model.generate(pixels, max_length=10)
    beam1 = model.generate(pixels, max_length=10, num_beams=1)
    assert torch.equal(greedy, model._beam(model.encode_image(pixels), 10, 1, 1.0))
    assert torch.equal(greedy, beam1)
    beam3 = model.generate(pixels, max_length=10, num_beams=3)
    assert beam3.shape[0] == 3 and (beam3[:, 0] == model.bos_id).all()
    assert greedy.shape[1] <= 10 and beam3.shape[1] <= 10


# --- weights ----------------------------------------------------------------------------------
def test_save_load_round_trip(models, tmp_path: Path):
    model = models["museum-single"]
    path = zoo.save_weights(model, tmp_path / "model.safetensors")
    loaded = zoo.load_model("museum-single", weights=path)
    pixels, ids, mask = _inputs(2, 5)
    with torch.no_grad():
        assert torch.equal(model(pixels, ids, mask)["vqa_logits"], loaded(pixels, ids, mask)["vqa_logits"])
    assert not loaded.training


def test_bad_weights_errors(models, tmp_path: Path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(WeightsError) as e:
        zoo.load_model("museum-single", weights=missing)
    assert str(missing) in e.value.message and e.value.code == "EF311"
    pickled = tmp_path / "model.pt"
    torch.save(models["museum-single"].state_dict(), pickled)
    with pytest.raises(WeightsError) as e:
        zoo.load_model("museum-single", weights=pickled)
    assert e.value.code == "EF312"
    renamed = tmp_path / "pickle.safetensors"
    renamed.write_bytes(pickled.read_bytes())
    with pytest.raises(WeightsError) as e:
        zoo.load_model("museum-single", weights=renamed)
    assert e.value.code == "EF312"
    good = zoo.save_weights(models["museum-single"], tmp_path / "good.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsError) as e:
        zoo.load_model("museum-single", weights=corrupt)
    assert str(corrupt) in e.value.message and e.value.code == "EF313"
    other = zoo.save_weights(models["museum-gated"], tmp_path / "other.safetensors")
    with pytest.raises(WeightsError) as e:
        zoo.load_model("museum-single", weights=other)
    assert e.value.code in ("EF314", "EF315")
    wider = zoo.save_weights(zoo.build_model("museum-single", num_answers=7), tmp_path / "wider.safetensors")
    with pytest.raises(WeightsError) as e:
        zoo.load_model("museum-single", weights=wider)
    assert e.value.code == "EF316" and "heads.vqa" in e.value.message


def test_seeded_build_is_deterministic():
    a, b = zoo.build_model("museum-gated", seed=3), zoo.build_model("museum-gated", seed=3)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k


def test_too_long_text_is_a_typed_error(models):
    pixels, ids, mask = _inputs(1, 33)
    with pytest.raises(ModelError) as e:
        models["museum-dual"](pixels, ids, mask)
    assert e.value.code == "EF307" and "33" in e.value.message
    with pytest.raises(ModelError):
        models["museum-caption"](pixels, ids, mask)


def test_grounding_attention_is_last_layer_cls_to_patch_attention(models):
    model = models["museum-dual"]
    pixels, ids, mask = _inputs(2, 6, seed=4)
    with torch.no_grad():
        feats = model.forward_features(pixels, ids, mask)
        out = model(pixels, ids, mask)
        # recompute the last layer's text->image attention by hand from its inputs
        image = model.image_encoder(pixels)
        text = model.text_encoder(ids, mask)
        for layer in model.fusion[:-1]:
            text, image, _, _ = layer(text, image, mask)
        last = model.fusion[-1]
        t, _ = last.text_self(text, text, mask)
        t = last.text_norms[0](text + t)
        v, _ = last.image_self(image, image)
        v = last.image_norms[0](image + v)
        _, w = last.text_cross(t, v)
    expected = w[:, :, 0, 1:].mean(1)
    expected = expected / expected.sum(-1, keepdim=True)
    assert torch.allclose(feats["text_to_image_attention"], w, atol=1e-6)
    assert torch.allclose(out["grounding_attention"], expected, atol=1e-6)


def test_config_json_beside_weights_sets_the_architecture(tmp_path: Path):
    import json

    small = zoo.build_model("museum-single", layers=1, dim=64, ffn_dim=128)
    zoo.save_weights(small, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in small.config.items() if k != "tasks"}))
    loaded = zoo.load_model("museum-single", weights=tmp_path / "model.safetensors")
    assert loaded.config["layers"] == 1 and loaded.config["dim"] == 64
    assert zoo.count_parameters(loaded) == zoo.count_parameters(small)


def test_models_command_lists_the_zoo():
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "edgefuse", "models", "--json"], cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["name"] for row in rows] == zoo.list_models()
    for row in rows:
        assert 0 < row["parameters"] <= 8_000_000 and row["size_mb"] <= 32
        assert row["weights"] in ("shipped", "missing") or row["weights"].startswith("invalid")
    bad = subprocess.run([sys.executable, "-m", "edgefuse", "models", "museum-dul"], cwd=root, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "museum-dual" in bad.stderr


def test_pooled_gate_level_runs_and_ignores_padding():
    model = zoo.build_model("museum-gated", gate_level="pooled")
    pixels, ids, mask = _inputs(2, 5, seed=5)
    padded = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], 1)
    padded_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.long)], 1)
    with torch.no_grad():
        a = model(pixels, ids, mask)["vqa_logits"]
        b = model(pixels, padded, padded_mask)["vqa_logits"]
    assert (a - b).abs().max().item() < 1e-5
    with pytest.raises(ModelError):
        zoo.build_model("museum-gated", gate_level="pooling")


@pytest.mark.parametrize("name", ["museum-dual", "museum-single", "museum-gated", "museum-caption"])
def test_shipped_weights_load(name):
    if zoo.weights_status(name) == "missing":
        pytest.skip(f"no shipped weights for {name} yet")
    model = zoo.load_model(name)
    assert not model.training
    pixels, ids, mask = _inputs(1, 6)
    with torch.no_grad():
        out = model(pixels, ids, mask)
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("name", ["museum-dual", "museum-single", "museum-gated"])
def test_fp16_forward_is_finite_and_close(name):
    """Finite mask bias and LayerNorm eps keep the models FP16-safe (the FP16 artifacts rely on it)."""
    model = zoo.build_model(name)
    pixels, ids, mask = _inputs(3, 12, seed=6)
    mask[2, 5:] = 0
    with torch.no_grad():
        ref = model(pixels, ids, mask)
        half = model.half()(pixels.half(), ids, mask)
    for k, v in half.items():
        assert torch.isfinite(v).all(), k
        scale = ref[k].abs().max().item() + 1e-3
        assert (v.float() - ref[k]).abs().max().item() / scale < 2e-2, k
